"""slimasr: make Conformer speech recognizers smaller and faster, and ship them.

``import slimasr`` is light: torch is imported only when a model function is first used, so the torch-free
runtime (``slimasr.runtime``) can be imported without it.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["build_model", "load_model", "__version__"]


def __getattr__(name: str):
    if name in ("build_model", "load_model"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'slimasr' has no attribute {name!r}")
