"""``slimasr distill``: train a smaller student with frame-level cosine distillation from a teacher."""
from __future__ import annotations

import click

from ..train.config import TrainConfig
from .options import dataclass_options, option_name, torch_device
from .train import RESUME_HELP, training_settings


@click.command()
@click.option("--teacher", default=None, type=click.Path(dir_okay=False),
              help="Teacher model file [default: the embedded default model].")
@click.option("--student", required=True,
              help="Student to start from: a model file with the teacher's tokenizer (e.g. a same-size model trained "
                   "from scratch with --tokenizer of the teacher), or a model config (shipped name or JSON file), "
                   "built untrained with the teacher's tokenizer and feature normalisation.")
@click.option("--train", "train_manifest", required=True, type=click.Path(dir_okay=False),
              help="Training manifest (JSON lines).")
@click.option("--dev", "dev_manifest", default=None, type=click.Path(dir_okay=False), help="Dev manifest.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory.")
@click.option("--weight", type=float, default=100.0, show_default=True,
              help="Weight of the mean cosine distance (the CTC/attention losses are sums per utterance, so the "
                   "cosine term needs a large weight to matter).")
@dataclass_options(TrainConfig)
@click.option("--resume", is_flag=True, help=RESUME_HELP)
@click.option("--device", default=None, callback=torch_device,
              help="cpu, cuda, cuda:1 (default: cuda if available).")
def distill(teacher, student, train_manifest, dev_manifest, out_dir, weight, resume, device, **options):
    """Knowledge distillation baseline: the student's CTC/attention loss plus WEIGHT x the frame-level cosine
    distance between the teacher's and the student's final-layer logits (no teacher classifier).

    Teacher and student must share the tokenizer (a config student gets the teacher's). OUT/model.pt is the
    student with the best dev WER.

    \b
    Example:
      echo '{"name": "small7", "num_layers": 7, "intermediate_ctc_layers": [3]}' > small7.json
      slimasr train --config small7.json --tokenizer exp/teacher/tokenizer --train data/synth8/train.jsonl \\
          --dev data/synth8/dev.jsonl --out exp/scratch7
      slimasr distill --teacher exp/teacher/model.pt --student exp/scratch7/model.pt \\
          --train data/synth8/train.jsonl --dev data/synth8/dev.jsonl --out exp/distill7 --epochs 3 --train-fraction 0.2
      slimasr distill --student small7.json --train data/synth8/train.jsonl --out exp/distill7-cold --epochs 3
    """
    from pathlib import Path

    from ..prune.distill import distill as run_distill
    from ..train import SettingError

    for name, p in (("--teacher", teacher), ("--train", train_manifest), ("--dev", dev_manifest)):
        if p and not Path(p).is_file():
            raise click.ClickException(f"{name}: file not found: {p}")
    if weight <= 0:
        raise click.ClickException(f"--weight must be positive, got {weight}")
    cfg = training_settings(out_dir, resume, options, distill_weight=weight)
    try:
        res = run_distill(teacher, student, train_manifest, dev_manifest, out_dir, cfg, resume=resume, device=device)
    except SettingError as e:
        raise click.ClickException(e.render(option_name)) from None
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"done: {res.epochs_done} epochs, {res.steps} steps; best dev WER "
               f"{'n/a' if res.best_dev_wer is None else f'{100 * res.best_dev_wer:.2f}%'}; student: "
               f"{Path(out_dir) / 'model.pt'}")
