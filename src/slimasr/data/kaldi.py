"""Import a Kaldi data directory (``wav.scp``, ``text``, optional ``segments`` and ``utt2spk``) as manifest rows.

Follows Kaldi's data-directory conventions (kaldi-asr.org/doc/data_prep.html):

* ``wav.scp``: ``<recording-id> <audio file>``. Without ``segments`` every recording is one utterance and the
  recording id is the utterance id.
* ``segments``: ``<utterance-id> <recording-id> <start s> <end s>`` (an end of ``-1`` means the end of the
  recording). Each segment becomes a row with ``offset`` and ``duration``; the audio stays in the recording and
  is read lazily (:func:`slimasr.data.manifest.load_utterance`), never copied.
* ``text``: ``<utterance-id> <transcript>`` (an empty transcript is allowed); ``utt2spk``: the speaker.

Piped entries (``sox in.flac -t wav - |``) and extended filenames (``archive.ark:123``) are **refused by name**,
not run: running shell commands found in a data file is not something an importer should do behind the user's
back, and the training loader reads files lazily many times over. Convert them once, e.g.
``wav-copy scp:wav.scp ark,scp:wavs.ark,wav_files.scp`` or a shell loop writing ``.wav`` files, and rewrite
``wav.scp``.

Every line that cannot become an utterance is skipped, counted by reason and named (:class:`KaldiImport`); the
import fails only when nothing usable is left, and then says why in terms of the files involved.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import ManifestError

__all__ = ["KaldiImport", "import_kaldi", "SKIP_REASONS"]

log = logging.getLogger(__name__)

# reason -> how the report words it
SKIP_REASONS = {
    "piped": "wav.scp entries that are piped commands or extended filenames (refused: convert them to files)",
    "unreadable": "recordings whose audio file is missing or unreadable",
    "no_audio": "transcripts in text with no audio (not in wav.scp or segments)",
    "no_text": "utterances with audio but no transcript in text",
    "unknown_recording": "segments naming a recording that is not in wav.scp",
    "bad_segment": "segments with bad times (start < 0, end <= start, or past the end of the recording)",
    "unsegmented": "recordings in wav.scp that no segment uses",
}

_END_SLACK_S = 0.05  # a segment may end this much past the recording's end (rounding in segment files)


@dataclass
class KaldiImport:
    """What :func:`import_kaldi` found: the usable ``rows`` and, per reason of :data:`SKIP_REASONS`, the ids of
    the lines it skipped (utterance ids, or recording ids for ``piped``, ``unreadable``, ``unsegmented``)."""

    rows: list[dict]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    segmented: bool = False

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def skip_lines(self, examples: int = 3) -> list[str]:
        """One line per reason: count, meaning, the first few ids."""
        out = []
        for reason, ids in self.skipped.items():
            if ids:
                more = ", ..." if len(ids) > examples else ""
                out.append(f"{len(ids)} {SKIP_REASONS[reason]}: {', '.join(ids[:examples])}{more}")
        return out


def _read_table(path: Path, min_fields: int = 2, what: str = "<utterance-id> <value>") -> dict[str, str]:
    """``<id> <rest of the line>`` per non-blank line; a duplicate id or a short line is an error naming the line."""
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) < min_fields:
                raise ManifestError(f"{path}:{lineno}: expected '{what}', got {line!r}")
            if parts[0] in table:
                raise ManifestError(f"{path}:{lineno}: duplicate id {parts[0]!r}")
            table[parts[0]] = parts[1] if len(parts) > 1 else ""
    return table


def _read_segments(path: Path) -> dict[str, tuple[str, float, float]]:
    segs = {}
    for utt, rest in _read_table(path, what="<utterance-id> <recording-id> <start> <end>").items():
        f = rest.split()
        try:
            if len(f) != 3:
                raise ValueError
            segs[utt] = (f[0], float(f[1]), float(f[2]))
        except ValueError:
            raise ManifestError(f"{path}: segment {utt!r}: expected '<utterance-id> <recording-id> <start> <end>' "
                                f"(times in seconds), got {utt} {rest!r}") from None
    return segs


def _is_piped(value: str) -> bool:
    """A piped command (``cmd |``, ``| cmd``) or a Kaldi extended filename (``foo.ark:123``, ``-``)."""
    v = value.strip()
    if v.endswith("|") or v.startswith("|") or v == "-":
        return True
    head, sep, tail = v.rpartition(":")
    return bool(sep and head and tail.isdigit() and head.endswith(".ark"))


def import_kaldi(data_dir: str | os.PathLike) -> KaldiImport:
    """Rows (``audio_filepath``, ``duration``, ``text``, ``utt_id``, ``speaker`` and with ``segments``
    ``offset``) from a Kaldi data directory; see the module docstring for what is read and what is skipped.

    Durations come from the audio headers (``soundfile.info``), or from the segment times. Relative paths in
    ``wav.scp`` are taken relative to the data directory; row paths are absolute or relative to the working
    directory (:func:`slimasr.data.manifest.write_manifest` stores them by the manifest path rule).

    Raises:
        ManifestError: ``wav.scp`` or ``text`` is missing, a file is malformed (named with its line), or no
            utterance is usable (the message gives every reason with counts and examples).
    """
    import soundfile as sf

    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).is_file():
            raise ManifestError(f"{d} is not a Kaldi data directory: {d / name} is missing (need wav.scp and text)")
    recordings = _read_table(d / "wav.scp", what="<recording-id> <audio file>")
    texts = _read_table(d / "text", min_fields=1)   # an empty transcript is allowed
    spk = _read_table(d / "utt2spk") if (d / "utt2spk").is_file() else {}
    segmented = (d / "segments").is_file()
    result = KaldiImport(rows=[], skipped={k: [] for k in SKIP_REASONS}, segmented=segmented)
    skip = result.skipped

    # recordings: path and length (None: unusable, counted once per recording)
    rec_path: dict[str, Path | None] = {}
    rec_len: dict[str, float] = {}
    for rec, value in recordings.items():
        if _is_piped(value):
            skip["piped"].append(rec)
            rec_path[rec] = None
            continue
        p = Path(value.strip())
        p = p if p.is_absolute() else d / p
        try:
            info = sf.info(str(p))
        except Exception as e:
            log.warning("%s: recording %r: cannot read audio file %s (%s)", d / "wav.scp", rec, p, e)
            skip["unreadable"].append(rec)
            rec_path[rec] = None
            continue
        rec_path[rec], rec_len[rec] = p, info.frames / info.samplerate

    if segmented:
        segments = _read_segments(d / "segments")
        used = set()
        utts = []
        for utt, (rec, start, end) in segments.items():
            if rec not in recordings:
                skip["unknown_recording"].append(utt)
                continue
            used.add(rec)
            utts.append((utt, rec, start, end))
        skip["unsegmented"] = [r for r in recordings if r not in used]
    else:
        utts = [(rec, rec, None, None) for rec in recordings]

    have_audio = {u for u, *_ in utts} | set(skip["unknown_recording"])
    skip["no_audio"] = [u for u in texts if u not in have_audio]
    for utt, rec, start, end in utts:
        if rec_path[rec] is None:
            continue  # counted under its recording
        if utt not in texts:
            skip["no_text"].append(utt)
            continue
        row = {"audio_filepath": str(rec_path[rec]), "text": texts[utt], "utt_id": utt}
        if start is None:
            row["duration"] = round(rec_len[rec], 4)
        else:
            length = rec_len[rec]
            stop = length if end < 0 else end
            if start < 0 or stop <= start or start >= length or stop > length + _END_SLACK_S:
                skip["bad_segment"].append(utt)
                continue
            row["offset"], row["duration"] = round(start, 4), round(min(stop, length) - start, 4)
        if utt in spk:
            row["speaker"] = spk[utt]
        result.rows.append(row)
    result.skipped = {k: v for k, v in skip.items() if v}
    for line in result.skip_lines():
        log.warning("%s: skipped %s", d, line)
    if not result.rows:
        files = "wav.scp, segments and text" if segmented else "wav.scp and text"
        why = "; ".join(result.skip_lines()) or "the files hold no entries"
        raise ManifestError(f"{d}: no usable utterance in {files}: {why}")
    return result
