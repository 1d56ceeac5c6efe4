"""Small torch-free file helpers shared by the commands."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Sequence


def exception_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when the message is empty), cut to ``limit``
    characters: how one-line errors quote what a library raised."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if limit is None else text[:limit]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def writable_output(path: str | os.PathLike, what: str, folder: bool = False,
                    inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """Check, before any work is done, that a command can write ``path`` (a file, or with ``folder`` a directory of
    files): it is none of the command's ``inputs``, and its folder is created if needed and must be writable.

    Args:
        what: how the error names the path, e.g. the option ``"--out"``.
        inputs: the files the command reads (None entries are ignored); checked before anything is created.
    Returns:
        ``path`` as a Path.
    Raises:
        ValueError: ``"--out PATH is also an input (INPUT); ..."`` (by any path: symbolic or hard link, ``./``),
            or ``"--out PATH: ..."``: the folder cannot be created or written, or a file path is a directory.
    """
    for p in inputs:
        if p is not None and same_file(path, p):
            raise ValueError(f"{what} {path} is also an input ({p}); writing it would replace that input: choose "
                             f"another file name")
    path = Path(path)
    d = path if folder else path.parent
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        file = next((a for a in (d, *d.parents) if a.exists() and not a.is_dir()), None)   # "File exists" says less
        why = f"{file} is a file, not a folder" if file is not None else e.strerror or e
        raise ValueError(f"{what} {path}: cannot create the folder {d} ({why})") from None
    if not folder and path.is_dir():
        raise ValueError(f"{what} {path} is a directory; expected a file name")
    try:                    # a real write: permission bits say nothing for root, read-only mounts or /proc
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path}: the folder {d} is not writable ({e.strerror or e})") from None
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same inode when both exist (symbolic and hard links, ``./x`` and
    ``x``), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def cache_dir() -> Path:
    """Where slimasr keeps what it makes once and reuses (ONNX exports, TensorRT engines, KenLM tools).

    ``$SLIMASR_CACHE`` if set; else ``$XDG_CACHE_HOME/slimasr`` when ``XDG_CACHE_HOME`` is an absolute path (the XDG
    Base Directory Specification ignores relative ones); else ``~/.cache/slimasr``. Not created here.
    """
    if os.environ.get("SLIMASR_CACHE"):
        return Path(os.environ["SLIMASR_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "slimasr"
