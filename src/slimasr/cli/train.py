"""``slimasr train``: train or fine-tune a model from manifests."""
from __future__ import annotations

import click

from ..train.config import TrainConfig
from .options import dataclass_options, given, option_name, torch_device

RESUME_HELP = ("Continue from the latest checkpoint in --out with its settings; options given anew take effect "
               "from there (--epochs extends, --lr/--warmup-steps rebuild the schedule at the current step) or are "
               "refused by name (--seed, --train-fraction, --max-frames-per-batch, --dev-max-utts).")


def training_settings(out_dir: str, resume: bool, options: dict, **fixed) -> TrainConfig:
    """The training settings of a command: the options given (and ``fixed`` values the command sets) on top of
    the saved run's settings with ``resume``, else on top of the :class:`TrainConfig` defaults.

    Raises:
        click.ClickException: a bad value, or a setting that cannot change on resume, named as its option; an
            unreadable checkpoint in ``out_dir``.
    """
    from ..train import SettingError, resume_changes, saved_train_config

    chosen = {**given(TrainConfig, options), **fixed}
    try:
        saved = saved_train_config(out_dir) if resume else None
        cfg = (saved or TrainConfig()).replace(**chosen)
        if saved is not None:
            resume_changes(saved, cfg, epochs_done=0)
    except SettingError as e:
        raise click.ClickException(e.render(option_name)) from None
    except ValueError as e:  # an unreadable checkpoint
        raise click.ClickException(f"--resume: {e}") from None
    return cfg


@click.command()
@click.option("--config", "config", default=None, help="Shipped config name (tiny, small, paper) or a JSON file.")
@click.option("--train", "train_manifest", required=True, type=click.Path(dir_okay=False),
              help="Training manifest (JSON lines).")
@click.option("--dev", "dev_manifest", default=None, type=click.Path(dir_okay=False), help="Dev manifest.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory.")
@click.option("--init", default=None, type=click.Path(dir_okay=False), help="Start from this model (fine-tuning).")
@click.option("--tokenizer", default=None, help="Tokenizer dir/.model (default: the init model's, or trained).")
@click.option("--resume", is_flag=True, help=RESUME_HELP)
@dataclass_options(TrainConfig)
@click.option("--device", default=None, callback=torch_device,
              help="cpu, cuda, cuda:1 (default: cuda if available).")
@click.option("--dynamic-chunk/--no-dynamic-chunk", "dynamic_chunk", default=None,
              help="Switch dynamic chunk training (random chunk sizes and left contexts per batch) on or off for "
                   "the model trained; default: the model's own setting. On fine-tunes a model trained on whole "
                   "utterances (e.g. an imported one) to stream.")
def train(config, train_manifest, dev_manifest, out_dir, init, tokenizer, resume, device, dynamic_chunk,
          **options):
    """Train a joint CTC/attention Conformer (dynamic chunk training) or fine-tune one (--init).

    Checkpoints are written atomically under OUT/checkpoints (the last few kept); OUT/best.pt is the best model
    on dev and OUT/model.pt the final model; OUT/train_config.json the settings in use. Multi-GPU: launch with
    torchrun (DDP, only rank 0 writes).

    \b
    Example:
      slimasr data synth --out data/tiny --hours 0.2    # a small corpus of its own
      slimasr train --config tiny --train data/tiny/train.jsonl --dev data/tiny/dev.jsonl \\
          --out exp/tiny --epochs 2
      slimasr train --config tiny --train data/tiny/train.jsonl --dev data/tiny/dev.jsonl \\
          --out exp/tiny --resume --epochs 3 --lr 1e-4
      slimasr train --init exp/imported.pt --dynamic-chunk --train data/synth8/train.jsonl \\
          --dev data/synth8/dev.jsonl --out exp/imported-streaming --epochs 2
      torchrun --nproc_per_node 4 -m slimasr.cli train --config small --train ... --out exp/small
    """
    from pathlib import Path

    from ..train import SettingError, train_model

    for p in (train_manifest, dev_manifest, init):
        if p and not Path(p).is_file():
            raise click.ClickException(f"file not found: {p}")
    if config is None and init is None and not resume:
        raise click.ClickException("give --config (e.g. small) or --init MODEL")
    cfg = training_settings(out_dir, resume, options)
    try:
        res = train_model(config, train_manifest, dev_manifest, out_dir, cfg, init=init, resume=resume,
                          tokenizer=tokenizer, device=device, dynamic_chunk=dynamic_chunk)
    except SettingError as e:
        raise click.ClickException(e.render(option_name)) from None
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"done: {res.epochs_done} epochs, {res.steps} steps; best dev WER "
               f"{'n/a' if res.best_dev_wer is None else f'{100 * res.best_dev_wer:.2f}%'}; model: "
               f"{Path(out_dir) / 'model.pt'}")
