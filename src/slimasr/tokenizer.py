"""Subword tokenizer (SentencePiece) with the CTC id convention, and the text normaliser.

Torch-free: the runtime and the scorer import this module.

Id convention (the same as WeNet's units file and sherpa-onnx's ``tokens.txt``)::

    0          <blank>                 CTC blank
    1 .. N     SentencePiece ids 0..N-1  (so <unk> is 1)
    N + 1      <sos/eos>

``Tokenizer.vocab_size`` is therefore ``N + 2``, where ``N`` is the SentencePiece vocabulary size that
:func:`train_tokenizer` was asked for.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["BLANK", "SOS_EOS", "Tokenizer", "normalize_text", "train_tokenizer"]

log = logging.getLogger(__name__)

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
MODEL_TYPES = ("unigram", "bpe", "char")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_NOT_LETTER = re.compile(r"[^a-z']+")
_LOOSE_APOSTROPHE = re.compile(r"(?<![a-z])'+|'+(?![a-z])")


def _fold(m: re.Match) -> str:
    """Letters (and combining marks) -> their ASCII transliteration (anyascii); any other character -> a space."""
    from anyascii import anyascii

    return "".join(anyascii(c) if unicodedata.category(c)[0] in "LM" else " " for c in m.group())


def normalize_text(s: str) -> str:
    """Lowercase ASCII words separated by single spaces; apostrophes kept only inside words.

    Letters outside a-z are transliterated with anyascii (``Straße`` -> ``strasse``, ``Ørsted`` -> ``orsted``,
    ``Łódź`` -> ``lodz``, ``café`` -> ``cafe``, ``Привет`` -> ``privet``); digits, punctuation, emoji and
    other symbols become word breaks. Tokenizer training, language-model text and WER scoring
    (:mod:`slimasr.scoring`) all use this one function, and it is idempotent.

    >>> normalize_text("  Don't PANIC -- it's 'only' 42 km!")
    "don't panic it's only km"
    """
    s = unicodedata.normalize("NFC", s.translate(_APOSTROPHES))
    if not s.isascii():
        s = _NON_ASCII.sub(_fold, s)
    s = _NOT_LETTER.sub(" ", s.lower())
    s = _LOOSE_APOSTROPHE.sub(" ", s)
    return " ".join(s.split())


class Tokenizer:
    """A SentencePiece model seen through the CTC id convention (see the module docstring).

    Args:
        model_path: a SentencePiece ``.model`` file.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, model_proto: bytes | None = None) -> None:
        import sentencepiece as spm

        if (model_path is None) == (model_proto is None):
            raise ValueError("give exactly one of model_path or model_proto")
        self._sp = spm.SentencePieceProcessor()
        if model_path is not None:
            path = Path(model_path)
            if not path.is_file():
                raise ValueError(f"tokenizer model {path} does not exist (expected a SentencePiece .model file)")
            try:
                self._sp.load(str(path))
            except (OSError, RuntimeError) as e:
                raise ValueError(f"{path} is not a SentencePiece model: {e}") from None
        else:
            try:
                self._sp.load_from_serialized_proto(model_proto)
            except (OSError, RuntimeError) as e:
                raise ValueError(f"bytes are not a serialized SentencePiece model: {e}") from None
        self._n = self._sp.get_piece_size()

    # ---- sizes and special ids ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Model output size: blank + SentencePiece pieces + sos/eos."""
        return self._n + 2

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id() + 1

    @property
    def sos_eos_id(self) -> int:
        return self.vocab_size - 1

    # ---- conversion -----------------------------------------------------------------------------
    def encode(self, text: str, normalize: bool = True) -> list[int]:
        """Text -> token ids (1..N); ``normalize`` applies :func:`normalize_text` first."""
        if normalize:
            text = normalize_text(text)
        return [i + 1 for i in self._sp.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text. Blank and sos/eos are ignored (no CTC collapsing is done here)."""
        pieces = []
        for i in ids:
            i = int(i)
            if i == 0 or i == self.sos_eos_id:
                continue
            if not 0 < i < self.sos_eos_id:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            pieces.append(i - 1)
        return self._sp.decode(pieces)

    def id_to_piece(self, i: int) -> str:
        if i == 0:
            return BLANK
        if i == self.sos_eos_id:
            return SOS_EOS
        if not 0 < i < self.sos_eos_id:
            raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return self._sp.id_to_piece(i - 1)

    def pieces(self) -> list[str]:
        """All symbols, indexed by token id."""
        return [self.id_to_piece(i) for i in range(self.vocab_size)]

    def write_tokens_txt(self, path: str | os.PathLike) -> Path:
        """Write ``symbol id`` per line (sherpa-onnx's tokens.txt): ``<blank> 0`` first, ``<sos/eos>`` last."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{p} {i}\n" for i, p in enumerate(self.pieces())), encoding="utf-8")
        return path

    # ---- serialisation (so checkpoints and exported models can embed the tokenizer) --------------
    def to_bytes(self) -> bytes:
        return self._sp.serialized_model_proto()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer":
        return cls(model_proto=bytes(data))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike,
    model_type: str = "unigram",
    *,
    normalize: bool = True,
    input_sentence_size: int = 2_000_000,
    seed: int = 0,
) -> Tokenizer:
    """Train a SentencePiece model on ``texts`` and write ``tokenizer.model`` and ``tokens.txt`` to ``out_dir``.

    Args:
        texts: one utterance per item.
        vocab_size: exact SentencePiece vocabulary size N (including ``<unk>``); the model's output size
            is N + 2 (blank and sos/eos added, see the module docstring).
        out_dir: created if needed.
        model_type: ``unigram``, ``bpe`` or ``char``.
        normalize: apply :func:`normalize_text` to each text first.
        input_sentence_size: at most this many (randomly sampled) sentences are used.

    Raises:
        ValueError: unknown model type, an empty corpus, or a corpus too small for ``vocab_size``
            (the message says the largest size it supports).
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "tokenizer"

    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=out, delete=False, encoding="utf-8") as f:
        corpus = Path(f.name)
        n = 0
        for t in texts:
            t = normalize_text(t) if normalize else " ".join(t.split())
            if t:
                f.write(t + "\n")
                n += 1
    try:
        if n == 0:
            raise ValueError("cannot train a tokenizer on an empty corpus (no non-empty texts)")
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                unk_id=0,
                hard_vocab_limit=True,
                num_threads=max(1, os.cpu_count() or 1),
                minloglevel=2,  # errors only
            )
        except RuntimeError as e:
            msg = str(e)
            hi = re.search(r"value <= (\d+)", msg)
            lo = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
            if lo:
                hint = (f"; the corpus has more distinct characters than that: use at least {lo.group(1)} "
                        "(--vocab-size)")
            else:
                hint = (f"; the largest size this corpus supports is {hi.group(1)}" if hi else "") + \
                    " (use a smaller --vocab-size or more text)"
            raise ValueError(
                f"cannot train a {model_type} tokenizer with vocab_size={vocab_size} on {n} sentences{hint}. "
                f"SentencePiece said: {msg.strip()}"
            ) from None
    finally:
        corpus.unlink(missing_ok=True)
    tok = Tokenizer(prefix.with_suffix(".model"))
    if tok.vocab_size - 2 != vocab_size:  # the char model stops at the number of distinct characters
        raise ValueError(f"the {model_type} tokenizer has {tok.vocab_size - 2} pieces for this corpus, not the "
                         f"requested vocab_size={vocab_size}; use vocab_size={tok.vocab_size - 2}")
    tok.write_tokens_txt(out / "tokens.txt")
    log.info("trained %s tokenizer: %d pieces (+ blank, sos/eos) from %d sentences -> %s",
             model_type, vocab_size, n, out)
    return tok
