"""Structural pruning: remove whole Conformer layers from a model, and switch its front-end to a cheaper one."""
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


# ---------------------------------------------------------------------------------------------- front-end switch
# Front-ends a model can switch to without changing its frame rate or chunk windows: target -> the source it replaces.
SUBSAMPLING_SWITCHES = {"dw_striding4": "conv2d4"}


def _separable_from_full(full: nn.Conv2d, depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> None:
    """Initialise a depthwise (C, 1, k, k) + pointwise (C, C, 1, 1) pair from a full (C, C, k, k) convolution.

    For each input channel i the full kernel's slice ``W[:, i]`` (C_out x k^2) is replaced by its best rank-1
    approximation ``s u v^T`` (SVD): the depthwise filter of channel i is ``v`` and the pointwise column i is
    ``s u``, so ``pointwise(depthwise(x))`` is the closest separable convolution to ``full`` in the Frobenius norm
    per input channel. The full convolution's bias moves to the pointwise one.
    """
    import torch

    w = full.weight.detach()                                          # (C_out, C_in, k, k)
    c_out, c_in, kh, kw = w.shape
    per_in = w.permute(1, 0, 2, 3).reshape(c_in, c_out, kh * kw)      # (C_in, C_out, k^2)
    u, s, vh = torch.linalg.svd(per_in, full_matrices=False)          # batched over input channels
    with torch.no_grad():
        depthwise.weight.copy_(vh[:, 0, :].reshape(c_in, 1, kh, kw))
        depthwise.bias.zero_()
        pointwise.weight.copy_((u[:, :, 0] * s[:, :1]).T.reshape(c_out, c_in, 1, 1))
        pointwise.bias.copy_(full.bias.detach())


def switch_subsampling(model: ASRModel, subsampling: str) -> ASRModel:
    """A new model whose front-end is ``subsampling`` (``dw_striding4``), initialised from ``model``'s
    ``conv2d4`` front-end; the input model is not modified.

    ``dw_striding4`` keeps ``conv2d4``'s geometry (factor 4, right context 6): the Conformer layers, the frame
    rate and every chunk window stay as they are. Its first convolution and output projection are copied; the
    second 3x3 convolution becomes a depthwise + pointwise pair initialised by a rank-1 SVD per input channel
    (:func:`_separable_from_full`), about 9x fewer FLOPs for that convolution at 512 channels (the separable
    stage of NeMo's FastConformer ``dw_striding``, Rekesh et al., ASRU 2023). The approximation is not exact:
    distil the front-end (:func:`distill_subsampling`) and fine-tune briefly before use.

    Raises:
        ValueError: an unknown target, or a model whose front-end is not the one the target replaces.
    """
    if subsampling not in SUBSAMPLING_SWITCHES:
        raise ValueError(f"cannot switch to subsampling {subsampling!r}; supported: "
                         f"{', '.join(SUBSAMPLING_SWITCHES)}")
    cfg = model.config
    source = SUBSAMPLING_SWITCHES[subsampling]
    if cfg.subsampling != source:
        raise ValueError(f"switching to {subsampling!r} needs a model with the {source!r} front-end, this one has "
                         f"{cfg.subsampling!r}")
    from ..model.encoder import ConvSubsampling

    new_cfg = cfg.replace(subsampling=subsampling)
    new = copy.deepcopy(model)
    old_fe = model.encoder.subsampling
    fe = ConvSubsampling(new_cfg).to(next(model.parameters()).device)
    # conv2d4: conv = [Conv2d(1, C), ReLU, Conv2d(C, C), ReLU]; dw_striding4: [Conv2d(1, C), ReLU, dw, pw, ReLU]
    fe.conv[0].load_state_dict(old_fe.conv[0].state_dict())
    _separable_from_full(old_fe.conv[2], fe.conv[2], fe.conv[3])
    fe.out.load_state_dict(old_fe.out.state_dict())
    new.config = new_cfg
    new.encoder.cfg = new_cfg
    new.encoder.subsampling = fe
    return new


def distill_subsampling(student: ASRModel, teacher: ASRModel, batches: Iterable[dict], steps: int,
                        lr: float = 1e-3, device=None) -> list[float]:
    """Train ``student``'s front-end alone to reproduce ``teacher``'s front-end output (mean squared error over
    the valid encoder frames), the Conformer layers untouched: a cheap first step after
    :func:`switch_subsampling`, before fine-tuning the whole model.

    Args:
        batches: re-iterable batches with ``feats`` (B, T, F) and ``feats_lens`` (B,) (``slimasr.data.dataset``'s
            ``collate``); cycled until ``steps`` optimizer steps are done.
        steps: optimizer steps (Adam, learning rate ``lr``).
    Returns:
        The loss of each step (the first is the loss of the SVD initialisation).
    Raises:
        ValueError: ``steps`` < 1, or no batch to train on.
    """
    import torch

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device or next(student.parameters()).device)
    fe_t, fe_s = teacher.encoder, student.encoder
    params = list(fe_s.subsampling.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    was = student.training
    student.train()
    losses: list[float] = []
    while len(losses) < steps:
        seen = False
        for batch in batches:
            if batch is None:
                continue
            seen = True
            feats, lens = batch["feats"].to(device), batch["feats_lens"].to(device)
            with torch.no_grad():
                target = fe_t.front_end(feats)                                    # (B, T', D)
            out = fe_s.front_end(feats)
            valid = (torch.arange(out.size(1), device=device)[None] <
                     fe_s.subsampling.output_lengths(lens)[:, None])[..., None].to(out.dtype)
            loss = ((out - target) ** 2 * valid).sum() / (valid.sum() * out.size(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) >= steps:
                break
        if not seen:
            raise ValueError("no batch to distil the front-end on")
    student.train(was)
    return losses
