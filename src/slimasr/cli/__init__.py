"""The ``slimasr`` command: a click group whose sub-commands live one per module and load lazily.

Importing a sub-command's module is cheap (heavy imports happen inside the command), and a command whose
optional dependency is missing fails only when it is run, with a clear message.
"""
from __future__ import annotations

import importlib
import logging
import sys
import warnings

import click

# command name -> "module:attribute" (relative to slimasr.cli)
_COMMANDS: dict[str, str] = {
    "info": "info:info",
    "train": "train:train",
    "average": "average:average",
    "decode": "decode:decode",
    "transcribe": "transcribe:transcribe",
    "demo": "demo:demo",
    "data": "data:data",
    "tokenizer": "tokenizer:tokenizer",
    "export": "export:export",
    "prune": "prune:prune",
    "lm": "lm:lm",
    "serve": "serve:serve",
    "bench-server": "bench_server:bench_server",
    "distill": "distill:distill",
    "reproduce": "reproduce:reproduce",
    "bench": "bench:bench",
    "import": "importers:import_",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"slimasr.cli.{module}"), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """slimasr: prune Conformer speech recognizers, export them, benchmark them and serve them.

    \b
    Example:
      slimasr info
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command's user reads it: its kind and message, without the source file and line."""
    return f"{category.__name__}: {message}\n"
