"""``slimasr demo``: the end-to-end demo on an embedded default."""
from __future__ import annotations

import click

from .options import POSITIVE_FLOAT


@click.command()
@click.option("--work", default="demo_work", type=click.Path(file_okay=False), show_default=True,
              help="Working directory for the generated data, exports and results.")
@click.option("--hours", default=1.2, type=POSITIVE_FLOAT, show_default=True,
              help="Corpus plan size; only its dev and test splits (about 5% each) are rendered.")
@click.option("--threads", default=2, type=click.IntRange(min=1), show_default=True,
              help="Speech-synthesis jobs, and threads of every decoding step (PyTorch and the runtime).")
@click.option("--no-export", is_flag=True, help="Skip the ONNX export and runtime step.")
@click.option("--no-prune", is_flag=True, help="Skip the pruning step.")
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A slimasr .pt model to run instead of the embedded default model.")
def demo(work, hours, threads, no_export, no_prune, model):
    """Held-out test set -> default model offline and chunked -> one-shot pruning -> ONNX streaming runtime.

    Prints WER, RTF and latency for each step (about 5 minutes on 2 cores).

    \b
    Example:
      slimasr demo --work demo_work
      slimasr demo --work demo_work --model src/slimasr/assets/default/model.pt --no-prune
    """
    from ..demo import run_demo
    from .decode import torch_threads

    torch_threads(threads)

    try:
        run_demo(work, hours=hours, threads=threads, export=not no_export, prune=not no_prune, echo=click.echo,
                 model_path=model)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
