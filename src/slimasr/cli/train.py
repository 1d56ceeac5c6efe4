"""``slimasr train``: train or fine-tune a model from manifests."""
from __future__ import annotations

import click


@click.command()
@click.option("--config", "config", default=None, help="Shipped config name (tiny, small, paper) or a JSON file.")
@click.option("--train", "train_manifest", required=True, type=click.Path(dir_okay=False),
              help="Training manifest (JSON lines).")
@click.option("--dev", "dev_manifest", default=None, type=click.Path(dir_okay=False), help="Dev manifest.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory.")
@click.option("--init", default=None, type=click.Path(dir_okay=False), help="Start from this model (fine-tuning).")
@click.option("--tokenizer", default=None, help="Tokenizer dir/.model (default: the init model's, or trained).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@click.option("--epochs", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Peak learning rate (after warm-up).")
@click.option("--warmup-steps", type=int, default=None)
@click.option("--max-frames-per-batch", type=int, default=None, help="Padded 10 ms frames per batch.")
@click.option("--accum-steps", type=int, default=None, help="Gradient accumulation steps.")
@click.option("--train-fraction", type=float, default=None, help="Use this seeded fraction of --train.")
@click.option("--max-minutes", type=float, default=None, help="Wall-clock budget; stops cleanly.")
@click.option("--num-workers", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--no-specaug", is_flag=True, help="Disable SpecAugment.")
@click.option("--speed-perturb", is_flag=True, help="Speed perturbation 0.9/1.0/1.1.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available).")
@click.option("--dynamic-chunk/--no-dynamic-chunk", "dynamic_chunk", default=None,
              help="Switch dynamic chunk training (random chunk sizes and left contexts per batch) on or off for "
                   "the model trained; default: the model's own setting. On fine-tunes a model trained on whole "
                   "utterances (e.g. an imported one) to stream.")
def train(config, train_manifest, dev_manifest, out_dir, init, tokenizer, resume, epochs, lr, warmup_steps,
          max_frames_per_batch, accum_steps, train_fraction, max_minutes, num_workers, seed, no_specaug,
          speed_perturb, device, dynamic_chunk):
    """Train a joint CTC/attention Conformer (dynamic chunk training) or fine-tune one (--init).

    Checkpoints are written atomically under OUT/checkpoints (the last few kept); OUT/best.pt is the best model
    on dev and OUT/model.pt the final model. Multi-GPU: launch with torchrun (DDP, only rank 0 writes).

    \b
    Example:
      slimasr data synth --out data/synth --hours 0.2
      slimasr train --config tiny --train data/synth/train.jsonl --dev data/synth/dev.jsonl \\
          --out exp/tiny --epochs 2
      slimasr train --init exp/imported.pt --dynamic-chunk --train data/synth/train.jsonl \\
          --dev data/synth/dev.jsonl --out exp/imported-streaming --epochs 2
      torchrun --nproc_per_node 4 -m slimasr.cli train --config small --train ... --out exp/small
    """
    from pathlib import Path

    from ..train import TrainConfig, train_model

    overrides = {k: v for k, v in dict(epochs=epochs, lr=lr, warmup_steps=warmup_steps,
                                       max_frames_per_batch=max_frames_per_batch, accum_steps=accum_steps,
                                       train_fraction=train_fraction, max_minutes=max_minutes,
                                       num_workers=num_workers, seed=seed).items() if v is not None}
    if no_specaug:
        overrides["specaug"] = False
    if speed_perturb:
        overrides["speed_perturb"] = True
    for p in (train_manifest, dev_manifest, init):
        if p and not Path(p).is_file():
            raise click.ClickException(f"file not found: {p}")
    if config is None and init is None and not resume:
        raise click.ClickException("give --config (e.g. small) or --init MODEL")
    try:
        cfg = TrainConfig().replace(**overrides)
        res = train_model(config, train_manifest, dev_manifest, out_dir, cfg, init=init, resume=resume,
                          tokenizer=tokenizer, device=device, dynamic_chunk=dynamic_chunk)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"done: {res.epochs_done} epochs, {res.steps} steps; best dev WER "
               f"{'n/a' if res.best_dev_wer is None else f'{100 * res.best_dev_wer:.2f}%'}; model: "
               f"{Path(out_dir) / 'model.pt'}")
