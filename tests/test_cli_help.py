"""Every command's ``--help``: an example block naming the command, and the quick examples run as written.

The examples are read from the help text itself and run with bash in a scratch directory that looks like a source
checkout (``src`` and ``tests`` linked in), with ``slimasr`` the command of this tree; an example whose inputs come
from an earlier, slower example (a corpus, a training run) gets those inputs made small by the test.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from slimasr.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[str]:
    ctx = click.Context(group, info_name="slimasr")
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append(" ".join(prefix + (name,)))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, prefix + (name,))
    return out


def _help(path: str) -> str:
    r = CliRunner().invoke(main, [*path.split(), "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


def examples(path: str) -> list[str]:
    """The example lines of ``slimasr PATH --help`` (continuation lines joined, comments kept)."""
    text = _help(path)
    assert "Example:" in text, f"`slimasr {path} --help` has no example"
    block = text.split("Example:", 1)[1].split("\nOptions:", 1)[0]
    lines, cur = [], ""
    for line in block.splitlines():
        cur += line.strip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur:
            lines.append(cur)
        cur = ""
    return lines


@pytest.mark.parametrize("path", ["", *_commands()])
def test_every_command_has_an_example_of_itself(path):
    lines = [ln for ln in examples(path) if not ln.startswith("#")]
    assert any(f"slimasr {path}".strip() in ln for ln in lines), lines
    assert "%%" not in _help(path)           # click prints help text as written: no printf-style escapes


def _run(lines: list[str], cwd: Path) -> subprocess.CompletedProcess:
    script = "set -euo pipefail\nslimasr() { \"$PY\" -m slimasr.cli \"$@\"; }\n" + "\n".join(lines)
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "SLIMASR_CACHE": str(cwd / "cache")}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _lm_text(d: Path) -> None:
    (d / "data/synth8").mkdir(parents=True)
    (d / "data/synth8/lm_text.txt").write_text("the cat sat on the mat\nthe dog sat on the log\n" * 5)


# command -> (regular expression selecting the example lines to run, setup of their inputs, tools they need)
QUICK = {
    "info": (r"^slimasr info( --model src/\S+)?$", None, ()),
    "import wenet": (r"tests/fixtures", None, ()),
    "import nemo": (r"tests/fixtures", None, ()),
    "import espnet": (r"^d=|\$d/", None, ()),
    "prune oneshot": (r"--keep 8 --out", None, ()),
    "data import-kaldi": (r"hello", None, ("espeak-ng",)),
    "transcribe": (r"^espeak-ng", None, ("espeak-ng",)),
    "lm build": (r"^slimasr lm build", _lm_text, ("lmplz",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("path", list(QUICK))
def test_quick_examples_run_as_written(path, tmp_path):
    select, setup, tools = QUICK[path]
    for tool in tools:
        if tool == "lmplz":
            from slimasr.lm import KenLMToolMissing, find_kenlm_tool

            try:
                find_kenlm_tool(tool)
            except KenLMToolMissing:
                pytest.skip("KenLM's lmplz is not installed (run `make setup`)")
        elif shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (run `make setup`)")
    lines = [ln for ln in examples(path) if re.search(select, ln) and not ln.startswith("#")]
    assert lines, f"no example of `slimasr {path}` contains {select!r}"
    for name in ("src", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    if setup is not None:
        setup(tmp_path)
    p = _run(lines, tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, (lines, p.stdout[-2000:], p.stderr[-2000:])
