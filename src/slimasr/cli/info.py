"""``slimasr info``: versions, the shipped configurations, or what one model file holds."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="A slimasr model (.pt): print its architecture, front-end, size and provenance instead; or an "
                   "ONNX export directory: its kind, chunking, architecture, files and front-end.")
@click.option("--json", "as_json", is_flag=True, help="With --model: print one JSON object.")
def info(model_path: Path | None, as_json: bool) -> None:
    """Print versions and the shipped model configurations, or describe one model file.

    For a model: layers (a pruned model's kept original layers), width, front-end (features and normalisation),
    parameters, and where it came from (an imported model's toolkit, version and sha256; an averaged model's
    inputs and weights). For an export directory (`slimasr export onnx`): offline or streaming with its chunk
    size and left chunks, the same architecture, its files and whether sherpa-onnx can run it as is.

    \b
    Example:
      slimasr info
      slimasr info --model src/slimasr/assets/default/model.pt
      slimasr info --model exp/imported.pt --json
      slimasr info --model exp/onnx-streaming            # an export directory
    """
    import slimasr

    if model_path is None:
        from slimasr.model.config import SHIPPED_CONFIGS

        click.echo(f"slimasr {slimasr.__version__}")
        for name, cfg in SHIPPED_CONFIGS.items():
            click.echo(f"  config {name}: {cfg.num_layers} layers, d={cfg.d_model}, heads={cfg.num_heads}, "
                       f"ffn={cfg.ffn_dim}, kernel={cfg.kernel_size}, vocab={cfg.vocab_size}")
        return
    from slimasr.runtime.session import EXPORT_CONFIG_FILE

    if model_path.is_dir() and (model_path / EXPORT_CONFIG_FILE).is_file():
        _describe_export(model_path, model_path / EXPORT_CONFIG_FILE, as_json)
        return
    from slimasr.model.asr import load_model
    from slimasr.model.average import describe_provenance

    try:
        model = load_model(model_path)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    cfg = model.config
    desc = {
        "model": str(model_path),
        "layers": cfg.num_layers,
        "d_model": cfg.d_model,
        "heads": cfg.num_heads,
        "ffn_dim": cfg.ffn_dim,
        "kernel_size": cfg.kernel_size,
        "vocab_size": cfg.vocab_size,
        "parameters": model.num_parameters(),
        "encoder_parameters": model.num_parameters(encoder_only=True),
        "config": cfg.to_dict(),
        "frontend": model.frontend.to_dict(),
        "source": model.source,
    }
    if as_json:
        click.echo(json.dumps(desc, indent=2, default=str))
        return
    click.echo(f"{model_path}: {cfg.num_layers} layers, d={cfg.d_model}, heads={cfg.num_heads}, ffn={cfg.ffn_dim}, "
               f"kernel={cfg.kernel_size}, vocab={cfg.vocab_size}; {desc['parameters'] / 1e6:.2f}M parameters "
               f"({desc['encoder_parameters'] / 1e6:.2f}M encoder + CTC)")
    if cfg.original_layers is not None:
        click.echo(f"  pruned: kept original layers {list(cfg.original_layers)}")
    click.echo(f"  front-end: {json.dumps(frontend_summary(model.frontend), default=str)}")
    for line in describe_provenance(model.source):
        click.echo(f"  {line}")


def frontend_summary(frontend) -> dict:
    """A :class:`slimasr.features.FrontendConfig` as ``info`` prints it: only the settings of its kind (``fbank``
    for ``kaldi_fbank``, ``stft`` for ``stft_mel``), the STFT's mel matrix (kilobytes of base64) named by its shape
    (mel bins x ``n_fft // 2 + 1``) instead of its bytes. ``--json`` prints the whole configuration."""
    d = frontend.to_dict()
    if frontend.stft is not None:
        d.pop("fbank", None)
        st = frontend.stft
        d["stft"]["mel_matrix"] = f"{st.num_mel_bins} x {st.n_fft // 2 + 1} float32 matrix"
    else:
        d.pop("stft", None)
    return d


def _describe_export(path: Path, config_file: Path, as_json: bool) -> None:
    """``slimasr info --model EXPORT_DIR``: what slimasr_export.json records."""
    from slimasr.cli.export import sherpa_onnx_line
    from slimasr.features import FrontendConfig

    try:
        e = json.loads(config_file.read_text(encoding="utf-8"))
        frontend = FrontendConfig.from_dict(e["frontend"], f"{config_file}: frontend")
        kind, files, sizes = e["kind"], e["files"], e.get("sizes", {})
        arch = {k: e[k] for k in ("num_layers", "d_model", "num_heads", "kernel_size", "vocab_size")}
    except (OSError, ValueError, KeyError, TypeError) as err:
        what = f"lacks {err}" if isinstance(err, KeyError) else f"is unreadable ({err})"
        raise click.ClickException(f"{config_file} {what}; re-export the model (slimasr export onnx)") from None
    if as_json:
        click.echo(json.dumps(e, indent=2, default=str))
        return
    frame_ms = frontend.frame_shift_ms * int(e.get("subsampling_factor") or 4)     # one encoder frame
    how = (f"chunk {e.get('chunk_size')} x {frame_ms:g} ms, {e.get('left_chunks')} left chunks"
           if kind == "streaming" else "whole utterances")
    click.echo(f"{path}: {kind} ONNX export ({how}), {arch['num_layers']} layers, d={arch['d_model']}, "
               f"heads={arch['num_heads']}, kernel={arch['kernel_size']}, vocab={arch['vocab_size']}")
    listed = [f"{name} ({sizes[name] / 1e6:.1f} MB)" if name in sizes else name
              for key, name in files.items() if name and key != "config"]
    click.echo(f"  files: {', '.join(listed)}")
    if e.get("original_layers") is not None:
        click.echo(f"  pruned: kept original layers {list(e['original_layers'])}")
    click.echo(f"  front-end: {json.dumps(frontend_summary(frontend), default=str)}")
    if kind == "streaming":
        click.echo(sherpa_onnx_line(frontend, e.get("chunk_size"), e.get("left_chunks")))
