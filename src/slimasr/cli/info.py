"""``slimasr info``: versions, the shipped configurations, or what one model file holds."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="A slimasr model (.pt): print its architecture, front-end, size and provenance instead.")
@click.option("--json", "as_json", is_flag=True, help="With --model: print one JSON object.")
def info(model_path: Path | None, as_json: bool) -> None:
    """Print versions and the shipped model configurations, or describe one model file.

    For a model: layers (a pruned model's kept original layers), width, front-end (features and normalisation),
    parameters, and where it came from (an imported model's toolkit, version and sha256; an averaged model's
    inputs and weights).

    \b
    Example:
      slimasr info
      slimasr info --model src/slimasr/assets/default/model.pt
      slimasr info --model exp/imported.pt --json
    """
    import slimasr

    if model_path is None:
        from slimasr.model.config import SHIPPED_CONFIGS

        click.echo(f"slimasr {slimasr.__version__}")
        for name, cfg in SHIPPED_CONFIGS.items():
            click.echo(f"  config {name}: {cfg.num_layers} layers, d={cfg.d_model}, heads={cfg.num_heads}, "
                       f"ffn={cfg.ffn_dim}, kernel={cfg.kernel_size}, vocab={cfg.vocab_size}")
        return
    from slimasr.model.asr import load_model

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
    click.echo(f"  front-end: {json.dumps(desc['frontend'], default=str)}")
    click.echo(f"  source: {json.dumps(model.source, default=str) if model.source else 'trained with slimasr'}")
