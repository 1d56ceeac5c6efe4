"""The options of the commands that decode are built from the config dataclasses: one default and one help
text per option, whichever command shows it, and the parsed options build the configs those commands run with.
No library function changes process-wide state (torch's thread count, logging, the environment)."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from slimasr.chunking import Chunking
from slimasr.cli import main as group
from slimasr.cli.options import backend_setting, decoding_config, field_help, spin_policies
from slimasr.decoding import BackendConfig
from slimasr.runtime import RecognizerConfig
from slimasr.runtime.decoders import DecodingConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "slimasr"


def _command(path: str) -> click.Command:
    ctx = click.Context(group)
    cmd = group
    for name in path.split():
        cmd = cmd.get_command(ctx, name)
    return cmd


def _option(cmd: click.Command, name: str) -> click.Option:
    opt = next((p for p in cmd.params if p.name == name), None)
    assert opt is not None, f"{cmd.name} lacks the option of field {name}"
    return opt


def _default(cls, name):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default


# option parameter -> (its dataclass, field, the commands that have it, the option's spelling)
SHARED = {
    "method": (DecodingConfig, "method", ("decode", "transcribe", "bench"), "--decoder"),
    "beam_size": (DecodingConfig, "beam_size", ("decode", "transcribe", "bench"), "--beam-size"),
    "lm": (DecodingConfig, "lm", ("decode", "transcribe", "bench"), "--lm"),
    "lm_weight": (DecodingConfig, "lm_weight", ("decode", "transcribe", "bench"), "--lm-weight"),
    "word_score": (DecodingConfig, "word_score", ("decode", "transcribe", "bench"), "--word-score"),
    "threads": (BackendConfig, "threads", ("decode", "transcribe", "serve", "bench"), "--threads"),
    "spin_threads": (BackendConfig, "spin_threads", ("decode", "transcribe", "serve", "bench"), "--spin-threads"),
    "device": (BackendConfig, "device", ("decode", "bench"), "--device"),
    "chunk_size": (Chunking, "chunk_size", ("decode", "transcribe", "serve", "bench", "prune score"),
                   "--chunk-size"),
    "left_chunks": (Chunking, "left_chunks", ("decode", "transcribe", "serve", "bench", "prune score"),
                    "--left-chunks"),
}


@pytest.mark.parametrize("param", list(SHARED))
def test_a_runtime_option_has_one_help_and_the_dataclass_default_in_every_command(param):
    cls, name, commands, spelling = SHARED[param]
    text = field_help(cls, name)
    assert text, f"{cls.__name__}.{name} has no help text"
    default = _default(cls, name)
    shown = {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) else default
    for path in commands:
        opt = _option(_command(path), param)
        assert spelling in opt.opts, (path, opt.opts)
        assert opt.default is None, (path, opt.default)          # not given: the dataclass's default applies
        assert opt.help.startswith(text), (path, opt.help)       # one help text
        if cls is not Chunking and default is not None:        # the dataclass's default is the one shown
            assert opt.help.endswith(f"[default: {shown}]"), (path, opt.help)


@pytest.mark.parametrize("path", ["decode", "transcribe", "serve", "bench", "bench-server", "demo", "prune score"])
def test_help_has_a_runnable_example(path):
    r = CliRunner().invoke(group, [*path.split(), "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "slimasr " + path in r.output, r.output


def test_the_runtime_configs_agree_on_the_shared_defaults():
    """--threads and --spin-threads are BackendConfig's; the runtime's RecognizerConfig has the same defaults,
    and bench's RunSpec takes its defaults from both dataclasses."""
    from slimasr.bench.runner import RunSpec

    assert BackendConfig.threads == RecognizerConfig.num_threads == RunSpec.threads == 1
    assert BackendConfig.spin_threads is RecognizerConfig.spin_threads is RunSpec.spin_threads is False
    assert (RunSpec.beam_size, RunSpec.lm_weight, RunSpec.word_score) == (
        DecodingConfig.beam_size, DecodingConfig.lm_weight, DecodingConfig.word_score)
    assert RunSpec.device == BackendConfig.device == "cpu"
    assert backend_setting("threads", None) == 1 and backend_setting("threads", 3) == 3
    assert spin_policies(None) == (False,) and spin_policies("on") == (True,) and spin_policies("both") == (False, True)


def _parsed(path: str, *args: str) -> dict:
    cmd = _command(path)
    return cmd.make_context(path.split()[-1], list(args)).params


@pytest.mark.parametrize("path,required", [("decode", ("--data", "m.jsonl")), ("transcribe", ("a.wav",)),
                                           ("bench", ("--data", "m.jsonl", "--json", "b.json"))])
def test_the_parsed_options_build_the_decoding_config(path, required, tmp_path):
    nothing = _parsed(path, *required)
    if path == "bench":
        assert decoding_config(nothing, methods=("greedy",)) == dataclasses.replace(DecodingConfig(), method="beam")
        assert nothing["method"] == ()                     # bench: RunSpec's decoder (greedy) when none is given
    else:
        assert decoding_config(nothing) == DecodingConfig()
    lm = tmp_path / "lm.arpa"
    lm.write_text("\\data\\\n")
    given = _parsed(path, *required, "--decoder", "beam", "--beam-size", "8", "--lm", str(lm), "--lm-weight",
                    "0.3", "--word-score", "1.5", "--threads", "3", "--spin-threads", "on", "--chunk-size", "8",
                    "--left-chunks", "2")
    want = DecodingConfig(method="beam", beam_size=8, lm=str(lm), lm_weight=0.3, word_score=1.5)
    if path == "bench":
        assert decoding_config(given, methods=given["method"]) == want and given["method"] == ("beam",)
    else:
        assert decoding_config(given) == want
    assert backend_setting("threads", given["threads"]) == 3 and spin_policies(given["spin_threads"]) == (True,)
    assert (given["chunk_size"], given["left_chunks"]) == (8, 2)


def test_bad_decoding_options_are_refused_by_name(tmp_path):
    with pytest.raises(click.ClickException, match="--decoder beam"):
        decoding_config({"lm": str(tmp_path / "x.arpa")})
    with pytest.raises(click.ClickException, match="--decoder beam"):
        decoding_config({"lm": str(tmp_path / "x.arpa")}, methods=("greedy",))
    for name, value in (("beam_size", 8), ("lm_weight", 0.3), ("word_score", 1.0)):   # not silently ignored
        opt = "--" + name.replace("_", "-")
        for methods in (None, ("greedy",)):
            with pytest.raises(click.ClickException, match=f"{opt} is used by beam search only: add --decoder beam"):
                decoding_config({name: value}, methods=methods)
    with pytest.raises(click.ClickException, match="does not exist"):
        decoding_config({"method": "beam", "lm": str(tmp_path / "x.arpa")})
    with pytest.raises(click.ClickException, match="--beam-size must be at least 1, got 0"):
        decoding_config({"method": "beam", "beam_size": 0})
    r = CliRunner().invoke(group, ["decode", "--data", "m.jsonl", "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output, r.output


def test_bench_runs_use_the_parsed_beam_settings():
    from slimasr.bench.runner import ModelSpec, _decoding_config, plan_runs

    specs = plan_runs([ModelSpec("a")], ["torch"], ["offline"], ("greedy", "beam"), data="t.jsonl",
                      beam_size=8, lm_weight=0.3, word_score=1.5)
    assert [_decoding_config(s) for s in specs] == [
        DecodingConfig(), DecodingConfig(method="beam", beam_size=8, lm_weight=0.3, word_score=1.5)]


class _Stop(ValueError):
    pass


def _captured(monkeypatch, target: str, attr: str, classmethod_: bool = False) -> dict:
    """Replace ``target.attr`` by a function that records its arguments and stops the command (a ValueError,
    which every command turns into a one-line error)."""
    import importlib

    seen: dict = {}

    def record(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise _Stop("stopped by the test")

    module, _, cls = target.partition(":")
    owner = getattr(importlib.import_module(module), cls) if cls else importlib.import_module(module)
    monkeypatch.setattr(owner, attr, classmethod(lambda c, *a, **k: record(*a, **k)) if classmethod_ else record)
    return seen


def _invoke(*args: str) -> None:
    r = CliRunner().invoke(group, list(args))
    assert r.exit_code == 1 and "stopped by the test" in r.output and "Traceback" not in r.output, r.output


def test_each_command_runs_with_the_dataclass_defaults_when_nothing_is_given(monkeypatch, tmp_path):
    """What each command builds from its options when none is given: the dataclasses' defaults, not a value
    written in the command."""
    from slimasr.bench.runner import RunSpec
    from slimasr.export.cache import ExportKind
    from slimasr.runtime import StreamingConfig

    seen = _captured(monkeypatch, "slimasr.decoding", "decode_manifest")
    _invoke("decode", "--data", "m.jsonl", "--backend", "onnx")
    assert seen["args"][2] == BackendConfig(backend="onnx")

    seen = _captured(monkeypatch, "slimasr.decoding", "open_backend")
    _invoke("transcribe", "a.wav")                  # a .pt model is exported as the export cache does by default
    assert seen["args"][1] == BackendConfig(backend="onnx", chunk_size=ExportKind.chunk_size,
                                            left_chunks=ExportKind.left_chunks)

    seen = _captured(monkeypatch, "slimasr.runtime:Recognizer", "from_onnx", classmethod_=True)
    _invoke("serve", "--model", str(tmp_path))
    k = seen["kwargs"]
    assert (k["num_threads"], k["spin_threads"], k["streaming"]) == (
        RecognizerConfig.num_threads, RecognizerConfig.spin_threads, StreamingConfig())

    seen = _captured(monkeypatch, "slimasr.bench", "run_benchmark")
    _invoke("bench", "--data", "m.jsonl", "--json", str(tmp_path / "b.json"))
    (spec,) = seen["args"][0]
    assert spec == RunSpec(model="default", model_path=None, data="m.jsonl")


def test_each_command_runs_with_the_options_given(monkeypatch, tmp_path):
    from slimasr.bench.runner import RunSpec
    from slimasr.runtime import StreamingConfig

    lm = tmp_path / "lm.arpa"
    lm.write_text("\\data\\\n")
    search = ("--decoder", "beam", "--beam-size", "8", "--lm", str(lm), "--lm-weight", "0.3", "--word-score", "1.5")
    dec = DecodingConfig(method="beam", beam_size=8, lm=str(lm), lm_weight=0.3, word_score=1.5)
    runtime = ("--threads", "3", "--spin-threads", "on", "--chunk-size", "8", "--left-chunks", "2")

    seen = _captured(monkeypatch, "slimasr.decoding", "decode_manifest")
    _invoke("decode", "--data", "m.jsonl", "--backend", "onnx", *search, *runtime)
    assert seen["args"][2] == BackendConfig(backend="onnx", chunk_size=8, left_chunks=2, decoding=dec, threads=3,
                                            spin_threads=True)

    seen = _captured(monkeypatch, "slimasr.decoding", "open_backend")
    _invoke("transcribe", "a.wav", *search, *runtime)
    assert seen["args"][1] == BackendConfig(backend="onnx", chunk_size=8, left_chunks=2, decoding=dec, threads=3,
                                            spin_threads=True)

    seen = _captured(monkeypatch, "slimasr.runtime:Recognizer", "from_onnx", classmethod_=True)
    _invoke("serve", "--model", str(tmp_path), *runtime)
    k = seen["kwargs"]
    assert (k["num_threads"], k["spin_threads"], k["streaming"]) == (3, True, StreamingConfig(8, 2))

    seen = _captured(monkeypatch, "slimasr.bench", "run_benchmark")
    _invoke("bench", "--data", "m.jsonl", "--json", str(tmp_path / "b.json"), "--decoder", "greedy", *search,
            *runtime[:2], "--spin-threads", "both", *runtime[4:], "--device", "cuda")
    specs = seen["args"][0]
    common = dict(model="default", model_path=None, data="m.jsonl", threads=3, chunk_size=8, left_chunks=2,
                  device="cuda", beam_size=8, lm_weight=0.3, word_score=1.5)
    assert specs == [RunSpec(decoder="greedy", **common), RunSpec(decoder="beam", lm=str(lm), **common)]


# ---------------------------------------------------------------------------------------------- no global state
# Process entry points may set process-wide state: the CLI (slimasr.cli), the benchmark's child process and the
# reproduction's worker processes. Nothing else in the package may.
ENTRY_POINTS = {("bench/runner.py", "_main"), ("recipes/reproduce/workers.py", "_worker_main")}
GLOBAL_CALLS = {"set_num_threads", "set_num_interop_threads", "basicConfig", "putenv"}


def _global_state_changes(tree: ast.AST):
    """(function, what) for every call that changes process-wide state, with the function it is in."""
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                attr, owner = child.func.attr, child.func.value
                if attr in GLOBAL_CALLS:
                    out.append((func, attr))
                elif attr in ("setLevel",) and isinstance(owner, ast.Call) and not owner.args:
                    out.append((func, "root logger level"))             # logging.getLogger().setLevel
                elif attr in ("setdefault", "update", "pop") and ast.unparse(owner) == "os.environ":
                    out.append((func, f"os.environ.{attr}"))
            if isinstance(child, (ast.Assign, ast.AugAssign)):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for t in targets:
                    if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ":
                        out.append((func, "os.environ[...] ="))
            visit(child, inner)

    visit(tree, None)
    return out


def test_no_library_function_changes_process_wide_state():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):
            continue
        for func, what in _global_state_changes(ast.parse(path.read_text(encoding="utf-8"))):
            if (rel, func) not in ENTRY_POINTS:
                found.append(f"{rel}:{func}: {what}")
    assert not found, found


def test_the_scan_finds_what_it_looks_for():
    code = ("import os, torch, logging\n"
            "def f():\n    torch.set_num_threads(2)\n"
            "def g():\n    os.environ['X'] = '1'\n    logging.getLogger().setLevel(10)\n"
            "def h():\n    logging.getLogger(__name__).setLevel(10)\n    os.environ.get('X')\n")
    assert sorted(_global_state_changes(ast.parse(code))) == [
        ("f", "set_num_threads"), ("g", "os.environ[...] ="), ("g", "root logger level")]


def test_the_gemm_floor_runs_at_the_process_threads_and_changes_none():
    import torch

    from slimasr.bench.flops import Gemm, time_gemms

    g = [Gemm("w", "ffn", m=4, k=8, n=8)]
    n = torch.get_num_threads()
    with pytest.raises(ValueError, match=rf"measured at {n + 1} thread\(s\) but torch runs {n}"):
        time_gemms(g, threads=n + 1)
    assert torch.get_num_threads() == n
    times = time_gemms(g, threads=n, min_time=1e-4)
    assert torch.get_num_threads() == n and times[g[0].shape]["best"] > 0
