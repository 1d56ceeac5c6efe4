"""CTC decoders over numpy log-probabilities: greedy (with timestamps) and prefix beam search with an optional
KenLM word n-gram (pyctcdecode). Torch-free.

Both take ``log_probs`` of shape (T, V) for one utterance (token ids: 0 = blank, V - 1 = ``<sos/eos>``, see
:mod:`slimasr.tokenizer`) and return a :class:`Hypothesis`. Times are in seconds: encoder frame ``t`` starts at
``t * frame_seconds`` (40 ms for 10 ms fbank frames and 4x subsampling).

How our SentencePiece vocabulary maps onto pyctcdecode's labels (checked against pyctcdecode's
``alphabet.py``): label 0 is ``""`` (pyctcdecode's blank), labels 1..N are the pieces themselves, so pieces
starting with ``▁`` open a new word (pyctcdecode detects the BPE style from the ``▁`` prefix) and the others
continue the current word. Two pieces need care: ``<unk>`` becomes ``▁⁇`` (an unknown word; pyctcdecode's
own ``▁⁇▁`` would force a word break after it), and a lone ``▁`` piece is passed so that pyctcdecode does not
read it as such a trailing break (see :class:`_WordStart`: otherwise it splits words of *other* beams). The
``<sos/eos>`` column, which CTC never needs, is dropped before the search (pyctcdecode renormalises the rest).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["BeamSearchDecoder", "DecodingConfig", "Decoder", "GreedyDecoder", "Hypothesis", "Vocabulary",
           "ctc_greedy", "make_decoder"]

log = logging.getLogger(__name__)

WORD_BOUNDARY = "\u2581"  # ▁
FRAME_SECONDS = 0.04      # 4x subsampling of 10 ms frames


@dataclass(frozen=True)
class DecodingConfig:
    """How CTC log-probabilities become text.

    The paper decodes with beam 100 and LM weight 0.6 (``DecodingConfig.paper(lm)``); the default is greedy.
    """

    method: str = "greedy"          # "greedy" | "beam" (CTC prefix beam search via pyctcdecode)
    beam_size: int = 100            # beams kept per frame
    lm: str | None = None           # KenLM model (.arpa or .bin, see slimasr.lm); None = no LM
    lm_weight: float = 0.6          # pyctcdecode alpha: weight of the LM log-probability (natural log)
    word_score: float = 0.0         # pyctcdecode beta: bonus per word (the paper gives none)
    beam_prune_logp: float = -10.0  # drop beams this far (log) below the best
    token_min_logp: float = -5.0    # ignore tokens below this log-prob unless they are the frame's best
    unk_score_offset: float = -10.0  # LM penalty for words outside the LM's vocabulary

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.lm is not None and self.method != "beam":
            raise ValueError("an LM is only used by beam search: set method='beam'")

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
        symbols: the piece of every id (``tokens.txt`` order: ``<blank>`` first, ``<sos/eos>`` last).
        tokenizer: an optional :class:`slimasr.tokenizer.Tokenizer` with the same ids.
    """

    def __init__(self, symbols: Sequence[str], tokenizer=None) -> None:
        self.symbols = list(symbols)
        self.tokenizer = tokenizer
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
        last = len(self.symbols) - 1
        s = "".join(self.symbols[i] for i in ids if 0 < i < last)
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
        last = len(self.vocab) - 1
        pairs = [(t, f) for t, f in zip(tokens, frames) if t != last]
        ids = tuple(int(t) for t, _ in pairs)
        times = tuple(round(f * self.frame_seconds, 6) for _, f in pairs)
        return Hypothesis(text=self.vocab.text(ids), tokens=ids, timestamps=times,
                          words=self.vocab.words(ids, times, self.frame_seconds))

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0) -> Hypothesis:
        lp = _check_log_probs(log_probs, len(self.vocab))
        tokens, frames, _ = ctc_greedy(lp)
        return self.hypothesis(tokens, [f + frame_offset for f in frames])


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
    for s in symbols[1:-1]:
        if s == WORD_BOUNDARY:
            labels.append(_WordStart(s))
        elif s == "<unk>":
            labels.append(WORD_BOUNDARY + "\u2047")  # "▁⁇": an unknown word (LM: out of vocabulary)
        else:
            labels.append(s)
    return labels


class BeamSearchDecoder:
    """CTC prefix beam search (pyctcdecode), optionally with a KenLM word n-gram (shallow fusion).

    Score of a prefix = CTC log-prob + ``lm_weight`` * LM log-prob (natural log) + ``word_score`` * words.
    ``Hypothesis.tokens`` of a beam result is the tokenizer's encoding of the decoded words (pyctcdecode keeps
    words, not the token path) and every token carries its word's start time.
    """

    def __init__(self, vocab: Vocabulary, config: DecodingConfig = DecodingConfig(method="beam"),
                 frame_seconds: float = FRAME_SECONDS) -> None:
        from pyctcdecode import build_ctcdecoder

        self.vocab = vocab
        self.config = config
        self.frame_seconds = frame_seconds
        labels = _pyctcdecode_labels(vocab.symbols)
        if WORD_BOUNDARY not in "".join(labels):
            raise ValueError("beam search needs a SentencePiece vocabulary (pieces marked with '\u2581')")
        lm_path = None
        unigrams = None
        if config.lm is not None:
            from slimasr.lm import load_unigrams

            p = Path(config.lm)
            if not p.is_file():
                raise ValueError(f"language model {p} does not exist (build one with `slimasr lm build`)")
            lm_path = str(p)
            unigrams = load_unigrams(p)
            if unigrams is None:
                log.warning("no word list next to %s; partial words are scored less well", p)
        alphabet_log = logging.getLogger("pyctcdecode.alphabet")
        level = alphabet_log.level
        alphabet_log.setLevel(logging.ERROR)  # it warns that "▁⁇▁" is missing: <unk> is mapped differently
        try:
            self._decoder = build_ctcdecoder(labels, lm_path, unigrams=unigrams, alpha=config.lm_weight,
                                             beta=config.word_score, unk_score_offset=config.unk_score_offset)
        except OSError as e:  # kenlm: "Cannot read model"
            raise ValueError(f"language model {lm_path} is not a readable KenLM model: {e}") from None
        finally:
            alphabet_log.setLevel(level)

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0) -> Hypothesis:
        lp = _check_log_probs(log_probs, len(self.vocab)).astype(np.float32, copy=False)
        if lp.shape[0] == 0:
            return Hypothesis(text="", score=0.0)
        cfg = self.config
        beams = self._decoder.decode_beams(lp[:, :-1], beam_width=cfg.beam_size,
                                           beam_prune_logp=cfg.beam_prune_logp,
                                           token_min_logp=cfg.token_min_logp)
        text, _, word_frames, _, score = beams[0]
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


def make_decoder(vocab: Vocabulary, config: DecodingConfig, frame_seconds: float = FRAME_SECONDS) -> Decoder:
    """The decoder a :class:`DecodingConfig` asks for."""
    if config.method == "greedy":
        return GreedyDecoder(vocab, frame_seconds)
    return BeamSearchDecoder(vocab, config, frame_seconds)
