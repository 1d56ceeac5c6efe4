"""``slimasr reproduce``: the paper's Tables 1-3, Figure 2 and the oracle agreement on a teacher and a corpus."""
from __future__ import annotations

import click

from .options import torch_device


@click.command()
@click.option("--teacher", default=None, type=click.Path(dir_okay=False),
              help="Pre-trained model to prune and distil from [default: the embedded default model].")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Directory with train.jsonl, dev.jsonl and test.jsonl (e.g. from 'slimasr data synth').")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Work directory: one training directory and one result file per run (resumable).")
@click.option("--seeds", multiple=True, type=int, default=(0, 1), show_default=True,
              help="Seeds (repeat the option, or give them space-separated: --seeds 0 1).")
@click.option("--budget", type=click.Choice(["small", "gpu", "paper"]), default="small", show_default=True,
              help="small: 2 epochs over 20% of train per run (2 CPU cores); gpu: 10 epochs over 20%, scratch "
                   "models 12 epochs over all of train (one GPU, --workers 8); paper: 30 epochs over 20%.")
@click.option("--epochs", type=int, default=None, help="Override the budget's fine-tuning epochs.")
@click.option("--results-dir", required=True, type=click.Path(file_okay=False),
              help="Where reproduction.md, reproduction.json and the figures go (e.g. benchmarks/results).")
@click.option("--max-runs", type=int, default=None, help="Do at most N training runs now; the rest stays pending.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the cost estimate, write the report, train nothing.")
@click.option("--device", default=None, callback=torch_device, help="torch device [default: cuda if available].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training runs at once, each in its own process (a GPU holds several small models; on a CPU "
                   "the cores are split: on 2 cores, --workers 2 nearly doubles throughput).")
@click.option("--max-minutes", type=click.FloatRange(min=0), default=None,
              help="Start no new run after this many minutes; started runs finish (the rest stays pending).")
@click.option("--resume-from", type=click.Path(dir_okay=False), default=None,
              help="A reproduction.json of the same teacher, data and budget: its finished runs count as done "
                   "(finish a committed run elsewhere).")
@click.argument("more_seeds", nargs=-1, type=int)
def reproduce(teacher, data_dir, out_dir, seeds, budget, epochs, results_dir, max_runs, dry_run, device,
              workers, max_minutes, resume_from, more_seeds):
    """Reproduce the paper's experiments: one-shot pruning by four metrics and three baselines at 20% and 40%
    (Table 1), scratch vs. distillation vs. pruning (Table 2), one-shot vs. iterative pruning with offline and
    chunked decoding (Table 3), scores over epochs (Figure 2), the metrics' agreement with the removal oracle,
    and WER per held-out test voice, each over several seeds.

    Every finished run is kept under --out; run the command again to continue where it stopped (unfinished
    cells read "pending"). The cost estimate is printed first.

    \b
    Example:
      slimasr data synth --out data/synth8 --hours 8
      slimasr reproduce --data data/synth8 --out exp/repro --results-dir exp/repro/report --seeds 0 1
      slimasr reproduce --data data/synth8 --out exp/repro --results-dir exp/repro/report --dry-run
      slimasr reproduce --data data/synth8 --out exp/repro-gpu --results-dir benchmarks/results --budget gpu \\
          --workers 8 --device cuda
      slimasr reproduce --data data/synth8 --out exp/repro-gpu --results-dir benchmarks/results --budget gpu \\
          --workers 8 --resume-from benchmarks/results/reproduction.json
    """
    from slimasr.recipes.reproduce import reproduce as run

    all_seeds = list(dict.fromkeys([*seeds, *more_seeds]))
    if max_runs is not None and max_runs < 0:
        raise click.ClickException(f"--max-runs must be >= 0, got {max_runs}")
    try:
        report = run(teacher, data_dir, out_dir, results_dir, seeds=all_seeds, budget=budget, epochs=epochs,
                     max_runs=max_runs, dry_run=dry_run, device=device, echo=click.echo,
                     workers=workers, max_minutes=max_minutes, resume_from=resume_from)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    done, pending = len(report["runs"]), len(report["pending"])
    click.echo(f"{done} runs finished, {pending} pending -> {results_dir}/reproduction.md")
