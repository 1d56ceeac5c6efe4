"""Weight-space averaging of model checkpoints: checkpoint averaging and WiSE-FT interpolation.

Checkpoint averaging (the mean of the last N epoch checkpoints of one run) is what ASR toolkits ship after training:
WeNet ``wenet/bin/average_model.py``, ESPnet ``espnet2/main_funcs/average_nbest_models.py``, icefall
``icefall/checkpoint.py:average_checkpoints``. With weights, the same operation interpolates a fine-tuned model with
the model it started from (weight-space ensembling, WiSE-FT: Wortsman et al., "Robust fine-tuning of zero-shot
models", CVPR 2022: ``theta = (1 - alpha) * theta_init + alpha * theta_finetuned``), which keeps most of the
fine-tune's gain on the new data and much of the initial model's accuracy on the old data.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from ..fileutil import file_sha256
from .asr import ASRModel, read_model_checkpoint

__all__ = ["average_checkpoints", "describe_provenance", "normalise_weights"]

# ModelConfig fields that only steer training (regularisation, loss weights, dynamic chunk sampling, the preset's
# name): models that differ only in these compute the same function of the same weights and may be averaged; the
# output takes them from the last model. Every other field is architecture and must match.
_TRAINING_ONLY_FIELDS = frozenset({
    "name", "dropout", "attention_dropout", "ctc_weight", "intermediate_ctc_weight", "label_smoothing",
    "dynamic_chunk", "full_context_prob", "max_chunk_size", "dynamic_left_chunks", "max_left_chunks",
    "limited_left_prob"})


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``weights`` scaled to sum 1 (uniform ``1/n`` when None).

    Raises:
        ValueError: a count other than ``n``, a negative, NaN or infinite weight, or all weights zero.
    """
    if n < 1:
        raise ValueError("nothing to average: give at least one model")
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weight(s) for {n} model(s); give one weight per model")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"weights must be finite and non-negative, got {bad[0]}")
    total = math.fsum(weights)
    if total <= 0:
        raise ValueError("weights are all zero; at least one model needs a positive weight")
    return [w / total for w in weights]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _differences(a: dict, b: dict, skip=frozenset()) -> str:
    """``"key a vs b, ..."`` for the first fields (nested ones dotted) in which the dicts differ."""
    a, b = _flat(a), _flat(b)
    keys = sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))

    def short(v) -> str:
        r = repr(v)
        return r if len(r) <= 40 else r[:37] + "..."

    return ", ".join(f"{k} {short(a.get(k))} vs {short(b.get(k))}" for k in keys[:4]) + (", ..." if len(keys) > 4
                                                                                        else "")


def _check_compatible(model: ASRModel, ref: ASRModel, path: Path, ref_path: Path, ref_tok_digest: str) -> None:
    """ValueError naming ``path`` and the first things in which ``model`` differs from ``ref``. Equal architecture
    fields mean equal weight names and shapes: ``ASRModel.from_checkpoint_dict`` loads every file strictly."""
    diff = _differences(model.config.to_dict(), ref.config.to_dict(), _TRAINING_ONLY_FIELDS)
    if diff:
        raise ValueError(f"{path}: architecture differs from {ref_path} ({diff})")
    if model.frontend != ref.frontend:
        diff = _differences(model.frontend.to_dict(), ref.frontend.to_dict())
        raise ValueError(f"{path}: front-end differs from {ref_path} ({diff})")
    if _digest(model.tokenizer_bytes) != ref_tok_digest:
        raise ValueError(f"{path}: tokenizer differs from {ref_path} (the models map token ids to different "
                         "pieces; averaging them is meaningless)")


def _digest(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest() if data else ""


def average_checkpoints(paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None) -> ASRModel:
    """The weighted average of the weights of slimasr model files (checkpoint averaging, WiSE-FT interpolation).

    Every floating-point tensor of the state dict (parameters, CMVN and other float buffers) becomes
    ``sum_i w_i * theta_i`` computed in float32 (half-precision files are widened first), with ``w`` the weights
    normalised to sum 1; integer buffers (e.g. a BatchNorm's ``num_batches_tracked``) are taken from the last model.
    Models are read one at a time, so memory holds about three models whatever the count. Settings that only steer
    training (dropout, loss weights, dynamic chunk sampling) are taken from the last model.

    Args:
        paths: model files (``ASRModel.save``, ``slimasr import``) or training checkpoints
            (``checkpoints/step-*.pt``, whose ``model`` entry is used); the same file may appear more than once.
        weights: one non-negative weight per path (any scale; normalised to sum 1), default uniform. For WiSE-FT
            pass ``(1 - alpha, alpha)`` for ``(initial, fine-tuned)``.
    Returns:
        an :class:`ASRModel` in eval mode on the CPU, with float32 weights, the tokenizer and front-end of the
        inputs, and ``source = {"operation": "average", "inputs": [{"name", "sha256", "weight"[, "source"]}, ...]}``
        (file names, not paths; an input's own ``source``, e.g. an importer's, is kept).
    Raises:
        FileNotFoundError: a missing file.
        ValueError: an unreadable or damaged file, a wrong number of weights, a negative/NaN weight, all weights
            zero, or a model whose architecture, front-end, tokenizer, or weight names/shapes differ from the
            first's. Each message is one line and names the file.
    """
    paths = [Path(p) for p in paths]
    w = normalise_weights(weights, len(paths))
    inputs = []
    ref = ref_tok = avg = model = None
    for path, wi in zip(paths, w):
        model = ASRModel.from_checkpoint_dict(read_model_checkpoint(path), source=str(path))
        state = model.state_dict()
        if ref is None:
            ref, ref_tok = model, _digest(model.tokenizer_bytes)
            avg = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in state.items() if v.is_floating_point()}
        else:
            _check_compatible(model, ref, path, paths[0], ref_tok)
        for k, acc in avg.items():
            acc.add_(state[k].float(), alpha=wi)
        inputs.append({"name": path.name, "sha256": file_sha256(path), "weight": wi,
                       **({"source": model.source} if model.source is not None else {})})
    # the last model carries the integer buffers and the training-only settings
    model.load_state_dict({**model.state_dict(), **avg}, strict=True)
    model.source = {"operation": "average", "inputs": inputs}
    return model.eval()


def describe_provenance(source: dict | None) -> list[str]:
    """``ASRModel.source`` as lines for people (``slimasr info``, ``slimasr average``).

    An average (:func:`average_checkpoints`' record) gives a header and one ``WEIGHT  NAME  sha256 PREFIX`` line per
    input (16 hex digits of the sha256), an input's own provenance indented below it; an imported model's record
    (``toolkit``, ``version``, files and their sha256, see :mod:`slimasr.importers`) is given as JSON; a model
    without a record (what ``slimasr train`` writes) says so.
    """
    import json

    if not source:
        return ["source: none recorded (models written by `slimasr train` carry none; `slimasr average` and "
                "`slimasr import` record theirs)"]
    if source.get("operation") != "average" or not isinstance(source.get("inputs"), list):
        return [f"source: {json.dumps(source, default=str)}"]
    inputs = source["inputs"]
    lines = [f"source: weight-space average (slimasr average) of {len(inputs)} model(s): weight, file, sha256"]
    for item in inputs:
        lines.append(f"  {item.get('weight', float('nan')):.4f}  {item.get('name')}  "
                     f"sha256 {str(item.get('sha256'))[:16]}")
        if item.get("source"):
            lines += ["      " + line for line in describe_provenance(item["source"])]
    return lines
