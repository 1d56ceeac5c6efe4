"""One cache of ONNX exports made on demand from slimasr model files (``.pt``), shared by every command.

``slimasr serve`` without ``--model``, ``slimasr decode`` / ``bench`` / ``transcribe`` with a ``.pt`` model and a
runtime backend, and ``slimasr demo`` export the model once and reuse the export: :func:`cached_onnx_export`.

**Location.** ``exports_dir()`` = :func:`slimasr.fileutil.cache_dir` ``/ exports``: ``$SLIMASR_CACHE/exports``,
else ``$XDG_CACHE_HOME/slimasr/exports``, else ``~/.cache/slimasr/exports``. Each entry is a directory
``<kind>-<key[:16]>`` (say ``streaming-c16-l4-int8-3f0c9a1e5b7d2468``) holding an ordinary export
(:func:`slimasr.export.onnx.export_onnx`'s files) and ``slimasr_cache.json``.

**Key** (:func:`export_key`): SHA-256 over the model file's SHA-256, the slimasr version, the SHA-256 of the
package sources that decide what an export contains (:data:`EXPORT_CODE`, :func:`export_code_digest`) and the
export kind (:class:`ExportKind`: offline, or streaming with its chunk size and left context; with or without int8;
for servers, with or without the batched streaming graph). A new model file, kind, version or export code gives a
new entry; an export written by other code is never used.

**Integrity.** ``slimasr_cache.json`` is written last and records the key and every file's size and SHA-256; an
entry whose record is missing, unreadable, for another key, or whose files differ from it (truncated, edited,
deleted) is rebuilt, never used.

**Concurrency.** Writers serialise on a lock file per entry (``.<entry>.lock``, an OS file lock, released when
its process ends, so a killed exporter leaves no stale lock); an export is built in a temporary directory beside
the entry and renamed into place, so a reader sees a whole entry or none, and a second process asking for an
entry that is being built waits for it instead of exporting again.

Torch-free: torch is imported only when an export is built in this process (``separate_process=False``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..fileutil import cache_dir, file_sha256
from ..runtime.session import EXPORT_CONFIG_FILE

__all__ = ["EXPORT_CODE", "ExportKind", "cached_onnx_export", "default_model_file", "export_code_digest",
           "export_key", "exports_dir"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "slimasr_cache.json"
MANIFEST_FORMAT = "slimasr-export-cache"
# Package sources (under slimasr/) that decide what an export of a .pt model contains: the graph and its
# metadata (export/, model/, chunking.py), the front-end and vocabulary written with it (features.py, frontends.py,
# audio.py, tokenizer.py) and the file helpers they use (fileutil.py). A test checks that everything the exporter
# imports from slimasr is listed.
EXPORT_CODE = ("export", "model", "chunking.py", "features.py", "frontends.py", "audio.py", "tokenizer.py",
               "fileutil.py")


@dataclass(frozen=True)
class ExportKind:
    """Which export of a model: the arguments of :func:`slimasr.export.onnx.export_onnx` that change its files."""

    streaming: bool = False     # the streaming (chunk-by-chunk) graph instead of the offline one
    chunk_size: int = 16        # streaming: encoder frames per chunk (ignored offline)
    left_chunks: int = 4        # streaming: chunks of left context (ignored offline)
    int8: bool = True           # also write model.int8.onnx (the runtime's and sherpa-onnx's int8 backends)
    batched: bool = False       # streaming: also write model.batched.onnx (slimasr.export.batched; servers)

    def __post_init__(self):
        if self.streaming and (self.chunk_size < 1 or self.left_chunks < 0):
            raise ValueError(f"a streaming export needs chunk_size >= 1 and left_chunks >= 0, got "
                             f"{self.chunk_size} and {self.left_chunks}")

    @property
    def name(self) -> str:
        """``offline`` or ``streaming-c{C}-l{L}``, with ``-int8`` when int8; part of the key and the entry name."""
        base = f"streaming-c{self.chunk_size}-l{self.left_chunks}" if self.streaming else "offline"
        return base + ("-int8" if self.int8 else "") + ("-batched" if self.batched and self.streaming else "")

    def export_args(self) -> dict:
        """Keyword arguments of :func:`slimasr.export.onnx.export_onnx`."""
        return {"streaming": self.streaming, "chunk_size": self.chunk_size, "left_chunks": self.left_chunks,
                "int8": self.int8}

    def cli_args(self) -> list[str]:
        """The same as ``slimasr export onnx`` options."""
        args = ["--streaming", "--chunk-size", str(self.chunk_size), "--left-chunks", str(self.left_chunks)] \
            if self.streaming else []
        return args + (["--int8"] if self.int8 else []) + (["--batched"] if self.batched and self.streaming else [])


def exports_dir() -> Path:
    """Where cached exports live: ``cache_dir() / "exports"`` (see the module docstring)."""
    return cache_dir() / "exports"


def default_model_file() -> Path:
    """The embedded default model's file (``slimasr.model.default_model_path()``), found without importing torch."""
    return Path(__file__).resolve().parent.parent / "assets" / "default" / "model.pt"


def export_code_digest() -> str:
    """Hex SHA-256 of the package sources listed in :data:`EXPORT_CODE` (file names and bytes, sorted)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for name in EXPORT_CODE:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else []:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def export_key(model_file: str | os.PathLike, kind: ExportKind) -> str:
    """Hex SHA-256 keying the export ``kind`` of ``model_file`` (see the module docstring).

    Raises:
        OSError: the model file cannot be read.
    """
    import slimasr

    parts = (file_sha256(model_file), slimasr.__version__, export_code_digest(), kind.name)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _file_record(d: Path) -> dict[str, dict]:
    return {p.relative_to(d).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}


def _entry_problem(entry: Path, key: str) -> str | None:
    """Why ``entry`` is not a usable cached export for ``key`` (None: it is)."""
    if not entry.is_dir():
        return "missing"
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key or not isinstance(files, dict):
            return f"{MANIFEST_FILE} is for another key or format"
        for name, rec in files.items():
            p = entry / name
            if not p.is_file() or p.stat().st_size != rec["size"] or file_sha256(p) != rec["sha256"]:
                return f"{name} differs from {MANIFEST_FILE}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {MANIFEST_FILE} ({type(e).__name__}: {e})"
    return None


def _check_export(d: Path, kind: ExportKind, what: str) -> None:
    """A freshly built export has the description and the files ``kind`` needs (ValueError otherwise)."""
    try:
        config = json.loads((d / EXPORT_CONFIG_FILE).read_text(encoding="utf-8"))
        files = config["files"]
        want = "streaming" if kind.streaming else "offline"
        if config.get("kind") != want:
            raise ValueError(f"kind {config.get('kind')!r}, expected {want!r}")
        needed = ["model"] + (["model_int8"] if kind.int8 else [])
        missing = [k for k in needed if not files.get(k)] + [
            v for v in files.values() if v and not (d / v).is_file()]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"exporting {what} gave no usable export ({EXPORT_CONFIG_FILE}: {e})") from None


def _export_in_process(model, model_file: Path, kind: ExportKind, out: Path) -> None:
    import warnings

    import torch

    from ..model import load_model
    from .onnx import export_onnx

    if model is None:
        model = load_model(model_file)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)   # the tracer's notes on shapes
        export_onnx(model, out, **kind.export_args())
        if kind.batched and kind.streaming:
            from .batched import export_batched_streaming

            export_batched_streaming(model, out)


def _export_in_subprocess(command: list[str], out: Path, what: str) -> None:
    p = subprocess.run([c.replace("{out}", str(out)) for c in command], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"exporting {what} failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")


def cached_onnx_export(model_file: str | os.PathLike | None = None, kind: ExportKind = ExportKind(), *,
                       model=None, root: str | os.PathLike | None = None, separate_process: bool = False,
                       command: list[str] | None = None) -> Path:
    """The ``kind`` ONNX export of a slimasr model file, made once and reused (see the module docstring).

    Args:
        model_file: the ``.pt`` model; its bytes key the cache (default: the embedded model,
            :func:`default_model_file`).
        kind: which export (offline / streaming with its chunking / int8).
        model: the :class:`~slimasr.model.ASRModel` loaded from ``model_file``, if the caller has it (saves loading
            it again when an export is needed); never used to find an entry.
        root: where entries live (default :func:`exports_dir`); created when needed.
        separate_process: build a missing export with ``python -m slimasr.cli export onnx`` in another process, so
            this one never imports torch (``slimasr serve``).
        command: the export command, with ``{out}`` for the directory to write (implies a separate process; tests).
    Returns:
        the entry directory ``root/<kind.name>-<key[:16]>``, a complete export (``slimasr_export.json``,
        ``model.onnx``, ``tokens.txt``, ``model.int8.onnx`` with int8, ...).
    Raises:
        FileNotFoundError: no model file.
        ValueError: the model cannot be exported as asked (from :func:`~slimasr.export.onnx.export_onnx`), or the
            export command wrote no usable export.
        RuntimeError: the export process failed (its error output is in the message).
        OSError: the cache directory cannot be written.
    """
    from filelock import FileLock, Timeout

    src = Path(model_file) if model_file is not None else default_model_file()
    if not src.is_file():
        raise FileNotFoundError(f"model file {src} does not exist (expected a slimasr model, .pt)")
    key = export_key(src, kind)
    root = Path(root) if root is not None else exports_dir()
    entry = root / f"{kind.name}-{key[:16]}"
    if _entry_problem(entry, key) is None:
        return entry
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / f".{entry.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process exporting %s (%s) to %s", src, kind.name, entry)
        lock.acquire()
    try:
        problem = _entry_problem(entry, key)        # another process may have built it meanwhile
        if problem is None:
            return entry
        if problem != "missing":                    # a damaged entry is worth a warning; a first export is not
            log.warning("rebuilding the cached export %s: %s", entry, problem)
        what = f"{src} ({kind.name})"
        log.info("exporting %s to %s (once; later runs reuse it)", what, entry)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
        try:
            out = staging / "export"
            if command is None and separate_process:
                command = [sys.executable, "-m", "slimasr.cli", "export", "onnx", "--model", str(src), "--out",
                           "{out}", *kind.cli_args()]
            if command is not None:
                _export_in_subprocess(command, out, what)
            else:
                _export_in_process(model, src, kind, out)
            _check_export(out, kind, what)
            import slimasr

            manifest = {"format": MANIFEST_FORMAT, "key": key, "kind": kind.name, "model_file": str(src.resolve()),
                        "model_sha256": file_sha256(src), "slimasr_version": slimasr.__version__,
                        "files": _file_record(out)}
            (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            if entry.exists():                      # a damaged entry: move it aside, removed with the staging
                os.replace(entry, staging / "damaged")
            os.replace(out, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()
    return entry
