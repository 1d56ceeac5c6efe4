"""``slimasr prune``: score encoder layers on a dev set and remove the least important ones."""
from __future__ import annotations

import click

from ..chunking import Chunking
from ..train.config import TrainConfig
from .options import dataclass_options, field_option, option_name, torch_device
from .train import RESUME_HELP, training_settings

# kept in sync with slimasr.prune.metrics (not imported here: that would import torch for --help)
_SCORE_METRICS = ["all", "correlation", "correlation_raw", "energy", "gradient", "hessian", "taylor", "oracle",
                  "last", "random"]
_PRUNE_METRICS = ["correlation", "correlation_raw", "energy", "gradient", "hessian", "taylor", "oracle",
                  "oracle_wer", "last", "random"]


def _load_model(path: str | None, device: str | None):
    from slimasr.model import load_model

    try:
        return load_model(path, device=device or "cpu")
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(f"--model {path or '(default)'}: {e}") from None


def _model_identity(path: str | None) -> dict:
    """The model file's name and SHA-256, recorded in a scores file so that `prune oneshot` can tell whether the
    scores belong to the model it prunes."""
    from pathlib import Path

    from slimasr.fileutil import file_sha256
    from slimasr.model.asr import default_model_path

    file = Path(path) if path else default_model_path()
    return {"model_file": "default" if path is None else file.name, "model_sha256": file_sha256(file)}


def _check_outputs(inputs: tuple, **outputs) -> None:
    """Before any work: each output (option name -> path or None) can be written and is none of the ``inputs``."""
    from slimasr.fileutil import writable_output

    for opt, path in outputs.items():
        if path is not None:
            try:
                writable_output(path, f"--{opt}", inputs=inputs)
            except ValueError as e:
                raise click.ClickException(str(e)) from None


def _dev_batches(model, data: str, batch_size: int):
    """(a DataLoader over the manifest ``data`` (fixed, duration-sorted batches; re-iterable for the oracle), the
    number of rows left out before it: malformed rows and utterances the dataset filtered, each named on
    stderr)."""
    import torch

    from slimasr.data.dataset import ASRDataset, BucketBatchSampler, collate
    from slimasr.data.manifest import ManifestError, read_manifest
    from slimasr.tokenizer import Tokenizer

    if model.tokenizer_bytes is None:
        raise click.ClickException("the model has no tokenizer attached, so --data transcripts cannot be turned "
                                   "into targets (train the model with a tokenizer)")
    if batch_size < 1:
        raise click.ClickException(f"--batch-size must be at least 1, got {batch_size}")
    bad: list[ManifestError] = []
    try:
        rows = read_manifest(data, skipped=bad)
    except ManifestError as e:
        raise click.ClickException(f"--data: {e}") from None
    for e in bad:                                    # one bad row never stops the job: named, the rest scored
        click.echo(f"skipped {e}", err=True)
    ds = ASRDataset(rows, Tokenizer.from_bytes(model.tokenizer_bytes), model.frontend)
    if len(ds) == 0:
        raise click.ClickException(f"--data {data}: no usable utterance ({len(rows)} rows; filtered: "
                                   f"{', '.join(f'{k}={v}' for k, v in ds.filtered.items() if v) or 'none'})")
    sampler = BucketBatchSampler(ds.durations, batch_size=batch_size, shuffle=False)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    return loader, len(bad) + sum(ds.filtered.values())


@click.group()
def prune() -> None:
    """Score Conformer layers with importance metrics and remove the least important ones.

    \b
    Example:
      slimasr prune score --data data/synth8/dev.jsonl --metric all --out exp/scores.json    # the default model
      slimasr prune oneshot --scores exp/scores.json --metric correlation --ratio 0.4 --out exp/pruned.pt
    """


@prune.command()
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Model file [default: the embedded default model].")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Dev manifest (JSON lines).")
@click.option("--metric", "metrics", multiple=True, type=click.Choice(_SCORE_METRICS), default=("all",),
              show_default=True, help="Metric(s) to compute; repeat the option for several.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Scores file (JSON).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the scores by layer into this image (.png, .pdf, .svg).")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Use only the first N batches of the dev set.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Utterances per batch.")
@click.option("--loss", type=click.Choice(["ctc", "joint"]), default="ctc", show_default=True,
              help="Loss for the gradient metrics and the oracle: CTC (+ intermediate CTC) or joint CTC/attention.")
@field_option(Chunking, "chunk_size", type=click.IntRange(min=1))
@field_option(Chunking, "left_chunks", type=click.IntRange(min=0))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random baseline.")
@click.option("--device", default=None, callback=torch_device, help="torch device, e.g. cuda [default: cpu].")
def score(model_path, data, metrics, out_path, plot_path, max_batches, batch_size, loss, chunk_size, left_chunks,
          seed, device) -> None:
    """Score every encoder layer on a dev set and write the scores, prune ranks and rank agreement.

    Metrics: correlation (cosine of layer output and input; correlation_raw is the paper's eq. 2), energy
    (eq. 3), gradient and hessian (eq. 4), taylor (first-order estimate of the loss change on removal), oracle
    (dev loss and WER with each layer removed; one dev pass per layer), and the baselines last and random.
    In the output, ranks[i] is layer i's position in the prune order (0 = least important, pruned first).

    \b
    Example:
      slimasr prune score --data data/synth8/dev.jsonl --metric all --out exp/scores.json --plot exp/scores.png
      slimasr prune score --model exp/tiny/model.pt --data data/synth8/dev.jsonl --metric correlation \\
          --out exp/tiny/scores.json
    """
    from slimasr.prune.metrics import kendall_agreement, plot_scores, score_layers

    _check_outputs((model_path, data), out=out_path, plot=plot_path)
    model = _load_model(model_path, device)
    loader, left_out = _dev_batches(model, data, batch_size)
    try:
        scores = score_layers(model, loader, list(metrics), device=device, max_batches=max_batches, loss=loss,
                              chunk_size=chunk_size, left_chunks=left_chunks, seed=seed)
    except ValueError as e:
        raise click.ClickException(f"--data {data}: {e}") from None
    scores.info["skipped_utterances"] = (scores.info.get("skipped_utterances") or 0) + left_out
    scores.info.update(_model_identity(model_path))
    scores.save(out_path)
    if plot_path:
        plot_scores(scores, plot_path)
    ref = kendall_agreement(scores, reference="oracle") if "oracle" in scores else {}
    skipped = scores.info["skipped_utterances"]
    click.echo(f"{scores.num_layers} layers scored on {scores.num_utterances} utterances"
               + (f" ({skipped} malformed, unreadable or too short, skipped and named above)" if skipped else "")
               + f" -> {out_path}")
    click.echo(f"  {'metric':<16} {'prune order (least important first)':<40} {'tau vs oracle' if ref else ''}"
               .rstrip())
    for name, ms in scores.metrics.items():
        tau = ref.get(name)
        click.echo(f"  {name:<16} {' '.join(map(str, ms.order)):<40} {'' if tau is None else f'{tau:+.2f}'}")
    if plot_path:
        click.echo(f"plot -> {plot_path}")


@prune.command()
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Model file [default: the embedded default model].")
@click.option("--metric", required=True, type=click.Choice(_PRUNE_METRICS),
              help="Rank layers by this metric (last / random: baselines that need no scores).")
@click.option("--remove", type=int, default=None, help="Remove this many layers.")
@click.option("--keep", type=int, default=None, help="Keep this many layers.")
@click.option("--ratio", type=float, default=None, help="Remove this fraction of the layers (rounded).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Pruned model file.")
@click.option("--scores", "scores_path", type=click.Path(dir_okay=False), default=None,
              help="Scores from 'slimasr prune score' for this model (they record its file's sha256; scores of "
                   "another model are refused).")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dev manifest to compute the metric on, when --scores is not given.")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="With --data: use only the first N batches.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="With --data: utterances per batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --metric random.")
@click.option("--device", default=None, callback=torch_device,
              help="torch device for scoring with --data [default: cpu].")
@click.option("--subsampling", type=click.Choice(["dw_striding4"]), default=None,
              help="Also switch the front-end to this cheaper one (same frame rate and chunking), initialised "
                   "from the current one and distilled on --data; fine-tune afterwards.")
@click.option("--distill-steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --subsampling and --data: optimizer steps that train the new front-end to reproduce "
                   "the old one's output.")
@click.option("--half", is_flag=True,
              help="Store the weights in float16, as the shipped default model is (half the file; models are "
                   "computed in float32 once loaded). Default: float32, for fine-tuning.")
def oneshot(model_path, metric, remove, keep, ratio, out_path, scores_path, data, max_batches, batch_size, seed,
            device, subsampling, distill_steps, half) -> None:
    """Remove the lowest-ranked encoder layers in one shot and save the smaller model.

    Give exactly one of --remove, --keep, --ratio. The pruned model records which original layers it kept and
    loads like any other model; fine-tune it afterwards.

    \b
    Example:
      slimasr prune oneshot --scores exp/scores.json --metric correlation --remove 4 --out exp/pruned.pt
      slimasr prune oneshot --metric last --keep 8 --out exp/last8.pt
      slimasr prune oneshot --metric last --keep 8 --half --out exp/last8-fp16.pt    # float16, as shipped
      slimasr prune oneshot --model exp/tiny/model.pt --metric last --keep 3 --out exp/tiny3.pt
      slimasr prune oneshot --metric last --keep 7 --subsampling dw_striding4 \\
          --data data/synth8/train.jsonl --out exp/last7_dw.pt
    """
    from slimasr.prune.metrics import BASELINES, LayerScores, oneshot_prune, score_layers

    if sum(x is not None for x in (remove, keep, ratio)) != 1:
        raise click.ClickException("give exactly one of --remove, --keep or --ratio")
    _check_outputs((model_path, scores_path, data), out=out_path)
    model = _load_model(model_path, device)
    scores = None
    if scores_path:
        try:
            scores = LayerScores.load(scores_path)
        except (OSError, ValueError) as e:
            raise click.ClickException(f"--scores {scores_path}: {e}") from None
        scored = scores.info.get("model_sha256")        # absent in scores files written before it was recorded
        if scored is not None and scored != _model_identity(model_path)["model_sha256"]:
            raise click.ClickException(
                f"--scores {scores_path} were computed on another model ({scores.info.get('model_file')}, sha256 "
                f"{scored[:12]}), not on --model {model_path or 'default'}; score this model first: slimasr prune "
                f"score{f' --model {model_path}' if model_path else ''} --data DEV.jsonl --out SCORES.json")
        if metric not in scores and metric not in BASELINES:
            raise click.ClickException(f"--scores {scores_path} has no {metric!r} scores (it has: "
                                       f"{', '.join(scores.metrics) or 'none'}); run 'slimasr prune score "
                                       f"--metric {metric.removesuffix('_wer')}' first")
    elif metric not in BASELINES:
        if not data:
            raise click.ClickException(f"--metric {metric} needs --scores or --data (a dev manifest to score on)")
        loader, _ = _dev_batches(model, data, batch_size)
        try:
            scores = score_layers(model, loader, [metric.removesuffix("_wer")], device=device,
                                  max_batches=max_batches)
        except ValueError as e:
            raise click.ClickException(f"--data {data}: {e}") from None
        if metric not in scores:
            raise click.ClickException(f"--metric {metric}: not computed (oracle_wer needs a model with a tokenizer)")
    try:
        pruned = oneshot_prune(model, scores, metric, remove=remove, keep=keep, ratio=ratio, seed=seed)
    except ValueError as e:
        where = f"--scores {scores_path}: " if scores_path and "scores" in str(e) else ""
        raise click.ClickException(f"{where}{e}") from None
    if subsampling:
        pruned = _switch_subsampling(model, pruned, subsampling, data, batch_size, distill_steps, device)
    pruned.cpu().save(out_path, half=half)
    before = list(model.config.original_layers or range(len(model.encoder.layers)))
    kept = list(pruned.config.original_layers)
    removed = [i for i in before if i not in kept]
    click.echo(f"removed original layers {removed} by {metric}; {len(before)} -> {len(kept)} layers "
               f"(kept {kept}) -> {out_path}")


def _switch_subsampling(teacher, pruned, subsampling: str, data: str | None, batch_size: int, steps: int, device):
    from slimasr.prune.surgery import distill_subsampling, switch_subsampling

    try:
        new = switch_subsampling(pruned, subsampling)
    except ValueError as e:
        raise click.ClickException(f"--subsampling: {e}") from None
    if not data:
        click.echo(f"front-end switched to {subsampling} (SVD initialisation only: give --data to distil it)")
        return new
    try:
        losses = distill_subsampling(new, teacher, _dev_batches(teacher, data, batch_size)[0], steps, device=device)
    except ValueError as e:
        raise click.ClickException(f"--data {data}: {e}") from None
    click.echo(f"front-end switched to {subsampling}, distilled {steps} steps on {data}: front-end MSE "
               f"{losses[0]:.4g} -> {losses[-1]:.4g}")
    return new


# data metrics that give one score per layer (the oracle removes layers itself)
_ITERATIVE_METRICS = ["correlation", "correlation_raw", "energy", "gradient", "hessian", "taylor"]


@prune.command()
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Model to prune [default: the embedded default model].")
@click.option("--train", "train_manifest", required=True, type=click.Path(dir_okay=False),
              help="Training manifest for fine-tuning (JSON lines).")
@click.option("--dev", "dev_manifest", required=True, type=click.Path(dir_okay=False),
              help="Dev manifest: layers are scored on it after every epoch.")
@click.option("--metric", type=click.Choice(_ITERATIVE_METRICS), default="correlation", show_default=True,
              help="Layer score averaged over the last --every epochs (eq. 5).")
@click.option("--every", "every_m", type=click.IntRange(min=1), default=2, show_default=True,
              help="Remove layers every M epochs.")
@click.option("--remove", "remove_n", type=click.IntRange(min=1), default=2, show_default=True,
              help="Layers removed each time (fewer at the last removal, to land on --target).")
@click.option("--target", "target_layers", type=click.IntRange(min=1), required=True,
              help="Layers the final model keeps.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory.")
@click.option("--score-batches", type=click.IntRange(min=1), default=None,
              help="Score on the first N dev batches only.")
@dataclass_options(TrainConfig, required=("epochs",))
@click.option("--resume", is_flag=True, help=RESUME_HELP)
@click.option("--device", default=None, callback=torch_device, help="torch device [default: cuda if available].")
def iterative(model_path, train_manifest, dev_manifest, metric, every_m, remove_n, target_layers, out_dir,
              score_batches, resume, device, **options) -> None:
    """Fine-tune while pruning: score the layers after every epoch and, every M epochs, remove the N layers with
    the lowest mean score over those M epochs, until --target layers remain (section 3.2, eq. 5).

    Writes OUT/score_log.json (every layer's score after every epoch; epoch 0 = before fine-tuning),
    OUT/figure2.png (scores by layer over epochs) and OUT/model.pt (the final model, which records the original
    layers it kept). The paper's schedules are --every 4 --remove 4 and --every 2 --remove 2.

    \b
    Example:
      slimasr prune iterative --train data/synth8/train.jsonl --dev data/synth8/dev.jsonl --metric correlation \\
          --every 2 --remove 2 --target 7 --epochs 8 --train-fraction 0.2 --lr 5e-4 --warmup-steps 100 \\
          --out exp/iter-2x2
    """
    from pathlib import Path

    from slimasr.prune.iterative import iterative_prune, removal_epochs
    from slimasr.train import SettingError

    for name, p in (("--train", train_manifest), ("--dev", dev_manifest)):
        if not Path(p).is_file():
            raise click.ClickException(f"{name}: file not found: {p}")
    cfg = training_settings(out_dir, resume, options)
    epochs = cfg.epochs
    model = _load_model(model_path, None)
    n = len(model.encoder.layers)
    if not 1 <= target_layers < n:
        raise click.ClickException(f"--target must be in [1, {n - 1}] for a {n}-layer model, got {target_layers}")
    when = removal_epochs(n, target_layers, every_m, remove_n)
    if when[-1] > epochs:
        raise click.ClickException(f"--epochs {epochs} is too few: removing {n - target_layers} layers, {remove_n} "
                                   f"every {every_m} epochs, ends after epoch {when[-1]}")
    click.echo(f"{n} -> {target_layers} layers by {metric}: removals after epochs {when} of {epochs}")
    try:
        res = iterative_prune(model, train_manifest, dev_manifest, out_dir, metric=metric, every_m=every_m,
                              remove_n=remove_n, target_layers=target_layers, train_cfg=cfg, resume=resume,
                              device=device, score_max_batches=score_batches)
    except SettingError as e:
        raise click.ClickException(e.render(option_name)) from None
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    for r in res.removals:
        click.echo(f"  epoch {r['epoch']}: removed original layers {r['layers']}")
    wer = res.train.best_dev_wer
    click.echo(f"done: {len(res.final_layers)} layers (kept {res.final_layers}); best dev WER "
               f"{'n/a' if wer is None else f'{100 * wer:.2f}%'} -> {res.model_path}")
    click.echo(f"score log -> {res.score_log}; figure -> {res.figure}")
