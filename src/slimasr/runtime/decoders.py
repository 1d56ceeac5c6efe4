"""CTC decoders over numpy log-probabilities: greedy (with timestamps) and prefix beam search with an optional
KenLM word n-gram (pyctcdecode). Torch-free.

Both take ``log_probs`` of shape (T, V) for one utterance (token ids: 0 = blank; ``<sos/eos>`` wherever the symbol
table names it, V - 1 in slimasr's own models, elsewhere or nowhere in imported ones, see :mod:`slimasr.tokenizer`)
and return a :class:`Hypothesis`. Times are in seconds: encoder frame ``t`` starts at
``t * frame_seconds`` (40 ms for 10 ms fbank frames and 4x subsampling).

How our SentencePiece vocabulary maps onto pyctcdecode's labels (checked against pyctcdecode's
``alphabet.py``): label 0 is ``""`` (pyctcdecode's blank), labels 1..N are the pieces themselves, so pieces
starting with ``▁`` open a new word (pyctcdecode detects the BPE style from the ``▁`` prefix) and the others
continue the current word. Two pieces need care: ``<unk>`` becomes ``▁⁇`` (an unknown word; pyctcdecode's
own ``▁⁇▁`` would force a word break after it), and a lone ``▁`` piece is passed so that pyctcdecode does not
read it as such a trailing break (see :class:`_WordStart`: otherwise it splits words of *other* beams). The
``<sos/eos>`` column, which CTC never needs, is dropped before the search (pyctcdecode renormalises the rest).

The search loop itself is :class:`_PrefixBeamSearch`, a faster re-implementation of pyctcdecode's with identical
results (pyctcdecode still builds the alphabet and scores words with its ``LanguageModel``).
"""
from __future__ import annotations

import heapq
import logging
import math
import os
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from ..tokenizer import SOS_EOS

__all__ = ["BeamSearchDecoder", "DecodingConfig", "Decoder", "GreedyDecoder", "Hypothesis", "IncrementalHypothesis",
           "METHODS", "Vocabulary", "ctc_greedy", "make_decoder"]

log = logging.getLogger(__name__)

WORD_BOUNDARY = "\u2581"  # ▁
FRAME_SECONDS = 0.04      # 4x subsampling of 10 ms frames


METHODS = ("greedy", "beam")      # DecodingConfig.method


@dataclass(frozen=True)
class DecodingConfig:
    """How CTC log-probabilities become text.

    The paper decodes with beam 100 and LM weight 0.6 (``DecodingConfig.paper(lm)``); the default is greedy.
    The command-line options of ``slimasr decode``, ``transcribe`` and ``bench`` are built from these fields
    (:func:`slimasr.cli.options.decoding_options`).

    Attributes:
        method: CTC search: greedy (best path), or prefix beam search (pyctcdecode; with an LM: shallow fusion
            of a KenLM n-gram).
        beam_size: Beams kept per frame (beam search).
        lm: KenLM model (.arpa or .bin, from `slimasr lm build`) for beam search; none: no LM.
        lm_weight: Weight of the LM log-probability, natural log (pyctcdecode's alpha).
        word_score: Score added per word, the word-insertion bonus (pyctcdecode's beta; the paper gives none).
        beam_prune_logp: Drop beams this far (log) below the best (-8: 1.2x faster search, WER +0.12 on synth8
            test (440 utts), -0.26 on dev; -6: +0.46, 1.7x faster).
        token_min_logp: Ignore tokens below this log-probability unless they are the frame's best.
        unk_score_offset: LM penalty for words outside the LM's vocabulary.
    """

    method: str = "greedy"
    beam_size: int = 100
    lm: str | None = None
    lm_weight: float = 0.6
    word_score: float = 0.0
    beam_prune_logp: float = -10.0
    token_min_logp: float = -5.0
    unk_score_offset: float = -10.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.lm is not None and self.method != "beam":
            raise ValueError("an LM is only used by beam search: set method='beam'")

    def summary(self) -> str:
        """For a result line: ``greedy``, ``beam 100`` or ``beam 100 + LM exp/lm.bin (weight 0.6[, word score
        1.0])``."""
        if self.method == "greedy":
            return "greedy"
        if self.lm is None:
            return f"beam {self.beam_size}"
        extra = f", word score {self.word_score:g}" if self.word_score else ""
        return f"beam {self.beam_size} + LM {self.lm} (weight {self.lm_weight:g}{extra})"

    @classmethod
    def paper(cls, lm: str | os.PathLike | None) -> "DecodingConfig":
        """Beam search with beam 100 and a 4-gram LM at weight 0.6 (the paper's decoding)."""
        return cls(method="beam", beam_size=100, lm=None if lm is None else str(lm), lm_weight=0.6)


@dataclass(frozen=True)
class Hypothesis:
    """A decoded utterance (or the part of it decoded so far)."""

    text: str
    tokens: tuple[int, ...] = ()            # token ids (1 .. V-2)
    timestamps: tuple[float, ...] = ()      # start time (s) of each token
    words: tuple[tuple[str, float, float], ...] = ()  # (word, start s, end s)
    score: float | None = None              # total log score (beam search; acoustic + LM)


class Vocabulary:
    """Token id -> piece, and pieces -> text. Uses the SentencePiece model when there is one, else the symbols.

    Args:
        symbols: the piece of every id (``tokens.txt`` order: ``<blank>`` first; ``<sos/eos>`` last in slimasr's
            own models, at the source's position or absent in imported ones).
        tokenizer: an optional :class:`slimasr.tokenizer.Tokenizer` with the same ids.
    """

    def __init__(self, symbols: Sequence[str], tokenizer=None) -> None:
        self.symbols = list(symbols)
        self.tokenizer = tokenizer
        # the id CTC never emits as text (dropped like blank), found by its symbol; None when there is none
        self.sos_eos = self.symbols.index(SOS_EOS) if SOS_EOS in self.symbols else None
        if tokenizer is not None and tokenizer.vocab_size != len(self.symbols):
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the symbol table {len(self.symbols)}")

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "Vocabulary":
        return cls(tokenizer.pieces(), tokenizer)

    @classmethod
    def from_tokens_txt(cls, path: str | os.PathLike, tokenizer=None) -> "Vocabulary":
        """Read sherpa-onnx's ``tokens.txt`` (``symbol id`` per line)."""
        entries = {}
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{n}: expected 'symbol id', got {line!r}")
            entries[int(parts[1])] = parts[0]
        if sorted(entries) != list(range(len(entries))):
            raise ValueError(f"{path}: token ids are not 0..{len(entries) - 1}")
        return cls([entries[i] for i in range(len(entries))], tokenizer)

    def __len__(self) -> int:
        return len(self.symbols)

    def text(self, ids: Sequence[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        s = "".join(self.symbols[i] for i in ids if i != 0 and i != self.sos_eos)
        return " ".join(s.replace(WORD_BOUNDARY, " ").split())

    def words(self, ids: Sequence[int], times: Sequence[float], frame_seconds: float) -> tuple:
        """Group tokens into words at ``▁``: ((word, start, end), ...); end = last token's frame end."""
        out: list[tuple[str, float, float]] = []
        cur: list[int] = []
        cur_t: list[float] = []

        def flush() -> None:
            w = self.text(cur)
            if w:
                out.append((w, cur_t[0], cur_t[-1] + frame_seconds))

        for i, t in zip(ids, times):
            if self.symbols[i].startswith(WORD_BOUNDARY) and cur:
                flush()
                cur, cur_t = [], []
            cur.append(int(i))
            cur_t.append(float(t))
        if cur:
            flush()
        return tuple(out)


@runtime_checkable
class Decoder(Protocol):
    """Turns one utterance's (T, V) CTC log-probabilities into a :class:`Hypothesis`."""

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0) -> Hypothesis:
        """``frame_offset``: encoder frames before ``log_probs[0]`` (for absolute timestamps)."""
        ...


def _check_log_probs(log_probs: np.ndarray, vocab_size: int) -> np.ndarray:
    lp = np.asarray(log_probs)
    if lp.ndim != 2 or lp.shape[1] != vocab_size:
        raise ValueError(f"log_probs must be (frames, {vocab_size}), got shape {lp.shape}")
    return lp


def ctc_greedy(log_probs: np.ndarray, prev: int = 0, blank: int = 0) -> tuple[list[int], list[int], int]:
    """Best path: argmax per frame, repeats merged, blanks removed.

    Args:
        log_probs: (T, V).
        prev: the argmax of the frame before ``log_probs[0]`` (streaming: carried across chunks, as
            sherpa-onnx does, so a token spanning a chunk boundary is emitted once).
    Returns:
        (tokens, frame indices of their first frame, the last frame's argmax).
    """
    best = np.asarray(log_probs).argmax(axis=-1)
    if best.size == 0:
        return [], [], prev
    before = np.concatenate(([prev], best[:-1]))
    keep = (best != blank) & (best != before)
    frames = np.flatnonzero(keep)
    return best[frames].tolist(), frames.tolist(), int(best[-1])


class GreedyDecoder:
    """Greedy CTC decoding; ``<sos/eos>`` (never a CTC target) is dropped like blank."""

    def __init__(self, vocab: Vocabulary, frame_seconds: float = FRAME_SECONDS) -> None:
        self.vocab = vocab
        self.frame_seconds = frame_seconds

    def hypothesis(self, tokens: Sequence[int], frames: Sequence[int]) -> Hypothesis:
        """Build a hypothesis from already-collapsed tokens and their (absolute) frame indices."""
        pairs = [(t, f) for t, f in zip(tokens, frames) if t != self.vocab.sos_eos]
        ids = tuple(int(t) for t, _ in pairs)
        times = tuple(round(f * self.frame_seconds, 6) for _, f in pairs)
        return Hypothesis(text=self.vocab.text(ids), tokens=ids, timestamps=times,
                          words=self.vocab.words(ids, times, self.frame_seconds))

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0) -> Hypothesis:
        lp = _check_log_probs(log_probs, len(self.vocab))
        tokens, frames, _ = ctc_greedy(lp)
        return self.hypothesis(tokens, [f + frame_offset for f in frames])


class IncrementalHypothesis:
    """A stream's greedy hypothesis kept up to date as tokens arrive: the partial result after every chunk.

    :meth:`GreedyDecoder.hypothesis` detokenises every token so far, so building a partial result after each
    chunk costs O(tokens so far) and a stream's total O(tokens^2). Here finished words, the text up to the open
    (last) word and the per-token lists are kept; :meth:`extend` and :meth:`hypothesis` detokenise only the open
    word together with the last finished word before it, O(new tokens + word length) per call whatever the
    stream's length (building the returned tuples and string is a C-level copy). ``hypothesis()`` equals
    ``decoder.hypothesis(all tokens, all frames)`` exactly: text, tokens, timestamps and words.

    Words split where a piece starts with ``▁`` (as :meth:`Vocabulary.words` does). The text of the tokens
    ``P + A + T`` is ``text(P + A)`` followed by what ``T`` adds after ``text(A)``, when ``A`` and ``T`` start at
    word boundaries and ``A`` starts with a word whose own text is not empty (or ``P`` is empty). That holds
    for every detokeniser of :class:`Vocabulary`: SentencePiece decoding (only the start of the text drops a
    leading ``▁``; byte-fallback runs and ``<unk>`` stay inside a word), joining with ``▁`` as space and
    stripping (WeNet BPE), joining as is (WeNet chars), and the symbol table's whitespace-normalised join.

    Args:
        decoder: the :class:`GreedyDecoder` whose vocabulary and frame length are used.
    """

    def __init__(self, decoder: GreedyDecoder) -> None:
        self.vocab = decoder.vocab
        self.frame_seconds = decoder.frame_seconds
        self.received = 0                         # tokens given to extend(), <sos/eos> included
        self._ids: list[int] = []                 # kept tokens (<sos/eos> dropped)
        self._times: list[float] = []             # their start times (s)
        self._words: list[tuple[str, float, float]] = []   # finished words with text
        self._head = ""                           # text of the tokens before the open word
        self._open = 0                            # index in _ids where the open word starts
        self._anchor: list[int] = []              # finished tokens from the last word with text on
        self._anchor_text = ""                    # vocab.text(_anchor)
        self._cached: Hypothesis | None = Hypothesis(text="")

    def extend(self, tokens: Sequence[int], frames: Sequence[int]) -> None:
        """Append collapsed tokens and their absolute encoder frame indices (as from :func:`ctc_greedy`)."""
        symbols, sos_eos = self.vocab.symbols, self.vocab.sos_eos
        for t, f in zip(tokens, frames):
            self.received += 1
            if t == sos_eos:
                continue
            if symbols[t].startswith(WORD_BOUNDARY) and len(self._ids) > self._open:
                self._close_word()
            self._ids.append(int(t))
            self._times.append(round(f * self.frame_seconds, 6))
            self._cached = None

    def hypothesis(self) -> Hypothesis:
        """The hypothesis of every token so far (the same object until :meth:`extend` adds one)."""
        if self._cached is None:
            open_ids = self._ids[self._open:]
            _, added = self._join(open_ids)
            word = self._word(open_ids)
            self._cached = Hypothesis(text=self._head + added, tokens=tuple(self._ids),
                                      timestamps=tuple(self._times),
                                      words=tuple(self._words) + ((word,) if word else ()))
        return self._cached

    def _join(self, ids: list[int]) -> tuple[str, str]:
        """(text of the anchor followed by ``ids``, the part of it after the anchor's text)."""
        if not self._anchor:
            text = self.vocab.text(ids)
            return text, text
        joined = self.vocab.text(self._anchor + ids)
        return joined, joined[len(self._anchor_text):]

    def _word(self, ids: list[int]) -> tuple[str, float, float] | None:
        """The open word as :meth:`Vocabulary.words` gives it, or None when its text is empty."""
        text = self.vocab.text(ids)
        if not text:
            return None
        return text, self._times[self._open], self._times[self._open + len(ids) - 1] + self.frame_seconds

    def _close_word(self) -> None:
        ids = self._ids[self._open:]
        joined, added = self._join(ids)
        self._head += added
        word = self._word(ids)
        if word:
            self._words.append(word)
            self._anchor, self._anchor_text = ids, word[0]
        else:                                     # no text of its own: it stays with the anchor
            self._anchor, self._anchor_text = self._anchor + ids, joined
        self._open = len(self._ids)


class _WordStart(str):
    """A lone ``▁`` piece for pyctcdecode: it opens a word but must not count as a *trailing* boundary.

    pyctcdecode treats a label ending in ``▁`` (meant for ``▁⁇▁``) as "force a word break before the next
    token" through one flag shared by all beams, so a lone ``▁`` candidate splits other beams' words
    (``▁c a t`` decoded as "c at"). Its slices ``[:1]`` and ``[1:]`` are normal; ``[-1:]`` is empty.
    """

    def __getitem__(self, key):
        if key == slice(-1, None, None):
            return ""
        return str.__getitem__(self, key)


def _pyctcdecode_labels(symbols: Sequence[str]) -> list[str]:
    """Our symbols (``<blank>``, pieces, ``<sos/eos>``) -> pyctcdecode labels without the ``<sos/eos>`` column."""
    labels = [""]                                  # pyctcdecode's blank
    for s in symbols[1:]:
        if s == SOS_EOS:
            continue
        if s == WORD_BOUNDARY:
            labels.append(_WordStart(s))
        elif s == "<unk>":
            labels.append(WORD_BOUNDARY + "\u2047")  # "▁⁇": an unknown word (LM: out of vocabulary)
        else:
            labels.append(s)
    return labels


def _upper_case_only(texts: Iterable[str]) -> bool:
    """Whether the letters of ``texts`` (pieces, or an LM's words) are all upper case, with at least one (the
    LibriSpeech units of WeNet and ESPnet: ``▁THE``), as no text :func:`slimasr.tokenizer.normalize_text` writes is.
    Stops at the first lower-case letter."""
    upper = False
    for t in texts:
        if any(c.islower() for c in t):
            return False
        upper = upper or any(c.isupper() for c in t)
    return upper


class BeamSearchDecoder:
    """CTC prefix beam search (pyctcdecode), optionally with a KenLM word n-gram (shallow fusion).

    An upper-case vocabulary (the LibriSpeech units of imported WeNet and ESPnet models: ``▁THE``) with an LM whose
    words are not upper case (every LM ``slimasr lm build`` writes: its text passes through
    :func:`slimasr.tokenizer.normalize_text`) is searched in lower case, and the result is given back in the
    model's case, as greedy search gives it; an upper-case LM is searched as it is.

    Score of a prefix = CTC log-prob + ``lm_weight`` * LM log-prob (natural log) + ``word_score`` * words.
    The result is pyctcdecode's ``decode_beams(...)[0]`` (computed by :class:`_PrefixBeamSearch`).
    ``Hypothesis.tokens`` of a beam result is the tokenizer's encoding of the decoded words (pyctcdecode keeps
    words, not the token path) and every token carries its word's start time. ``lm_report`` holds the check of
    the LM's words against the vocabulary (None without an LM or without its word list).

    Raises:
        ValueError: a vocabulary without SentencePiece word marks; a missing or unreadable LM; an LM none of
            whose words the tokenizer can spell (:func:`slimasr.lm.check_lm_vocabulary`; a partial mismatch is
            logged as a warning with the numbers).
    """

    def __init__(self, vocab: Vocabulary, config: DecodingConfig = DecodingConfig(method="beam"),
                 frame_seconds: float = FRAME_SECONDS) -> None:
        # pyctcdecode's build_ctcdecoder, less its alphabet normalisation (our labels are already in its
        # normalised form, _pyctcdecode_labels) and its character coverage check (check_lm_vocabulary is ours)
        from pyctcdecode.alphabet import Alphabet
        from pyctcdecode.decoder import BeamSearchDecoderCTC
        from pyctcdecode.language_model import LanguageModel

        self.vocab = vocab
        self.config = config
        self.frame_seconds = frame_seconds
        labels = _pyctcdecode_labels(vocab.symbols)
        self._upper = False                        # searched in lower case (see the class docstring)
        if WORD_BOUNDARY not in "".join(labels):
            raise ValueError("beam search needs a SentencePiece vocabulary (pieces marked with '\u2581')")
        if len(set(labels)) != len(labels):
            raise ValueError("the vocabulary has duplicate pieces")
        language_model = None
        self.lm_report = None
        if config.lm is not None:
            from slimasr.lm import WARN_UNSPELLABLE, check_lm_file, check_lm_vocabulary, load_kenlm, load_unigrams

            p = Path(config.lm)
            if not p.is_file():
                raise ValueError(f"language model {p} does not exist (build one with `slimasr lm build`)")
            check_lm_file(p)
            unigrams = load_unigrams(p)
            self._upper = _upper_case_only(labels) and not (unigrams and _upper_case_only(unigrams))
            if self._upper:
                labels = [label if isinstance(label, _WordStart) else label.lower() for label in labels]
            if unigrams is None:
                log.warning("no word list next to %s: its vocabulary cannot be checked against the model's "
                            "tokenizer, and partial words are scored less well", p)
            else:
                symbols = [t.lower() for t in vocab.symbols] if self._upper else vocab.symbols
                self.lm_report = check_lm_vocabulary(unigrams, symbols, str(p))
                if self.lm_report.unusable:
                    raise ValueError(self.lm_report.message() + ": this LM cannot help this model")
                if self.lm_report.unspellable:
                    level = logging.WARNING if self.lm_report.oov_rate >= WARN_UNSPELLABLE else logging.INFO
                    log.log(level, "%s", self.lm_report.message())
            language_model = LanguageModel(load_kenlm(p), unigrams, alpha=config.lm_weight, beta=config.word_score,
                                           unk_score_offset=config.unk_score_offset)
        self._decoder = BeamSearchDecoderCTC(Alphabet(labels, is_bpe=True), language_model)
        self._search = _PrefixBeamSearch(self._decoder)

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0) -> Hypothesis:
        lp = _check_log_probs(log_probs, len(self.vocab)).astype(np.float32, copy=False)
        if lp.shape[0] == 0:
            return Hypothesis(text="", score=0.0)
        cfg = self.config
        if self.vocab.sos_eos is not None:         # the <sos/eos> column is not a label (see _pyctcdecode_labels)
            lp = np.delete(lp, self.vocab.sos_eos, axis=1)
        text, word_frames, score = self._search(lp, beam_width=cfg.beam_size,
                                                beam_prune_logp=cfg.beam_prune_logp,
                                                token_min_logp=cfg.token_min_logp)
        if self._upper:                            # searched in the LM's lower case (see the class docstring)
            text, word_frames = text.upper(), [(w.upper(), frames) for w, frames in word_frames]
        fs = self.frame_seconds
        words = tuple((w, round((a + frame_offset) * fs, 6), round((b + frame_offset) * fs, 6))
                      for w, (a, b) in word_frames)
        tokens: list[int] = []
        times: list[float] = []
        tok = self.vocab.tokenizer
        if tok is not None:
            for w, start, _ in words:
                ids = tok.encode(w, normalize=False)
                tokens += ids
                times += [start] * len(ids)
        return Hypothesis(text=text, tokens=tuple(tokens), timestamps=tuple(times), words=words,
                          score=float(score))


class _PrefixBeamSearch:
    """pyctcdecode's CTC prefix beam search (``BeamSearchDecoderCTC.decode_beams`` of pyctcdecode 0.5, no
    hotwords, ``prune_history=False``), re-implemented for speed with the same results: the same candidate
    tokens per frame, beams expanded and merged in the same order (a merged beam keeps the latest one's frames,
    as pyctcdecode's ``_merge_beams`` does), the same LM scores (pyctcdecode's ``LanguageModel``: KenLM, unigram
    list, partial-word penalty, all of them memoised the same way), the same pruning. Texts, word frames and
    scores are identical (``tests/test_decoders.py`` compares them with pyctcdecode's).

    What is cheaper: a beam carries its LM score, so a blank, a repeated token or a token continuing a word
    needs no LM lookup (pyctcdecode looks up every beam's full prefix text in a dict every frame), and the text
    is only rebuilt when a word ends; merging and scoring are one pass; per-token properties are computed
    once; partial-word scores (a trie walk each) are cached across utterances.
    """

    _PARTIAL_CACHE_MAX = 200_000   # word prefixes kept across utterances before that cache is cleared

    def __init__(self, decoder) -> None:
        from pyctcdecode.alphabet import BPE_TOKEN

        if not decoder._is_bpe:
            raise ValueError("the beam search expects a SentencePiece (BPE) vocabulary")
        self._lm = decoder._language_model
        self._check = decoder._check_logits_dimension
        # per token id: (label, is blank, opens a word, label without its word markers, forces the next break)
        self._tokens: list[tuple[str, bool, bool, str, bool]] = []
        for label in decoder._idx2vocab.values():
            clean = label[1:] if label[:1] == BPE_TOKEN else label
            ends = label[-1:] == BPE_TOKEN
            self._tokens.append((label, label == "", label[:1] == BPE_TOKEN, clean[:-1] if ends else clean, ends))
        self._partial: dict[str, float] = {}

    def _partial_score(self, word_part: str) -> float:
        """pyctcdecode's score of an unfinished word (0 when it is a prefix of a known word); memoised."""
        score = self._partial.get(word_part)
        if score is None:
            if len(self._partial) >= self._PARTIAL_CACHE_MAX:
                self._partial = {}
            score = self._partial[word_part] = self._lm.score_partial_token(word_part)
        return score

    def _text_score(self, cache: dict, text: str, word: str, new_text: str, is_eos: bool) -> float:
        """LM score of ``new_text`` = ``text`` + ``word`` (pyctcdecode's ``cached_lm_scores``)."""
        hit = cache.get((new_text, is_eos))
        if hit is None:
            _, prev_raw, state = cache[(text, False)]
            score, end_state = self._lm.score(state, word, is_last_word=is_eos)
            hit = cache[(new_text, is_eos)] = (prev_raw + score, prev_raw + score, end_state)
        return hit[0]

    def __call__(self, logits: np.ndarray, beam_width: int, beam_prune_logp: float,
                 token_min_logp: float) -> tuple[str, list[tuple[str, tuple[int, int]]], float]:
        """Best beam of ``(T, V')`` scores over pyctcdecode's labels (log-softmaxed here, as pyctcdecode does).

        Returns:
            (text, [(word, (start frame, end frame)), ...], combined CTC + LM score).
        """
        from pyctcdecode.constants import MIN_TOKEN_CLIP_P
        from pyctcdecode.decoder import _log_softmax, _sum_log_scores

        self._check(logits)
        if math.isclose(logits.sum(axis=1).mean(), 1):        # probabilities (pyctcdecode's test)
            logits = np.log(np.clip(logits, MIN_TOKEN_CLIP_P, 1))
        else:
            logits = np.clip(_log_softmax(logits, axis=1), np.log(MIN_TOKEN_CLIP_P), 0)
        lm, tokens, partial = self._lm, self._tokens, self._partial
        best = logits.argmax(axis=1).tolist()
        above = logits >= token_min_logp
        # this utterance's LM scores of prefix texts: (text, is_eos) -> (score, raw score, KenLM state)
        cache: dict[tuple[str, bool], tuple] = {("", False): (0.0, 0.0, lm.get_start_state())} if lm else {}
        # a beam: (text, word_part, last_char, text_frames, part_frames, CTC score, LM score of text,
        # LM score of text and word_part); pyctcdecode's next_word is always "" between frames
        beams: list[tuple] = [("", "", None, [], (-1, -1), 0.0, 0.0, 0.0)]
        force_next_break = False
        for t, row in enumerate(logits.tolist()):
            # pyctcdecode's candidates; a set of the same ints, so iterated in the same order
            candidates = set(np.flatnonzero(above[t]).tolist()) | {best[t]}
            # (text incl. a finished word, word_part, last char) -> [CTC score, text_frames, part_frames, LM of
            # text, LM of all]
            merged: dict[tuple[str, str, str | None], list] = {}
            for idx in candidates:
                p = row[idx]
                char, blank, opens, clean, ends = tokens[idx]
                for text, word_part, last_char, text_frames, part_frames, score, lm_text, lm_all in beams:
                    if blank or last_char == char:
                        key = (text, word_part, char)
                        if not blank:
                            part_frames = (part_frames[0], t + 1)
                    elif opens or force_next_break:
                        force_next_break = ends
                        if word_part:
                            text_frames = text_frames + [part_frames]
                            new_text = word_part if not text else text + " " + word_part
                            key = (new_text, clean, char)
                            if key not in merged and lm is not None:
                                lm_text = self._text_score(cache, text, word_part, new_text, False)
                            text = new_text
                        else:
                            key = (text, clean, char)
                        part_frames = (t, t + 1)
                        if lm is not None and key not in merged:
                            lm_all = lm_text
                            if clean:
                                ps = partial.get(clean)
                                lm_all += self._partial_score(clean) if ps is None else ps
                    else:
                        new_part = word_part + char
                        key = (text, new_part, char)
                        part_frames = (t, t + 1) if part_frames[0] < 0 else (part_frames[0], t + 1)
                        if lm is not None and key not in merged:
                            ps = partial.get(new_part)
                            lm_all = lm_text + (self._partial_score(new_part) if ps is None else ps)
                    old = merged.get(key)
                    if old is None:
                        merged[key] = [score + p, text_frames, part_frames, lm_text, lm_all]
                    else:            # as pyctcdecode: the latest beam's frames, log-sum of the scores
                        old[0] = _sum_log_scores(old[0], score + p)
                        old[1], old[2] = text_frames, part_frames
            beams = self._prune(merged, beam_width, beam_prune_logp)
        # end of the utterance: the open word ends and the LM scores the end of the sentence
        final: dict[tuple[str, str, str | None], list] = {}
        for text, word_part, _, text_frames, part_frames, score, _, _ in beams:
            new_text = text if not word_part else (word_part if not text else text + " " + word_part)
            frames = text_frames if word_part == "" else text_frames + [part_frames]
            old = final.get((new_text, "", None))
            if old is None:
                final[(new_text, "", None)] = [score, frames, (-1, -1), text, word_part]
            else:  # "a b" + "" and "a" + "b" merge here; as in pyctcdecode the latest one is scored below
                old[0] = _sum_log_scores(old[0], score)
                old[1], old[3], old[4] = frames, text, word_part
        for (new_text, _, _), value in final.items():
            value[3] = value[4] = (self._text_score(cache, value[3], value[4], new_text, True) if lm is not None
                                   else 0.0)
        text, _, _, text_frames, _, _, _, _, combined = self._prune(final, beam_width, beam_prune_logp, True)[0]
        return " ".join(text.split()), list(zip(text.split(), text_frames)), combined

    @staticmethod
    def _prune(merged: dict, beam_width: int, beam_prune_logp: float, combined: bool = False) -> list[tuple]:
        """pyctcdecode's pruning: drop beams more than ``-beam_prune_logp`` below the best (CTC + LM), keep the
        best ``beam_width`` (ties: first merged first). ``combined``: append the CTC + LM score."""
        scored = [(score + lm_all, key, value) for key, value in merged.items()
                  for score, _, _, _, lm_all in (value,)]
        threshold = max(s[0] for s in scored) + beam_prune_logp
        kept = heapq.nlargest(beam_width, [s for s in scored if s[0] >= threshold], key=itemgetter(0))
        return [(text, word_part, last_char, frames, part, score, lm_text, lm_all) + ((total,) if combined else ())
                for total, (text, word_part, last_char), (score, frames, part, lm_text, lm_all) in kept]


def make_decoder(vocab: Vocabulary, config: DecodingConfig, frame_seconds: float = FRAME_SECONDS) -> Decoder:
    """The decoder a :class:`DecodingConfig` asks for."""
    if config.method == "greedy":
        return GreedyDecoder(vocab, frame_seconds)
    return BeamSearchDecoder(vocab, config, frame_seconds)
