"""``slimasr average``: average model checkpoints, or interpolate a fine-tuned model with its initial model."""
from __future__ import annotations

from pathlib import Path

import click


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def _parse_weights(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[float] | None:
    """``--weights 0.7,0.3`` (or ``--weights 0.7 --weights 0.3``) -> ``[0.7, 0.3]``; None when not given.

    Raises:
        click.BadParameter: a value that is not a number (the count and the values are checked against the models
            by :func:`slimasr.model.average.normalise_weights` once the models are known).
    """
    if not value:
        return None
    items = [v.strip() for given in value for v in given.split(",")]
    bad = [v for v in items if not _is_number(v)]
    if bad:
        raise click.BadParameter(f"expected numbers, one per model, comma-separated (e.g. 0.7,0.3), got {bad[0]!r} "
                                 f"in {','.join(value)!r}")
    return [float(v) for v in items]


def _check_models(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """A MODEL that is a number and no file is a weight given after the first one with a space: say so."""
    stray = [m for m in value if _is_number(m) and not Path(m).exists()]
    if stray:
        raise click.BadParameter(f"{stray[0]!r} is a number, not a model file; give all the weights to one "
                                 f"--weights, comma-separated (e.g. --weights 0.5,0.5)", param_hint="MODEL")
    return value


@click.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...", callback=_check_models)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the averaged model (.pt).")
@click.option("--weights", multiple=True, callback=_parse_weights, metavar="W1,W2,...",
              help="One non-negative weight per model, comma-separated (or --weights once per model), normalised "
                   "to sum 1. Default: uniform.")
@click.option("--last", type=click.IntRange(min=1), default=None,
              help="MODEL is a training directory: average its N most recent checkpoints/step-*.pt.")
@click.option("--half", is_flag=True, help="Store the weights as float16 (as the shipped default model is); "
                                           "the averaging itself is done in float32.")
def average(models: tuple[str, ...], out: str, weights: list[float] | None, last: int | None, half: bool) -> None:
    """Average the weights of slimasr models: checkpoint averaging, or WiSE-FT interpolation.

    Every float tensor becomes the weighted mean of the models' tensors (computed in float32). MODEL is a model
    file or a training checkpoint (checkpoints/step-*.pt). All models must share architecture, front-end and
    tokenizer: checkpoints of one run, or a fine-tuned model and the model it started from. The output records
    the inputs' file names, sha256 and weights as its provenance (also written into its ONNX exports). --out must
    not be one of the inputs; it is written atomically (a temporary file renamed into place), so an interrupted run
    leaves any earlier file there intact.

    \b
    Example:
      # average the newest checkpoints of a run (WeNet average_model.py, icefall average_checkpoints)
      slimasr average exp/checkpoints/step-000004000.pt exp/checkpoints/step-000005000.pt \\
          exp/checkpoints/step-000006000.pt --out exp/avg3.pt
      slimasr average exp/tiny --last 2 --out exp/tiny/avg2.pt    # the run of `slimasr train --help`'s example
      # WiSE-FT (Wortsman et al., CVPR 2022): (1 - alpha) * initial + alpha * fine-tuned;
      # a smaller alpha keeps more of the initial model's accuracy on its old data
      slimasr average src/slimasr/assets/default/model.pt exp/ft/best.pt --weights 0.5,0.5 --out exp/wise.pt
      slimasr average src/slimasr/assets/default/model.pt exp/ft/best.pt --weights 0.7,0.3 --half \\
          --out exp/wise-0.3.pt
    """
    from slimasr.fileutil import writable_output
    from slimasr.model import average_checkpoints
    from slimasr.model.average import describe_provenance, normalise_weights

    paths = [Path(m) for m in models]
    if last is not None:
        paths = _last_checkpoints(paths, last)
    try:
        normalise_weights(weights, len(paths))       # count, sign and sum, before any model is read
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--weights'") from None
    try:
        writable_output(out, "--out", inputs=paths)      # before anything is read or written
        model = average_checkpoints(paths, weights)
        path = model.save(out, half=half)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot write {out}: {e.strerror or e}") from None
    for line in describe_provenance(model.source)[1:]:        # the inputs' lines (the header is this command)
        click.echo(line)
    click.echo(f"wrote {path} (average of {len(paths)} model(s), {'float16' if half else 'float32'})")


def _last_checkpoints(paths: list[Path], n: int) -> list[Path]:
    from slimasr.train.trainer import step_checkpoints

    if len(paths) != 1 or not paths[0].is_dir():
        raise click.ClickException(f"--last takes one training directory (with checkpoints/step-*.pt), got "
                                   f"{' '.join(map(str, paths))}")
    run_dir = paths[0]
    if not (run_dir / "checkpoints").is_dir():
        raise click.ClickException(f"--last {n}: {run_dir} has no checkpoints/ folder (expected a `slimasr train` "
                                   f"output directory; to average model files, list them without --last)")
    found = step_checkpoints(run_dir)
    if len(found) < n:
        raise click.ClickException(f"--last {n}: {run_dir / 'checkpoints'} holds {len(found)} step-*.pt "
                                   f"checkpoint(s)")
    return found[-n:]
