"""Word n-gram language models for CTC beam search, estimated by KenLM's own ``lmplz`` (torch-free).

The paper decodes with a 4-gram LM trained on the training transcriptions. Estimation is not re-implemented
here: :func:`build_lm` normalises the text (the same :func:`~slimasr.tokenizer.normalize_text` that the
tokenizer and the WER scorer use), runs ``lmplz`` (modified Kneser-Ney) and, for a ``.bin`` output,
``build_binary``. Both tools are compiled by ``make setup`` (KenLM's source is not on PyPI as binaries).

A binary model does not list its vocabulary in a form pyctcdecode can read, so next to ``lm.bin`` a
``lm.unigrams.txt`` (one word a line) is written; :func:`load_unigrams` reads either that file or the
``\\1-grams:`` section of an ARPA file.

An LM only helps when its words are words the acoustic model can spell: :func:`check_lm_vocabulary` compares
the LM's words with the characters of the model's tokenizer (upper-case text against a lower-case model, letters
the tokenizer lacks) and gives the share of LM words the model can never produce; the beam search decoder warns
with those numbers when it loads an LM, and refuses an LM none of whose words the model can spell.

Example::

    from slimasr.lm import build_lm
    build_lm("corpus.txt", "exp/lm/lm.bin", order=4)
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .fileutil import cache_dir

__all__ = ["KenLMToolMissing", "LMVocabularyReport", "build_lm", "check_lm_file", "check_lm_vocabulary",
           "find_kenlm_tool", "load_kenlm", "load_unigrams", "unigrams_path"]

log = logging.getLogger(__name__)

LM_SUFFIXES = (".arpa", ".bin")
_SPECIAL_WORDS = {"<s>", "</s>", "<unk>"}


class KenLMToolMissing(RuntimeError):
    """``lmplz`` or ``build_binary`` is not installed."""


def find_kenlm_tool(name: str) -> Path:
    """Locate a KenLM program (``lmplz`` or ``build_binary``).

    Looked for on ``PATH``, next to the running Python (a virtual environment's ``bin``, used even when the
    environment is not activated) and in the cache that ``make setup`` builds into
    (``$SLIMASR_CACHE/kenlm-*/bin``, default ``~/.cache/slimasr``).

    Raises:
        KenLMToolMissing: with the command that installs it.
    """
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = [Path(sys.executable).parent / name]
    candidates += sorted(cache_dir().glob(f"kenlm-*/bin/{name}"), reverse=True)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise KenLMToolMissing(
        f"KenLM's {name} is not installed (looked on PATH, in {Path(sys.executable).parent} and in "
        f"{cache_dir()}/kenlm-*/bin); run `make setup` to build it")


def unigrams_path(lm_path: str | os.PathLike) -> Path:
    """The word list written next to a binary LM: ``lm.bin`` -> ``lm.unigrams.txt``."""
    p = Path(lm_path)
    return p.with_name(p.stem + ".unigrams.txt")


_KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"     # how build_binary's files begin (lm/binary_format.cc)
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")           # gzip, bzip2, xz: KenLM reads compressed ARPA


def check_lm_file(lm_path: str | os.PathLike) -> None:
    """Refuse a file that is not a KenLM model before KenLM reads it (and prints its progress bar for a file it
    then rejects): an ARPA file's first non-empty line is ``\\data\\``, a KenLM binary starts with its magic
    string; compressed files are left to KenLM.

    Raises:
        ValueError: ``"language model PATH is not a KenLM model (...)"``.
    """
    with open(lm_path, "rb") as f:
        head = f.read(4096)
    if head.startswith((_KENLM_BINARY_MAGIC, *_COMPRESSED_MAGIC)):
        return
    first = next((line.strip() for line in head.splitlines() if line.strip()), b"")
    if first != b"\\data\\":
        raise ValueError(f"language model {lm_path} is not a KenLM model (an ARPA file starts with a \\data\\ "
                         f"line, a KenLM binary with '{_KENLM_BINARY_MAGIC.decode()}'; build one with "
                         "`slimasr lm build`)")


_KENLM_NOTICES = ("Loading the LM will be faster if you build a binary file.", "Reading ", "----5---10", "*****")


def load_kenlm(lm_path: str | os.PathLike):
    """Load a KenLM model without its loading chatter on standard error.

    KenLM's progress bar is switched off (``kenlm.Config.show_progress``); its advice to build a binary file,
    printed for every ARPA file through C++ ``std::cerr`` whatever the configuration, is caught at the file
    descriptor level during the load only (``wurlitzer``) and logged at DEBUG. Anything else KenLM prints there
    is logged as a warning, so nothing else is hidden.

    Returns:
        ``kenlm.Model``.
    Raises:
        ValueError: ``"language model PATH is not a readable KenLM model: WHY"`` (one line; :func:`check_lm_file`
            should have refused files that are no KenLM model before).
    """
    import io
    import re

    import kenlm
    from wurlitzer import pipes

    config = kenlm.Config()
    config.show_progress = False
    err = io.StringIO()
    try:
        with pipes(stdout=None, stderr=err):
            model = kenlm.Model(str(lm_path), config)
    except OSError as e:  # kenlm: "Cannot read model 'PATH' (FILE:LINE in FUNCTION threw X because `Y'. WHY)"
        why = re.search(r"threw \w+ because `[^`]*'\.\s*(.+)\)$", str(e))
        raise ValueError(f"language model {lm_path} is not a readable KenLM model: "
                         f"{why.group(1) if why else e}") from None
    finally:
        for line in err.getvalue().splitlines():
            if line.strip():
                level = logging.DEBUG if line.startswith(_KENLM_NOTICES) else logging.WARNING
                log.log(level, "KenLM (%s): %s", lm_path, line)
    return model


def load_unigrams(lm_path: str | os.PathLike) -> list[str] | None:
    """The LM's words (without ``<s>``, ``</s>``, ``<unk>``): from an ARPA file's unigram section, or from the
    ``*.unigrams.txt`` file next to a binary model. ``None`` when a binary model has no such file."""
    p = Path(lm_path)
    if p.suffix != ".arpa":
        side = unigrams_path(p)
        if not side.is_file():
            return None
        return [w for w in side.read_text(encoding="utf-8").split() if w not in _SPECIAL_WORDS]
    words: list[str] = []
    in_unigrams = False
    with open(p, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
                continue
            if in_unigrams:
                if not line:
                    continue
                if line.startswith("\\"):
                    break
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] not in _SPECIAL_WORDS:
                    words.append(parts[1])
    return words


WORD_BOUNDARY = "\u2581"  # ▁, SentencePiece's word-start mark
WARN_UNSPELLABLE = 0.01   # warn when at least this share of the LM's words cannot be spelled


@dataclass(frozen=True)
class LMVocabularyReport:
    """How well an LM's words fit a tokenizer (see :func:`check_lm_vocabulary`)."""

    lm: str                              # the LM's name (path) for messages
    words: int                           # LM words, without <s>, </s>, <unk>
    unspellable: int                     # words with a character that no token holds: the model never writes them
    upper_case: int                      # of those, words the tokenizer could spell in lower case
    missing_chars: tuple[str, ...]       # characters of LM words no token holds, the most frequent first
    examples: tuple[str, ...]            # a few unspellable words

    @property
    def oov_rate(self) -> float:
        """Share of the LM's words the model cannot produce (they are out of the model's vocabulary)."""
        return self.unspellable / self.words if self.words else 0.0

    @property
    def unusable(self) -> bool:
        """No LM word can be spelled: beam search with this LM would score only unknown words."""
        return self.words > 0 and self.unspellable == self.words

    def message(self) -> str:
        text = (f"language model {self.lm}: {self.unspellable} of its {self.words} words ({100 * self.oov_rate:.1f}%) "
                f"cannot be spelled by the model's tokenizer (characters it lacks: "
                f"{' '.join(repr(c) for c in self.missing_chars[:10])}; e.g. {', '.join(self.examples)})")
        if self.upper_case:
            text += (f"; {self.upper_case} of them are upper-case words the model writes in lower case: build the "
                     "LM from normalised text (slimasr lm build without --no-normalize)")
        return text


def check_lm_vocabulary(words: Iterable[str], pieces: Sequence[str], lm: str = "LM",
                        examples: int = 5) -> LMVocabularyReport:
    """Compare an LM's words with what a tokenizer can spell.

    A word is spellable when each of its characters occurs in some token piece (special pieces such as
    ``<unk>`` and the ``▁`` mark excluded), which is what a CTC model over these pieces can emit.

    Args:
        words: the LM's unigrams (:func:`load_unigrams`).
        pieces: the tokenizer's pieces by id (``Vocabulary.symbols``, ``tokens.txt`` order).
        lm: the LM's name for messages.
    """
    alphabet = set("".join(p for p in pieces if not (p.startswith("<") and p.endswith(">"))))
    alphabet.discard(WORD_BOUNDARY)
    n = unspellable = upper = 0
    missing: Counter[str] = Counter()
    bad: list[str] = []
    for w in words:
        if w in _SPECIAL_WORDS:
            continue
        n += 1
        lacking = [c for c in w if c not in alphabet]
        if not lacking:
            continue
        unspellable += 1
        missing.update(lacking)
        if len(bad) < examples:
            bad.append(w)
        if w != w.lower() and all(c in alphabet for c in w.lower()):
            upper += 1
    return LMVocabularyReport(lm, n, unspellable, upper, tuple(c for c, _ in missing.most_common()), tuple(bad))


def _run(cmd: list[str], what: str) -> None:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise RuntimeError(f"{what} failed (exit status {proc.returncode}):\n{tail}")
    log.debug("%s output:\n%s", what, proc.stderr)


def build_lm(
    text: str | os.PathLike,
    out: str | os.PathLike,
    order: int = 4,
    *,
    normalize: bool = True,
    memory: str = "10%",
    discount_fallback: bool = True,
    prune: tuple[int, ...] | None = None,
) -> Path:
    """Estimate a word n-gram LM with ``lmplz`` and write it as ARPA (``.arpa``) or KenLM binary (``.bin``).

    Args:
        text: a UTF-8 text file, one sentence a line.
        out: ``*.arpa`` or ``*.bin`` (a ``.bin`` also gets ``*.unigrams.txt``, see the module docstring).
        order: n-gram order (the paper: 4).
        normalize: apply :func:`~slimasr.tokenizer.normalize_text` to each line (as the tokenizer and the
            scorer do); otherwise only whitespace is collapsed. Empty lines are dropped.
        memory: ``lmplz -S`` sorting memory (GNU sort syntax, e.g. ``10%`` or ``1G``).
        discount_fallback: pass ``--discount_fallback``, which small corpora need (lmplz otherwise refuses
            when the Kneser-Ney discounts cannot be estimated); it changes nothing for large corpora.
        prune: optional ``--prune`` thresholds per order (e.g. ``(0, 0, 1, 1)``).

    Returns:
        ``out``.

    Raises:
        ValueError: missing, binary or empty text, bad order or suffix.
        KenLMToolMissing: lmplz (or build_binary for ``.bin``) not installed.
        RuntimeError: lmplz or build_binary failed (their message is included).
    """
    from .tokenizer import normalize_text

    text, out = Path(text), Path(out)
    if out.suffix not in LM_SUFFIXES:
        raise ValueError(f"--out {out}: expected a .arpa or .bin file name")
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if not text.is_file():
        raise ValueError(f"text file {text} does not exist (expected UTF-8 text, one sentence a line)")
    with open(text, "rb") as f:                      # stray bad bytes are replaced below; a binary file is refused
        if b"\x00" in f.read(1 << 16):
            raise ValueError(f"text file {text} is binary (it holds NUL bytes); expected UTF-8 text, one sentence "
                             "a line")
    lmplz = find_kenlm_tool("lmplz")
    build_binary = find_kenlm_tool("build_binary") if out.suffix == ".bin" else None
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=".lm-", dir=out.parent) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n = 0
        with open(text, encoding="utf-8", errors="replace") as src, open(corpus, "w", encoding="utf-8") as dst:
            for line in src:
                line = normalize_text(line) if normalize else " ".join(line.split())
                if line:
                    dst.write(line + "\n")
                    n += 1
        if n == 0:
            raise ValueError(f"text file {text} has no usable sentences (empty after normalisation)")
        arpa = out if out.suffix == ".arpa" else Path(tmp) / "lm.arpa"
        cmd = [str(lmplz), "-o", str(order), "-S", memory, "-T", tmp + os.sep, "--text", str(corpus),
               "--arpa", str(arpa)]
        if discount_fallback:
            cmd.append("--discount_fallback")
        if prune:
            cmd += ["--prune", *map(str, prune)]
        _run(cmd, "lmplz")
        if build_binary is not None:
            _run([str(build_binary), "-S", memory, "-T", tmp + os.sep, str(arpa), str(out)], "build_binary")
            words = load_unigrams(arpa) or []
            unigrams_path(out).write_text("".join(w + "\n" for w in words), encoding="utf-8")
    log.info("%d-gram LM from %d sentences -> %s", order, n, out)
    return out
