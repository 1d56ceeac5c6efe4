"""Small torch-free file helpers shared by the commands."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where slimasr keeps what it makes once and reuses (ONNX exports, TensorRT engines, KenLM tools).

    ``$SLIMASR_CACHE`` if set; else ``$XDG_CACHE_HOME/slimasr`` when ``XDG_CACHE_HOME`` is an absolute path (the XDG
    Base Directory Specification ignores relative ones); else ``~/.cache/slimasr``. Not created here.
    """
    if os.environ.get("SLIMASR_CACHE"):
        return Path(os.environ["SLIMASR_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "slimasr"
