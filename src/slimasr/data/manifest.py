"""Manifests: one JSON object per line with ``audio_filepath``, ``duration`` (seconds), ``text``, and optionally
``offset`` (seconds into the file where the utterance starts, e.g. a Kaldi segment), ``speaker`` and ``utt_id``
(other keys are kept as they are).

The path rule, followed by every command that writes or reads a manifest:

* **On disk** an ``audio_filepath`` is either absolute or relative to the folder that holds the manifest (never
  to the working directory of whoever wrote it).
* :func:`read_manifest` resolves relative paths against the manifest's folder and returns absolute paths.
* :func:`write_manifest` takes paths as the calling process uses them (absolute, or relative to the working
  directory, or to ``base``) and stores a file inside the manifest's folder (at any depth) relative to it, any
  other file as an absolute path.

So a manifest moved or copied together with its audio (the folder holding both) keeps working, and a manifest
pointing at a corpus elsewhere keeps working wherever the manifest goes.

An utterance with ``offset`` is the stretch ``[offset, offset + duration)`` of its file, read lazily (the audio
is never copied); :func:`utterance_key` names it uniquely (several utterances share one file).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["ManifestError", "no_utterances", "read_manifest", "read_manifest_skipping", "write_manifest",
           "utterance_key", "load_utterance"]

log = logging.getLogger(__name__)

REQUIRED = ("audio_filepath", "duration", "text")


class ManifestError(ValueError):
    """A manifest or Kaldi data directory is malformed; the message names the file (and line).

    ``where`` is that place (``path:line``, or the row for :func:`write_manifest`) when the error is about one row.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


def _check_row(row: object, where: str) -> dict:
    def bad(reason: str) -> ManifestError:
        return ManifestError(f"{where}: {reason}", where)

    if not isinstance(row, dict):
        raise bad(f"expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    if not isinstance(row["audio_filepath"], str) or not row["audio_filepath"]:
        raise bad("audio_filepath must be a non-empty string")
    if not isinstance(row["text"], str):
        raise bad("text must be a string")
    for key in ("duration", "offset"):
        d = row.get(key, 0.0)
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 0:
            raise bad(f"{key} must be a non-negative number of seconds, got {d!r}")
    return row


def read_manifest(path: str | os.PathLike, resolve: bool = True,
                  skipped: list[ManifestError] | None = None) -> list[dict]:
    """Read a JSON-lines manifest; blank lines are ignored.

    Args:
        resolve: make relative ``audio_filepath`` values absolute, relative to the manifest's directory.
        skipped: batch jobs pass a list: each malformed row's :class:`ManifestError` (``where`` = ``path:line``)
            is appended to it and reading goes on, so one bad row does not stop the others.

    Raises:
        ManifestError: the file does not exist; without ``skipped``, naming the file and line of the first
            malformed row (not UTF-8, bad JSON, a missing key, a bad type).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    base = path.resolve().parent
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ManifestError(f"{where}: not UTF-8 text (a manifest is JSON lines; to transcribe audio "
                                        "files use `slimasr transcribe`)", where) from None
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})", where) from None
                row = _check_row(row, where)
            except ManifestError as e:
                if skipped is None:
                    raise
                skipped.append(e)
                continue
            row["duration"] = float(row["duration"])
            if "offset" in row:
                row["offset"] = float(row["offset"])
            if resolve and not os.path.isabs(row["audio_filepath"]):
                row["audio_filepath"] = str(base / row["audio_filepath"])
            rows.append(row)
    return rows


def no_utterances(path: str | os.PathLike, skipped: Sequence[ManifestError] = ()) -> ValueError:
    """The error for a manifest without a usable row: ``"manifest PATH has no utterances (N malformed rows
    skipped, the first: ...)"``."""
    why = f" ({len(skipped)} malformed rows skipped, the first: {skipped[0]})" if skipped else ""
    return ValueError(f"manifest {path} has no utterances{why}")


def read_manifest_skipping(path: str | os.PathLike, resolve: bool = True) -> list[dict]:
    """:func:`read_manifest` for batch jobs: each malformed line is logged as a warning (``skipped path:line:
    why``) and left out; the other rows are returned.

    Raises:
        ManifestError: the file does not exist.
    """
    bad: list[ManifestError] = []
    rows = read_manifest(path, resolve, skipped=bad)
    for e in bad:
        log.warning("skipped %s", e)
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping], base: str | os.PathLike | None = None) -> Path:
    """Write rows as JSON lines (atomically: a temporary file renamed into place), following the path rule above.

    Args:
        rows: manifest rows; a relative ``audio_filepath`` is taken relative to ``base``.
        base: the folder relative ``audio_filepath`` values of ``rows`` refer to [default: the working directory].

    Returns:
        ``path``. Audio inside the manifest's folder is stored relative to it, anything else absolute.

    Raises:
        ManifestError: a row misses a key or has a bad type (named by its index).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.resolve().parent
    base = Path(base).resolve() if base is not None else Path.cwd()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            row = _check_row(dict(row), f"row {i} for {path}")
            audio = Path(os.path.abspath(base / row["audio_filepath"]))  # keeps symbolic links as they are
            try:
                row["audio_filepath"] = audio.relative_to(folder).as_posix()
            except ValueError:
                row["audio_filepath"] = str(audio)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def format_duration(seconds: float) -> str:
    """An amount of audio for people: hours (``"2.00 h"``) from 0.1 h up, else minutes from one minute
    (``"1.5 min"``), else seconds (``"1.0 s"``), so a short set never reads ``"0.00 h"``."""
    if seconds >= 360:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def utterance_key(row: Mapping) -> str:
    """A string naming a row's audio uniquely: the path, plus ``@offset+duration`` for a part of a file."""
    if "offset" not in row:
        return str(row["audio_filepath"])
    return f"{row['audio_filepath']}@{float(row['offset']):.4f}+{float(row['duration']):.4f}"


def load_utterance(row: Mapping, sample_rate: int = 16000):
    """The samples of one manifest row: the whole file, or ``[offset, offset + duration)`` of it.

    Only the utterance's frames are read from the file (``soundfile`` seeks), so a long recording cut into many
    segments is never read whole. Mono mix-down and resampling are :mod:`slimasr.audio`'s.

    Returns:
        float32 ``(S,)`` mono numpy array at ``sample_rate``.

    Raises:
        ValueError: (:class:`slimasr.audio.AudioError`) the file is missing or unreadable, the stretch lies
            outside the file or is empty, or the samples are bad; the message names the file (and the stretch).
    """
    from slimasr.audio import load_audio, read_audio, resample, to_float_mono

    path = str(row["audio_filepath"])
    if "offset" not in row:
        return load_audio(path, sample_rate)
    offset, duration = float(row["offset"]), float(row["duration"])
    where = f"audio file {path} [{offset:.3f} s, {offset + duration:.3f} s)"
    x, sr = read_audio(path, where, offset, duration)              # (S, C)
    return resample(to_float_mono(x, where), sr, sample_rate)
