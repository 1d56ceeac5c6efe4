"""A small test set of real human speech from Debian's ``pocketsphinx-testdata`` (test only, never training).

The package holds a few read-speech recordings with transcripts, as CMU Sphinx's own regression tests use them:

* ``librivox/``: five sentences of *Sense and Sensibility* read by a LibriVox volunteer (64 kbit/s MP3 source,
  16 kHz), transcripts in ``librivox/transcription``;
* ``cards/``: five short utterances naming playing cards ("four queen of clubs"), transcripts in
  ``cards/cards.transcription``.

Transcripts are in Sphinx format (``<s> words </s> (utterance-id)``). :func:`build_real_test` copies the audio as
16 kHz mono int16 wav into a directory and writes ``real.jsonl`` (plus one manifest per source); its rows carry
``speaker`` = the source (``librivox`` or ``cards``). These recordings must never be used for training or tuning:
the figures on them are reported separately from the synthetic test sets.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from slimasr.tokenizer import normalize_text

__all__ = ["REAL_TEST_SOURCES", "RealTestError", "RealTestReport", "build_real_test", "find_testdata"]

log = logging.getLogger(__name__)

TESTDATA_DIRS = ("/usr/share/pocketsphinx/test/data",)
# source -> transcription file, relative to the test-data directory; audio is <source>/<utterance-id>.wav
REAL_TEST_SOURCES = {"librivox": "librivox/transcription", "cards": "cards/cards.transcription"}
_SPHINX_LINE = re.compile(r"^\s*(?:<s>)?\s*(?P<text>.*?)\s*(?:</s>)?\s*\((?P<id>[^()\s]+)\)\s*$")


class RealTestError(RuntimeError):
    """The recordings are not installed or unreadable; the message says what to install."""


@dataclass
class RealTestReport:
    out_dir: str
    utterances: dict[str, int]  # source -> utterances written
    seconds: dict[str, float]  # source -> audio seconds
    skipped: list[str]  # "<path>: <why>" per recording that could not be read

    def summary(self) -> str:
        per = ", ".join(f"{s} {n} utts / {self.seconds[s]:.1f} s" for s, n in self.utterances.items())
        return f"{per}; {len(self.skipped)} skipped -> {self.out_dir}/real.jsonl"


def find_testdata(root: str | os.PathLike | None = None) -> Path:
    """The ``pocketsphinx-testdata`` directory (``root``, ``$SLIMASR_POCKETSPHINX_TESTDATA`` or the Debian path).

    Raises:
        RealTestError: none of them holds the transcription files.
    """
    env = os.environ.get("SLIMASR_POCKETSPHINX_TESTDATA")
    cands = [Path(root)] if root is not None else ([Path(env)] if env else [Path(p) for p in TESTDATA_DIRS])
    for c in cands:
        if any((c / t).is_file() for t in REAL_TEST_SOURCES.values()):
            return c
    raise RealTestError(f"no pocketsphinx test recordings found (looked in {', '.join(map(str, cands))}); "
                        "`make setup` installs them (Debian package pocketsphinx-testdata)")


def parse_sphinx_transcription(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``[(utterance_id, normalised text)]`` from a Sphinx transcription file (``<s> words </s> (id)``).

    Raises:
        RealTestError: a non-blank line is not in that format (file and line named).
    """
    out = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _SPHINX_LINE.match(line)
        if m is None:
            raise RealTestError(f"{path}:{lineno}: expected '<s> words </s> (utterance-id)', got {line!r}")
        out.append((m.group("id"), normalize_text(m.group("text"))))
    return out


def build_real_test(out_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> RealTestReport:
    """Copy the recordings (16 kHz mono int16) into ``out_dir``; write ``real.jsonl`` and ``real_<source>.jsonl``.

    A recording that is missing or unreadable is skipped and named in the report; the rest are written.

    Raises:
        RealTestError: the test data is not installed, or no recording could be read.
    """
    import numpy as np
    import soundfile as sf

    from slimasr.audio import load_audio
    from slimasr.data.manifest import write_manifest

    src = find_testdata(root)
    out = Path(out_dir)
    rows: dict[str, list[dict]] = {}
    skipped: list[str] = []
    for source, trans in REAL_TEST_SOURCES.items():
        if not (src / trans).is_file():
            log.warning("real test: %s has no %s; source %s skipped", src, trans, source)
            continue
        for utt, text in parse_sphinx_transcription(src / trans):
            wav = src / source / f"{utt}.wav"
            try:
                x = load_audio(str(wav), 16000)  # (S,) float32
            except (ValueError, OSError) as e:
                skipped.append(f"{wav}: {e}")
                log.warning("real test: skipping %s: %s", wav, e)
                continue
            rel = f"wavs/{source}/{utt}.wav"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out / rel), np.clip(x, -1.0, 1.0), 16000, subtype="PCM_16", format="WAV")
            rows.setdefault(source, []).append({"audio_filepath": rel, "duration": round(x.shape[0] / 16000, 4),
                                                "text": text, "speaker": source})
    if not rows:
        raise RealTestError(f"no recording in {src} could be read ({len(skipped)} failed)")
    for source, rs in rows.items():
        write_manifest(out / f"real_{source}.jsonl", rs, base=out)   # row paths are relative to out
    write_manifest(out / "real.jsonl", [r for rs in rows.values() for r in rs], base=out)
    return RealTestReport(str(out), {s: len(r) for s, r in rows.items()},
                          {s: sum(x["duration"] for x in r) for s, r in rows.items()}, skipped)
