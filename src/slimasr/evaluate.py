"""Decoding a manifest with WER/CER and RTF: :func:`slimasr.decoding.decode_manifest` (kept here for imports)."""
from __future__ import annotations

from .decoding import decode_manifest

__all__ = ["decode_manifest"]
