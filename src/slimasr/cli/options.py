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
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence

import click

__all__ = ["POSITIVE_FLOAT", "dataclass_options", "field_help", "field_option", "given", "option_name"]

_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


class _PositiveFloat(click.ParamType):
    """A float > 0 and finite (``click.FloatRange(min=0, min_open=True)`` lets ``nan`` and ``inf`` through)."""

    name = "float"

    def convert(self, value, param, ctx) -> float:
        x = click.FLOAT.convert(value, param, ctx)
        if not 0 < x < math.inf:
            self.fail(f"{value!r} is not a positive finite number", param, ctx)
        return x


POSITIVE_FLOAT = _PositiveFloat()


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


def field_help(cls, name: str) -> str:
    """The help text of ``cls``'s field ``name``: ``metadata["help"]``, else the class docstring's entry."""
    fld = next(f for f in dataclasses.fields(cls) if f.name == name)
    return fld.metadata.get("help") or _docstring_help(cls).get(name, "")


def _shown(value) -> str:
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else str(value)


def field_option(cls, name: str, *decls: str, required: bool = False, note: str | None = None, **kw) -> Callable:
    """One click option for field ``name`` of ``cls``: the parameter is the field's name, its default ``None``
    (not given: the field's default applies), its help the field's with ``[default: ...]``: the field's default,
    or ``note`` where the command decides what an option not given means (e.g. ``--chunk-size``: "offline").

    ``decls`` are the option's spellings (default: ``option_name(name)``); ``kw`` go to :func:`click.option`
    (e.g. ``type=click.Choice(...)``); the type defaults to the field's (``int``, ``float``, ``str``).
    """
    fld = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if fld is None:
        raise TypeError(f"{cls.__name__} has no field {name}")
    if "type" not in kw:
        tp = _base_type(typing.get_type_hints(cls)[name])
        if tp not in _TYPES:
            raise TypeError(f"{cls.__name__}.{name}: no option type for {tp!r}")
        kw["type"] = _TYPES[tp]
    if note is not None:
        suffix = f" [default: {note}]"
    elif required or fld.default in (None, dataclasses.MISSING):
        suffix = ""
    else:
        suffix = f" [default: {_shown(fld.default)}]"
    kw.setdefault("default", None)
    return click.option(*(decls or (option_name(name),)), name, required=required,
                        help=f"{field_help(cls, name)}{suffix}", **kw)


def dataclass_options(cls, names: Sequence[str] | None = None, required: Sequence[str] = ()) -> Callable:
    """A decorator adding the options of ``cls``'s fields (``names``, default: those with ``metadata["cli"]``)
    to a click command, in field order; ``required`` ones must be given. A ``bool`` field is a ``--x/--no-x``
    switch."""
    hints = typing.get_type_hints(cls)
    fields = _cli_fields(cls, names)

    def decorate(f: Callable) -> Callable:
        for fld in reversed(fields):
            name = option_name(fld.name)
            if _base_type(hints[fld.name]) is bool:
                f = field_option(cls, fld.name, f"{name}/--no-{name[2:]}", type=None)(f)
            else:
                f = field_option(cls, fld.name, required=fld.name in required)(f)
        return f

    return decorate


def given(cls, options: Mapping[str, object]) -> dict[str, object]:
    """The options of ``cls``'s fields that were given on the command line (not ``None``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names and v is not None}


# ---------------------------------------------------------------------------------------------- decoding commands
# The options of the commands that decode (decode, transcribe, serve, bench, demo), built from the fields of
# DecodingConfig (the search) and BackendConfig (threads, thread policy, chunking): one default and one help text
# per option, whichever command shows it.
SPIN_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}


def decoding_options(multiple: bool = False) -> Callable:
    """``--decoder``, ``--beam-size``, ``--lm``, ``--lm-weight``, ``--word-score`` from
    :class:`~slimasr.runtime.decoders.DecodingConfig`'s fields (``method`` is spelled ``--decoder``);
    ``multiple``: ``--decoder`` may be repeated (``slimasr bench``). Read them back with :func:`decoding_config`."""
    from ..runtime.decoders import METHODS, DecodingConfig

    options = [field_option(DecodingConfig, "method", "--decoder", type=click.Choice(METHODS), multiple=multiple),
               field_option(DecodingConfig, "beam_size"),
               field_option(DecodingConfig, "lm", type=click.Path(dir_okay=False)),
               field_option(DecodingConfig, "lm_weight"),
               field_option(DecodingConfig, "word_score")]

    def decorate(f: Callable) -> Callable:
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


def decoding_config(options: Mapping[str, object], methods: Sequence[str] | None = None):
    """The :class:`~slimasr.runtime.decoders.DecodingConfig` of the options :func:`decoding_options` added (those
    not given keep the field's default). ``methods``: the search methods of a command that runs several
    (``slimasr bench``); the result is then the beam-search settings of its beam runs.

    Raises:
        click.ClickException: a beam-search option (``--lm``, ``--beam-size``, ``--lm-weight``, ``--word-score``)
            without beam search, a missing LM file, a beam below 1.
    """
    from pathlib import Path

    from ..runtime.decoders import DecodingConfig

    chosen = given(DecodingConfig, options)
    if methods is not None:
        chosen["method"] = "beam"
    lm = chosen.get("lm")
    beam_only = [option_name(k) for k in ("lm", "beam_size", "lm_weight", "word_score") if k in chosen]
    if beam_only and (chosen.get("method", DecodingConfig.method) != "beam" or (methods and "beam" not in methods)):
        raise click.ClickException(f"{', '.join(beam_only)} {'is' if len(beam_only) == 1 else 'are'} used by beam "
                                   "search only: add --decoder beam")
    if lm and not Path(lm).is_file():
        raise click.ClickException(f"--lm {lm} does not exist (build one with `slimasr lm build`)")
    if chosen.get("beam_size", 1) < 1:
        raise click.ClickException(f"--beam-size must be at least 1, got {chosen['beam_size']}")
    try:
        return DecodingConfig(**chosen)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def threads_option(f: Callable) -> Callable:
    """``--threads`` from :class:`~slimasr.decoding.BackendConfig`'s ``threads`` (at least 1); read it back with
    :func:`backend_setting`."""
    from ..decoding import BackendConfig

    return field_option(BackendConfig, "threads", type=click.IntRange(min=1))(f)


def _check_device(value: str | None, available: bool) -> str | None:
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except RuntimeError:
        raise click.BadParameter(f"expected a torch device such as cpu, cuda or cuda:1, got {value!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}")
    if available and dev.type == "cuda":
        if not torch.cuda.is_available():
            raise click.BadParameter(f"{value}: no CUDA GPU is available here (torch.cuda.is_available() is "
                                     "False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise click.BadParameter(f"{value}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return value


def torch_device(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """Callback of the ``--device`` options: ``value`` when torch can use that device here, else a usage error
    naming it (not cpu / cuda / cuda:N, no CUDA GPU, a GPU index past the last). torch is imported only when a
    device is given."""
    return _check_device(value, available=True)


def torch_device_name(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> str | None:
    """:func:`torch_device` without the look for a GPU: for commands that skip, with the reason, the runs a missing
    GPU rules out (``slimasr bench``)."""
    return _check_device(value, available=False)


def device_option(f: Callable | None = None, *, require_available: bool = True) -> Callable:
    """``--device`` from :class:`~slimasr.decoding.BackendConfig`'s ``device``, checked by :func:`torch_device`
    (or :func:`torch_device_name` without ``require_available``); read it back with :func:`backend_setting`.
    Use as ``@device_option`` or ``@device_option(require_available=False)``."""
    from ..decoding import BackendConfig

    def add(g: Callable) -> Callable:
        check = torch_device if require_available else torch_device_name
        return field_option(BackendConfig, "device", callback=check)(g)

    return add(f) if f is not None else add


def backend_setting(name: str, value):
    """The value of an option built from :class:`~slimasr.decoding.BackendConfig`'s field ``name``: ``value``,
    or the field's default when the option was not given."""
    from ..decoding import BackendConfig

    return getattr(BackendConfig, name) if value is None else value


def spin_threads_option(both: bool = False) -> Callable:
    """``--spin-threads off|on`` (``both``: also ``both``, every onnx run both ways: ``slimasr bench``) from
    :class:`~slimasr.decoding.BackendConfig`'s ``spin_threads``; read it back with :func:`spin_policies`."""
    from ..decoding import BackendConfig

    choices = list(SPIN_CHOICES) if both else ["off", "on"]
    return field_option(BackendConfig, "spin_threads", type=click.Choice(choices))


def spin_policies(value: str | None) -> tuple[bool, ...]:
    """``--spin-threads`` -> the thread policies to run (``(False, True)`` for ``both``)."""
    from ..decoding import BackendConfig

    return (BackendConfig.spin_threads,) if value is None else SPIN_CHOICES[value]


def chunking_options(chunk_size: object, left_chunks: object) -> Callable:
    """``--chunk-size`` and ``--left-chunks`` with the help of :class:`~slimasr.chunking.Chunking`'s fields (as
    ``slimasr prune score`` has them). Not given, each means what the command says: ``chunk_size`` and
    ``left_chunks`` are shown as the defaults (a value, or words: "offline", "the export's"). Both take integers
    >= 1; click refuses others naming the option."""
    from ..chunking import Chunking

    c = field_option(Chunking, "chunk_size", note=str(chunk_size), type=click.IntRange(min=1))
    ell = field_option(Chunking, "left_chunks", note=str(left_chunks), type=click.IntRange(min=1))
    return lambda f: c(ell(f))
