"""Structural pruning: remove whole Conformer layers from a model."""
from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn

from ..model.asr import ASRModel


def remap_intermediate_positions(positions: Iterable[int], kept: list[int], num_layers_after: int) -> tuple[int, ...]:
    """Map 1-based "after layer p" positions onto a stack that keeps only the layers ``kept`` (0-based, sorted).

    A position follows the last kept layer at or before it; positions that would land before the first layer
    or on the final layer (which already feeds the main CTC) are dropped.
    """
    out = []
    for p in positions:
        q = sum(1 for i in kept if i < p)
        if 1 <= q < num_layers_after and q not in out:
            out.append(q)
    return tuple(sorted(out))


def remove_layers(model: ASRModel, layer_indices: Iterable[int]) -> ASRModel:
    """A new model without the encoder layers ``layer_indices`` (0-based indices into ``model``'s current stack).

    The input model is not modified. The new config records the kept layers as indices of the *original*
    (unpruned) stack in ``original_layers``, has ``num_layers`` updated and intermediate CTC positions remapped.
    """
    n = len(model.encoder.layers)
    remove = sorted(set(int(i) for i in layer_indices))
    bad = [i for i in remove if not 0 <= i < n]
    if bad:
        raise ValueError(f"layer indices {bad} out of range for a model with {n} layers")
    kept = [i for i in range(n) if i not in remove]
    if not kept:
        raise ValueError("cannot remove every layer")
    cfg = model.config
    original = list(cfg.original_layers) if cfg.original_layers is not None else list(range(n))
    new_cfg = cfg.replace(
        num_layers=len(kept),
        original_layers=tuple(original[i] for i in kept),
        intermediate_ctc_layers=remap_intermediate_positions(cfg.intermediate_ctc_layers, kept, len(kept)),
    )
    new = copy.deepcopy(model)
    new.config = new_cfg
    new.encoder.cfg = new_cfg
    new.encoder.layers = nn.ModuleList(new.encoder.layers[i] for i in kept)
    return new
