"""``slimasr info``: versions and the shipped configurations."""
from __future__ import annotations

import click


@click.command()
def info() -> None:
    """Print versions and the shipped model configurations.

    \b
    Example:
      slimasr info
    """
    import slimasr
    from slimasr.model.config import SHIPPED_CONFIGS

    click.echo(f"slimasr {slimasr.__version__}")
    for name, cfg in SHIPPED_CONFIGS.items():
        click.echo(f"  config {name}: {cfg.num_layers} layers, d={cfg.d_model}, heads={cfg.num_heads}, "
                   f"ffn={cfg.ffn_dim}, kernel={cfg.kernel_size}, vocab={cfg.vocab_size}")
