"""Click option groups built from frozen config dataclasses: one option per field, one default (the field's).

A field ``max_frames_per_batch`` becomes ``--max-frames-per-batch`` (a ``bool`` field a ``--x/--no-x`` switch),
with the help text of ``field.metadata["help"]`` (else the field's entry in the class docstring's
``Attributes:`` section) and the field's default shown. Options default to ``None`` (not
given), so a command can tell what the user set, e.g. to apply only those settings on top of a saved run's
(``slimasr train --resume``)::

    @click.command()
    @dataclass_options(TrainConfig)
    def train(out_dir, **options):
        cfg = TrainConfig().replace(**given(TrainConfig, options))
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence

import click

__all__ = ["dataclass_options", "given", "option_name"]

_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


def option_name(field_name: str) -> str:
    """``max_frames_per_batch`` -> ``--max-frames-per-batch``."""
    return "--" + field_name.replace("_", "-")


def _cli_fields(cls, names: Sequence[str] | None) -> list[dataclasses.Field]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if names is None:
        return [f for f in fields.values() if f.metadata.get("cli", False)]
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return [fields[n] for n in names]


def _docstring_help(cls) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of a Google-style class docstring."""
    out: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    indent, name = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        level = len(line) - len(line.lstrip())
        if indent is None:
            indent = level
        if level < indent:
            break
        text = line.strip()
        if level == indent and ":" in text:
            name, text = (part.strip() for part in text.split(":", 1))
            out[name] = text
        elif name is not None:
            out[name] += " " + text
    return out


def _base_type(tp) -> type:
    """``float | None`` -> ``float``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def dataclass_options(cls, names: Sequence[str] | None = None, required: Sequence[str] = ()) -> Callable:
    """A decorator adding the options of ``cls``'s fields (``names``, default: those with ``metadata["cli"]``)
    to a click command, in field order; ``required`` ones must be given."""
    hints = typing.get_type_hints(cls)
    fields = _cli_fields(cls, names)
    documented = _docstring_help(cls)

    def decorate(f: Callable) -> Callable:
        for fld in reversed(fields):
            tp = _base_type(hints[fld.name])
            name = option_name(fld.name)
            text = fld.metadata.get("help") or documented.get(fld.name, "")
            if tp is bool:
                switch = f"{name}/--no-{name[2:]}"
                f = click.option(switch, fld.name, default=None,
                                 help=f"{text} [default: {'on' if fld.default else 'off'}]")(f)
                continue
            if tp not in _TYPES:
                raise TypeError(f"{cls.__name__}.{fld.name}: no option type for {tp!r}")
            shown = fld.name not in required and fld.default not in (None, dataclasses.MISSING)
            default = f" [default: {fld.default}]" if shown else ""
            f = click.option(name, fld.name, type=_TYPES[tp], default=None, required=fld.name in required,
                             help=f"{text}{default}")(f)
        return f

    return decorate


def given(cls, options: Mapping[str, object]) -> dict[str, object]:
    """The options of ``cls``'s fields that were given on the command line (not ``None``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names and v is not None}
