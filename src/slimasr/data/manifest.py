"""Manifests: one JSON object per line with ``audio_filepath``, ``duration`` (seconds), ``text`` and an optional
``speaker`` (other keys are kept as they are).

Relative ``audio_filepath`` values are resolved against the manifest's directory when reading, so a corpus
directory can be moved as a whole; :func:`write_manifest` can write paths relative to the manifest again.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["ManifestError", "import_kaldi", "read_manifest", "write_manifest"]

log = logging.getLogger(__name__)

REQUIRED = ("audio_filepath", "duration", "text")


class ManifestError(ValueError):
    """A manifest or Kaldi data directory is malformed; the message names the file (and line)."""


def _check_row(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise ManifestError(f"{where}: missing key(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    if not isinstance(row["audio_filepath"], str) or not row["audio_filepath"]:
        raise ManifestError(f"{where}: audio_filepath must be a non-empty string")
    if not isinstance(row["text"], str):
        raise ManifestError(f"{where}: text must be a string")
    d = row["duration"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 0:
        raise ManifestError(f"{where}: duration must be a non-negative number of seconds, got {d!r}")
    return row


def read_manifest(path: str | os.PathLike, resolve: bool = True) -> list[dict]:
    """Read a JSON-lines manifest; blank lines are ignored.

    Args:
        resolve: make relative ``audio_filepath`` values absolute, relative to the manifest's directory.

    Raises:
        ManifestError: naming the file and line of the first malformed row (bad JSON, a missing key, a bad type).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    base = path.resolve().parent
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            row = _check_row(row, where)
            row["duration"] = float(row["duration"])
            if resolve and not os.path.isabs(row["audio_filepath"]):
                row["audio_filepath"] = str(base / row["audio_filepath"])
            rows.append(row)
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping], relative: bool = False) -> Path:
    """Write rows as JSON lines (atomically: a temporary file renamed into place).

    Args:
        relative: write absolute ``audio_filepath`` values relative to the manifest's directory when the file
            lies below it (relative values are written as they are: they are read relative to the manifest).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            row = _check_row(dict(row), f"row {i} for {path}")
            p = Path(row["audio_filepath"])
            if relative and p.is_absolute():
                try:
                    row["audio_filepath"] = p.resolve().relative_to(base).as_posix()
                except ValueError:
                    pass
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _read_kaldi_table(path: Path, need_value: bool = True) -> dict[str, str]:
    table = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if need_value and len(parts) < 2:
                raise ManifestError(f"{path}:{lineno}: expected '<utterance-id> <value>', got {line!r}")
            if parts[0] in table:
                raise ManifestError(f"{path}:{lineno}: duplicate utterance id {parts[0]!r}")
            table[parts[0]] = parts[1] if len(parts) > 1 else ""
    return table


def import_kaldi(data_dir: str | os.PathLike) -> list[dict]:
    """Rows from a Kaldi data directory: ``wav.scp`` (plain file paths) and ``text``, plus ``utt2spk`` if present.

    Durations come from the audio headers (``soundfile.info``). Relative paths in ``wav.scp`` are taken relative to
    the data directory. Utterances missing from ``text``, and audio files that cannot be read, are dropped with a
    warning that names them.

    Raises:
        ManifestError: a missing ``wav.scp``/``text``, a piped command (``... |``) or an extended filename in
            ``wav.scp``, or no usable utterance at all.
    """
    import soundfile as sf

    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise ManifestError(f"{d} is not a Kaldi data directory: {d / name} is missing (need wav.scp and text)")
    wavs = _read_kaldi_table(d / "wav.scp")
    texts = _read_kaldi_table(d / "text", need_value=False)  # an empty transcript is allowed
    spk = _read_kaldi_table(d / "utt2spk") if (d / "utt2spk").is_file() else {}
    rows, no_text, unreadable = [], 0, []
    for utt, value in wavs.items():
        value = value.strip()
        if value.endswith("|") or value.startswith("|"):
            raise ManifestError(
                f"{d / 'wav.scp'}: utterance {utt!r} uses a piped command ({value!r}); only plain audio file paths "
                "are supported. Convert the audio to wav/flac files first (e.g. run the command into files and "
                "rewrite wav.scp)."
            )
        if utt not in texts:
            no_text += 1
            continue
        p = Path(value)
        if not p.is_absolute():
            p = d / p
        try:
            info = sf.info(str(p))
        except Exception as e:  # one unreadable file never fails the import: it is named and skipped
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
            unreadable.append(f"{utt} ({p}: {detail})")
            continue
        row = {"audio_filepath": str(p), "duration": round(info.frames / info.samplerate, 4), "text": texts[utt],
               "utt_id": utt}
        if utt in spk:
            row["speaker"] = spk[utt]
        rows.append(row)
    if no_text:
        log.warning("%s: %d utterances in wav.scp have no transcript in text; dropped", d, no_text)
    if unreadable:
        log.warning("%s: %d audio files cannot be read; dropped: %s", d, len(unreadable), "; ".join(unreadable))
    if not rows:
        raise ManifestError(f"{d}: no utterance is in both wav.scp and text" + (
            f" with readable audio ({len(unreadable)} unreadable: {'; '.join(unreadable[:3])})" if unreadable else ""))
    return rows
