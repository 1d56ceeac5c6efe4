"""Training: the loop (:class:`Trainer`) and :func:`train_model`, which builds everything from manifests."""
from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

from .config import TrainConfig
from .trainer import DistInfo, EpochHooks, Trainer, TrainResult, init_distributed, latest_checkpoint, noam_lambda

__all__ = ["TrainConfig", "Trainer", "TrainResult", "EpochHooks", "DistInfo", "train_model", "load_model_config",
           "noam_lambda", "latest_checkpoint", "init_distributed", "prepare_tokenizer", "make_datasets"]

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


def train_model(config: str | None, train_manifest: str, dev_manifest: str | None, out_dir: str | os.PathLike,
                train_cfg: TrainConfig = TrainConfig(), init: str | None = None, resume: bool = False,
                tokenizer: str | None = None, device: str | None = None, feature_cache: bool = True,
                hooks: EpochHooks | None = None, progress: bool = True, model=None,
                dynamic_chunk: bool | None = None) -> TrainResult:
    """Train (or fine-tune with ``init``) a model from manifests; see ``slimasr train --help``.

    ``dynamic_chunk`` (None: the model's own setting) switches dynamic chunk training on or off for the model
    trained (:meth:`slimasr.model.config.ModelConfig.with_dynamic_chunk`; ValueError where it cannot stream)."""
    import torch

    from ..data.cmvn import compute_cmvn
    from ..data.manifest import read_manifest
    from ..model import build_model, load_model

    out_dir = Path(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist = init_distributed(device)
    if device.startswith("cuda") and dist.world_size > 1:
        device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    random.seed(train_cfg.seed)
    torch.manual_seed(train_cfg.seed)

    train_rows = read_manifest(train_manifest)
    if not train_rows:
        raise ValueError(f"{train_manifest} has no utterances")
    if train_cfg.train_fraction < 1.0:
        r = random.Random(train_cfg.seed)
        k = max(1, int(round(len(train_rows) * train_cfg.train_fraction)))
        train_rows = sorted(r.sample(train_rows, k), key=lambda row: row["audio_filepath"])
    dev_rows = read_manifest(dev_manifest) if dev_manifest else []
    if train_cfg.dev_max_utts is not None and len(dev_rows) > train_cfg.dev_max_utts:
        dev_rows = random.Random(0).sample(dev_rows, train_cfg.dev_max_utts)

    init_model = None
    if model is not None:
        init_model = model
    elif init:
        init_model = load_model(init)
    if init_model is not None:
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
        model_.config = model_.config.with_dynamic_chunk(dynamic_chunk)
    model_.attach_tokenizer(tok.to_bytes())

    cache_dir = Path(train_manifest).resolve().parent / ".feature_cache" if feature_cache else None
    train_ds, dev_ds = make_datasets(train_rows, dev_rows, tok, train_cfg, cache_dir, model_.frontend,
                                     progress=progress, model_config=model_.config)
    trainer = Trainer(model_, tok, train_ds, dev_ds, out_dir, train_cfg, device=device, hooks=hooks,
                      dist_info=dist, progress=progress)
    if resume:
        ck = latest_checkpoint(out_dir)
        if ck is None:
            log.warning("--resume: no checkpoint in %s; starting fresh", out_dir)
        else:
            trainer.resume(ck)
    result = trainer.fit()
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return result
