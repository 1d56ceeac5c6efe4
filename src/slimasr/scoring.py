"""Scoring: word and character error rates of hypotheses against references, one rule everywhere.

``slimasr decode``, bench, training's dev WER, the pruning oracle, the demo and the reproduction all score with
:func:`error_rates` (or :func:`error_counts` when they accumulate over batches), so one model on one data set gets
one WER whichever command reports it. The rules:

* **Normalisation**: references and hypotheses both go through :func:`normalize_for_scoring`, which is
  :func:`slimasr.tokenizer.normalize_text` (numbers spelled out, ``in 1984`` -> ``in nineteen eighty four``;
  lower case a-z words and inner apostrophes; letters outside a-z transliterated, ``Straße`` -> ``strasse``;
  punctuation is a word break), the same function that prepares tokenizer and language-model text.
* **Unknown token**: the tokenizer's unknown symbol in a hypothesis (SentencePiece renders it ``⁇``, the runtime's
  ``tokens.txt`` vocabulary ``<unk>``) becomes the word :data:`UNK_WORD`, which matches no reference word: it
  costs one error, as any wrong word does (as in icefall and k2, where ``<unk>`` is scored like any word).
* **Empty references** (empty after normalisation) are kept: every hypothesis word there is an insertion
  (Kaldi's ``compute-wer`` and sclite count them the same way). An utterance is never dropped from the score.
* **Edit distance** is jiwer's (``process_words`` / ``process_characters``); WER = (S + D + I) / N over the whole
  corpus, CER the same over characters (spaces between words included, as jiwer's ``cer``). With no reference
  word at all the rates are undefined: NaN.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Sequence

__all__ = ["ErrorCounts", "UNK_SYMBOLS", "UNK_WORD", "error_counts", "error_rates", "normalize_for_scoring"]

UNK_SYMBOLS = ("<unk>", "\u2047")   # the unknown token as SentencePiece's decoder and tokens.txt render it
UNK_WORD = "<unk>"                   # what it becomes in scored text (never a normalised reference word)
_UNK = re.compile("|".join(re.escape(s) for s in UNK_SYMBOLS))


def normalize_for_scoring(text: str) -> str:
    """The text that is scored: :func:`~slimasr.tokenizer.normalize_text`, with each unknown-token symbol kept as
    the separate word :data:`UNK_WORD`.

    >>> normalize_for_scoring("Straße ⁇ 42, Ørsted!")
    'strasse <unk> forty two orsted'
    """
    from .tokenizer import normalize_text

    parts = [normalize_text(p) for p in _UNK.split(text)]
    return f" {UNK_WORD} ".join(parts).strip() if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations summed over utterances; add two with ``+`` to accumulate over batches."""

    utterances: int = 0
    ref_words: int = 0
    word_errors: int = 0          # substitutions + deletions + insertions
    ref_chars: int = 0
    char_errors: int = 0
    empty_references: int = 0     # utterances whose normalised reference is empty (all their words are insertions)

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def wer(self) -> float:
        """Word errors / reference words (NaN without reference words)."""
        return self.word_errors / self.ref_words if self.ref_words else math.nan

    @property
    def cer(self) -> float:
        """Character errors / reference characters (NaN without reference characters)."""
        return self.char_errors / self.ref_chars if self.ref_chars else math.nan

    def as_dict(self) -> dict:
        return {"wer": self.wer, "cer": self.cer, **asdict(self)}


def error_counts(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Normalise (:func:`normalize_for_scoring`) and count word and character errors.

    Args:
        references, hypotheses: one string per utterance, raw or already normalised (normalising is idempotent).
    Raises:
        ValueError: if the two sequences differ in length.
    """
    import jiwer

    refs, hyps = list(references), list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses; expected one of each per utterance")
    refs = [normalize_for_scoring(r) for r in refs]
    hyps = [normalize_for_scoring(h) for h in hyps]
    scored = [(r, h) for r, h in zip(refs, hyps) if r]
    empty = [h for r, h in zip(refs, hyps) if not r]
    words = chars = w_err = c_err = 0
    if scored:
        r, h = [p[0] for p in scored], [p[1] for p in scored]
        o = jiwer.process_words(r, h)
        w_err, words = o.substitutions + o.deletions + o.insertions, o.substitutions + o.deletions + o.hits
        c = jiwer.process_characters(r, h)
        c_err, chars = c.substitutions + c.deletions + c.insertions, c.substitutions + c.deletions + c.hits
    w_err += sum(len(h.split()) for h in empty)                  # empty reference: every word is an insertion
    c_err += sum(len(h) for h in empty)
    return ErrorCounts(len(refs), words, w_err, chars, c_err, len(empty))


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus WER and CER (see the module docstring for the rules).

    Returns:
        ``{"wer", "cer", "utterances", "ref_words", "word_errors", "ref_chars", "char_errors",
        "empty_references"}``; rates are fractions (0.1 = 10 %), NaN without reference words.
    """
    return error_counts(references, hypotheses).as_dict()
