"""Training: the loop (:class:`Trainer`) and :func:`train_model`, which builds everything from manifests."""
from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

from .config import SettingError, TrainConfig

if TYPE_CHECKING:
    from .trainer import EpochHooks, TrainResult

# the loop and its helpers import torch: loaded on first use, so a command's --help stays fast
_FROM_TRAINER = ("FIXED_ON_RESUME", "DistInfo", "EpochHooks", "Trainer", "TrainResult", "init_distributed",
                 "latest_checkpoint", "load_training_checkpoint", "noam_lambda", "resume_changes")


def __getattr__(name: str):
    if name in _FROM_TRAINER:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["TrainConfig", "Trainer", "TrainResult", "EpochHooks", "DistInfo", "train_model", "load_model_config",
           "noam_lambda", "latest_checkpoint", "init_distributed", "prepare_tokenizer", "make_datasets",
           "saved_train_config", "resume_changes", "FIXED_ON_RESUME", "SettingError"]

log = logging.getLogger(__name__)


def load_model_config(spec: str):
    """A shipped config name (``tiny``, ``small``, ``paper``) or a JSON file holding a ModelConfig dict."""
    from ..model.config import SHIPPED_CONFIGS, ModelConfig

    if spec in SHIPPED_CONFIGS:
        return SHIPPED_CONFIGS[spec]
    p = Path(spec)
    if not p.is_file():
        raise ValueError(f"--config {spec!r} is neither a shipped config ({', '.join(SHIPPED_CONFIGS)}) "
                         "nor a JSON file")
    try:
        return ModelConfig.from_dict(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{p} is not a valid model config: {e}") from e


def prepare_tokenizer(out_dir: Path, train_rows, vocab_size: int, source: str | None, init_model=None):
    """The tokenizer: from ``source`` (a dir with tokenizer.model, or a .model file), from the init model, or
    trained on the training transcripts (SentencePiece unigram, ``vocab_size - 2`` pieces)."""
    from ..tokenizer import Tokenizer, train_tokenizer

    if source:
        p = Path(source)
        p = p / "tokenizer.model" if p.is_dir() else p
        if not p.is_file():
            raise ValueError(f"tokenizer not found: {p}")
        return Tokenizer(str(p))
    if init_model is not None and init_model.tokenizer_bytes:
        return Tokenizer.from_bytes(init_model.tokenizer_bytes)
    return train_tokenizer((r["text"] for r in train_rows), vocab_size=vocab_size - 2,
                           out_dir=Path(out_dir) / "tokenizer")


def make_datasets(train_rows, dev_rows, tokenizer, cfg: TrainConfig, cache_dir: Path | None, frontend,
                  jobs: int | None = None, progress: bool = True, model_config=None):
    from ..data.augment import SpecAugment, SpecAugmentConfig
    from ..data.dataset import ASRDataset, FeatureCache

    fb = frontend               # the model's slimasr.features.FrontendConfig
    caches = [None, None]
    if cache_dir is not None:
        caches = [FeatureCache.open_or_build(rows, fb, cache_dir, jobs=jobs, progress=progress) if rows else None
                  for rows in (train_rows, dev_rows)]
    spec = SpecAugment(SpecAugmentConfig()) if cfg.specaug else None
    # the length filters use the model's subsampling geometry (x6 / x8 front-ends need longer input)
    geo = {} if model_config is None else {"subsampling": model_config.subsampling_factor,
                                           "right_context": model_config.right_context}
    train_ds = ASRDataset(train_rows, tokenizer, fb, cache=caches[0], specaug=spec, speed_perturb=cfg.speed_perturb,
                          **geo)
    dev_ds = ASRDataset(dev_rows, tokenizer, fb, cache=caches[1], **geo) if dev_rows else None
    return train_ds, dev_ds


def saved_train_config(out_dir: str | os.PathLike) -> TrainConfig | None:
    """The settings of the run in ``out_dir`` (its latest checkpoint), or None when it has no checkpoint; a
    command resuming a run applies the options given anew on top of these."""
    from .trainer import latest_checkpoint, load_training_checkpoint

    ck = latest_checkpoint(Path(out_dir))
    if ck is None:
        return None
    return TrainConfig.from_dict(load_training_checkpoint(ck).get("train_config", {}))


def train_model(config: str | None, train_manifest: str, dev_manifest: str | None, out_dir: str | os.PathLike,
                train_cfg: TrainConfig = TrainConfig(), init: str | None = None, resume: bool = False,
                tokenizer: str | None = None, device: str | None = None, feature_cache: bool = True,
                hooks: EpochHooks | None = None, progress: bool = True, model=None,
                dynamic_chunk: bool | None = None) -> TrainResult:
    """Train (or fine-tune with ``init``) a model from manifests; see ``slimasr train --help``.

    With ``resume`` and a checkpoint in ``out_dir`` the run continues from it: model and tokenizer come from the
    checkpoint (``config``, ``init``, ``model`` and ``tokenizer`` only start a new run), ``train_cfg`` is the
    settings to continue with (see :mod:`slimasr.train.trainer` for what may change).

    ``dynamic_chunk`` (None: the model's own setting) switches dynamic chunk training on or off for the model
    trained (:meth:`slimasr.model.config.ModelConfig.with_dynamic_chunk`; ValueError where it cannot stream).

    Raises:
        ValueError: bad manifests or configs, or a setting that cannot change on resume (named).
    """
    import torch

    from ..data.cmvn import compute_cmvn
    from ..data.manifest import no_utterances, read_manifest
    from ..model import build_model, load_model
    from .trainer import Trainer, init_distributed, latest_checkpoint, load_training_checkpoint, resume_changes

    out_dir = Path(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist = init_distributed(device)
    if device.startswith("cuda") and dist.world_size > 1:
        device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    torch.manual_seed(train_cfg.seed)   # the initial weights of a new model
    ckpt_path = latest_checkpoint(out_dir) if resume else None
    if resume and ckpt_path is None:
        log.warning("--resume: no checkpoint in %s; starting fresh", out_dir)
    ckpt = load_training_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:   # refuse a forbidden change before any work
        resume_changes(TrainConfig.from_dict(ckpt.get("train_config", {})), train_cfg, int(ckpt["epoch"]))

    bad: list = []                       # malformed manifest lines: named and skipped, never the end of a run
    train_rows = read_manifest(train_manifest, skipped=bad)
    if not train_rows:
        raise no_utterances(train_manifest, bad)
    if train_cfg.train_fraction < 1.0:
        r = random.Random(train_cfg.seed)
        k = max(1, int(round(len(train_rows) * train_cfg.train_fraction)))
        train_rows = sorted(r.sample(train_rows, k), key=lambda row: row["audio_filepath"])
    dev_bad: list = []
    dev_rows = read_manifest(dev_manifest, skipped=dev_bad) if dev_manifest else []
    if dev_manifest and not dev_rows:    # e.g. an audio file given as --dev: no silent run without a dev set
        raise no_utterances(dev_manifest, dev_bad)
    bad += dev_bad
    for e in bad:
        log.warning("skipped %s", e)
    if train_cfg.dev_max_utts is not None and len(dev_rows) > train_cfg.dev_max_utts:
        dev_rows = random.Random(0).sample(dev_rows, train_cfg.dev_max_utts)

    init_model = model if model is not None else (load_model(init) if init and ckpt is None else None)
    if ckpt is not None:
        from ..model.asr import ASRModel
        from ..tokenizer import Tokenizer

        model_ = ASRModel.from_checkpoint_dict(ckpt["model"], source=str(ckpt_path))
        if not model_.tokenizer_bytes:
            raise ValueError(f"{ckpt_path} holds a model without a tokenizer")
        tok = Tokenizer.from_bytes(model_.tokenizer_bytes)
    elif init_model is not None:
        model_ = init_model
        tok = prepare_tokenizer(out_dir, train_rows, model_.config.vocab_size, tokenizer, init_model)
        if tok.vocab_size != model_.config.vocab_size:
            raise ValueError(f"tokenizer has {tok.vocab_size} ids but the init model {model_.config.vocab_size}")
    else:
        if config is None:
            raise ValueError("give a model config (--config) or a model to start from (--init)")
        mcfg = load_model_config(config)
        if dist.world_size > 1 and tokenizer is None:
            # one rank trains the tokenizer, the others load it (no concurrent writes)
            import torch.distributed as tdist

            if dist.is_main:
                prepare_tokenizer(out_dir, train_rows, mcfg.vocab_size, None)
            tdist.barrier()
            tokenizer = str(Path(out_dir) / "tokenizer")
        tok = prepare_tokenizer(out_dir, train_rows, mcfg.vocab_size, tokenizer)
        model_ = build_model(mcfg.replace(vocab_size=tok.vocab_size))
        mean, istd = compute_cmvn(train_rows, model_.frontend, max_files=train_cfg.cmvn_max_files)
        model_.set_cmvn(mean, istd)
    if dynamic_chunk is not None:
        changed = model_.config.with_dynamic_chunk(dynamic_chunk, model_.frontend)
        if ckpt is not None and changed != model_.config:   # the resumed model is the checkpoint's, as it was
            raise SettingError({"dynamic_chunk": f"cannot change on resume (the run's model has dynamic chunk "
                                                 f"training {'off' if dynamic_chunk else 'on'})"},
                               "resume without it or start a new output directory")
        model_.config = changed
    model_.attach_tokenizer(tok.to_bytes())

    cache_dir = Path(train_manifest).resolve().parent / ".feature_cache" if feature_cache else None
    train_ds, dev_ds = make_datasets(train_rows, dev_rows, tok, train_cfg, cache_dir, model_.frontend,
                                     progress=progress, model_config=model_.config)
    trainer = Trainer(model_, tok, train_ds, dev_ds, out_dir, train_cfg, device=device, hooks=hooks,
                      dist_info=dist, progress=progress)
    if ckpt is not None:
        trainer.resume(ckpt_path, ckpt)
    result = trainer.fit()
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return result
