"""Knowledge distillation, the baseline pruning is compared with (Bekal et al., 2023, section 4.3).

"A simple frame-based knowledge distillation approach, with the objective function of reducing the cosine distance
between the logits of the final layer between teacher and student models (as in [Tian et al., 2022] but without the
teacher classifier)": the student's CTC logits and the teacher's CTC logits (both ``V`` wide, same tokenizer) are
compared frame by frame; the mean cosine distance over valid frames, times ``TrainConfig.distill_weight``, is added
to the student's training loss. The student starts from a same-size model trained from scratch.

Both models see the same features with full context. The student's logits come from an extra full-context pass of
its encoder (the training loss is computed under dynamic chunk masks drawn per batch, whose logits the trainer does
not expose), so a distillation step costs about two student passes and one teacher forward pass.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["cosine_distill_loss", "DistillLoss", "distill", "build_student"]

log = logging.getLogger(__name__)


def cosine_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        lens: torch.Tensor | None = None) -> torch.Tensor:
    """Mean frame-level cosine distance ``1 - cos(s_t, z_t)`` over the valid frames.

    Args:
        student_logits, teacher_logits: (B, T, V) (the teacher's carry no gradient in training; detach them).
        lens: (B,) valid frames per utterance (default: all T).
    Returns:
        a scalar in [0, 2]; 0 when every student frame points the same way as the teacher's.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (same front-end and vocabulary needed)")
    b, t, _ = student_logits.shape
    dist = 1.0 - F.cosine_similarity(student_logits.float(), teacher_logits.float(), dim=-1, eps=1e-8)   # (B, T)
    if lens is None:
        return dist.mean()
    mask = torch.arange(t, device=dist.device)[None, :] < lens.to(dist.device)[:, None]                # (B, T)
    return (dist * mask).sum() / mask.sum().clamp(min=1)


class DistillLoss:
    """``EpochHooks.extra_loss``: ``weight * cosine_distill_loss(student, teacher)`` on the batch's features.

    The teacher is frozen (eval mode, no gradients) and moved to the student's device on first use.
    """

    def __init__(self, teacher, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"the distillation weight must be >= 0, got {weight}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight = float(weight)

    def logits(self, model, feats: torch.Tensor, lens: torch.Tensor):
        """(B, T', V) final-layer CTC logits (full context) and (B,) lengths."""
        enc, out_lens, _ = model.encoder(feats, lens)
        return model.ctc(enc), out_lens

    def __call__(self, model, batch: dict, out: dict) -> torch.Tensor:
        device = next(model.parameters()).device
        feats = batch["feats"].to(device)
        lens = batch["feats_lens"].to(device)
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            t_logits, _ = self.logits(self.teacher, feats, lens)
        s_logits, s_lens = self.logits(model, feats, lens)
        return self.weight * cosine_distill_loss(s_logits, t_logits.detach(), s_lens)


def build_student(spec, teacher):
    """The student: a model file (e.g. a same-size model trained from scratch), an ``ASRModel``, or a config
    (a :class:`~slimasr.model.ModelConfig`, a shipped config name or a JSON file) built untrained with the
    teacher's vocabulary, tokenizer and feature normalisation.
    """
    from ..model import ASRModel, build_model, load_model
    from ..train import load_model_config

    if isinstance(spec, ASRModel):
        student = copy.deepcopy(spec)
    elif isinstance(spec, (str, os.PathLike)) and Path(spec).is_file() and Path(spec).suffix != ".json":
        student = load_model(spec)
    else:
        cfg = spec if hasattr(spec, "num_layers") else load_model_config(str(spec))
        student = build_model(cfg.replace(vocab_size=teacher.config.vocab_size, original_layers=None))
        student.encoder.cmvn_mean.copy_(teacher.encoder.cmvn_mean)
        student.encoder.cmvn_istd.copy_(teacher.encoder.cmvn_istd)
        student.attach_tokenizer(teacher.tokenizer_bytes)
        student.set_frontend(teacher.frontend)
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError(f"the student has {student.config.vocab_size} output tokens but the teacher "
                         f"{teacher.config.vocab_size}: both must share one tokenizer")
    if student.config.num_mel_bins != teacher.config.num_mel_bins:
        raise ValueError("the student and the teacher must use the same features (num_mel_bins differ)")
    if student.tokenizer_bytes is None:
        student.attach_tokenizer(teacher.tokenizer_bytes)
        student.set_frontend(teacher.frontend)
    elif teacher.tokenizer_bytes is not None and student.tokenizer_bytes != teacher.tokenizer_bytes:
        raise ValueError("the student's tokenizer differs from the teacher's: their logits are not comparable")
    return student.train()


def distill(teacher, student, train: str, dev: str | None, out: str | os.PathLike, train_cfg=None, *,
            resume: bool = False, device: str | None = None, feature_cache: bool = True, progress: bool = True):
    """Train ``student`` on ``train`` with its own loss plus ``train_cfg.distill_weight`` x the cosine distance of
    its final-layer logits to ``teacher``'s.

    Args:
        teacher: an ``ASRModel``, a model file, or None (the embedded default model).
        student: see :func:`build_student`.
        train_cfg: the recipe; ``distill_weight`` must be positive.
    Returns:
        the trainer's ``TrainResult``; ``out/model.pt`` is the student.
    """
    from ..model import load_model
    from ..train import EpochHooks, TrainConfig, train_model

    train_cfg = train_cfg or TrainConfig(distill_weight=100.0)
    if train_cfg.distill_weight <= 0:
        raise ValueError(f"distill_weight must be positive for distillation, got {train_cfg.distill_weight}")
    teacher = copy.deepcopy(teacher) if hasattr(teacher, "encoder") else load_model(teacher)
    if teacher.tokenizer_bytes is None:
        raise ValueError("the teacher has no tokenizer attached")
    stud = build_student(student, teacher)
    log.info("distillation: teacher %d layers -> student %d layers, weight %g", len(teacher.encoder.layers),
             len(stud.encoder.layers), train_cfg.distill_weight)
    hooks = EpochHooks(extra_loss=DistillLoss(teacher, train_cfg.distill_weight))
    return train_model(None, train, dev, out, train_cfg, resume=resume, device=device, feature_cache=feature_cache,
                       hooks=hooks, progress=progress, model=stud)
