"""The export cache (slimasr.export.cache): location, key, integrity, concurrent exporters, a real export."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimasr.export.cache import (EXPORT_CODE, MANIFEST_FILE, ExportKind, cached_onnx_export, export_key,
                                  exports_dir)
from slimasr.fileutil import cache_dir

SRC = Path(__file__).resolve().parent.parent / "src"

# A stand-in for `slimasr export onnx [--streaming] --int8 --out OUT` (argv: OUT, KIND, CALLS, SECONDS): sleeps,
# appends a line to CALLS, writes the files an export of KIND describes.
FAKE_EXPORT = """
import json, pathlib, sys, time
out, kind, calls, seconds = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]), float(sys.argv[4])
time.sleep(seconds)
with open(calls, "a") as f:
    f.write(str(out) + "\\n")
out.mkdir()
for n in ("model.onnx", "model.int8.onnx", "tokens.txt"):
    (out / n).write_bytes(n.encode() * 100)
files = {"model": "model.onnx", "model_int8": "model.int8.onnx", "tokens": "tokens.txt"}
(out / "slimasr_export.json").write_text(json.dumps({"kind": kind, "files": files}))
"""


def fake(calls: Path, kind: str = "offline", seconds: float = 0.0) -> list[str]:
    return [sys.executable, "-c", FAKE_EXPORT, "{out}", kind, str(calls), str(seconds)]


def n_calls(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"weights")
    return p


# ---------------------------------------------------------------------------------------------- location and key
def test_location_honours_slimasr_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLIMASR_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "slimasr"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")           # ignored, as the XDG specification says
    assert cache_dir() == tmp_path / "home" / ".cache" / "slimasr"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "slimasr"
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert exports_dir() == tmp_path / "mine" / "exports"


def test_default_root_is_exports_dir(monkeypatch, tmp_path, model):
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path / "c"))
    out = cached_onnx_export(model, ExportKind(), command=fake(tmp_path / "calls"))
    assert out.parent == tmp_path / "c" / "exports" and out.name.startswith("offline-int8-")


def test_kind_names():
    assert ExportKind().name == "offline-int8"
    assert ExportKind(int8=False).name == "offline"
    assert ExportKind(streaming=True, chunk_size=8, left_chunks=2).name == "streaming-c8-l2-int8"
    assert ExportKind(streaming=True).cli_args() == ["--streaming", "--chunk-size", "16", "--left-chunks", "4",
                                                     "--int8"]
    with pytest.raises(ValueError, match="chunk_size"):
        ExportKind(streaming=True, chunk_size=0)


def test_key_changes_with_model_kind_version_and_code(model, monkeypatch):
    offline, streaming = ExportKind(), ExportKind(streaming=True)
    k = export_key(model, offline)
    assert export_key(model, offline) == k
    assert export_key(model, ExportKind(chunk_size=8)) == k              # offline ignores chunking
    others = {export_key(model, streaming), export_key(model, ExportKind(int8=False)),
              export_key(model, ExportKind(streaming=True, chunk_size=8)),
              export_key(model, ExportKind(streaming=True, left_chunks=2))}
    assert len(others) == 4 and k not in others
    model.write_bytes(b"weighs")                                        # same size, other bytes
    assert export_key(model, offline) != k
    model.write_bytes(b"weights")
    monkeypatch.setattr("slimasr.__version__", "0.0.0-other")
    assert export_key(model, offline) != k
    monkeypatch.undo()
    monkeypatch.setattr("slimasr.export.cache.export_code_digest", lambda: "other export code")
    assert export_key(model, offline) != k
    monkeypatch.undo()
    assert export_key(model, offline) == k


@pytest.mark.slow
def test_export_code_covers_what_an_export_imports():
    """Every slimasr module that loading and exporting a model imports is in EXPORT_CODE (or is the package's
    __init__, whose version is in the key), so a change to any of them gives new cache keys."""
    code = ("import sys, slimasr.export.onnx, slimasr.model; "
            "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items()) "
            "if n.startswith('slimasr') and getattr(m, '__file__', None)))")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    files = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           check=True).stdout.split()
    root = SRC / "slimasr"
    rel = {Path(f).resolve().relative_to(root).as_posix() for f in files}
    assert "export/onnx.py" in rel and "model/asr.py" in rel
    uncovered = [r for r in rel if r != "__init__.py" and r.split("/")[0] not in EXPORT_CODE]
    assert not uncovered, f"add to slimasr.export.cache.EXPORT_CODE: {uncovered}"


# ---------------------------------------------------------------------------------------------- integrity
def test_an_entry_is_reused_and_every_kind_has_its_own(tmp_path, model):
    calls = tmp_path / "calls"
    a = cached_onnx_export(model, ExportKind(), root=tmp_path / "x", command=fake(calls))
    assert n_calls(calls) == 1 and (a / MANIFEST_FILE).is_file()
    assert cached_onnx_export(model, ExportKind(), root=tmp_path / "x", command=fake(calls)) == a
    assert n_calls(calls) == 1
    b = cached_onnx_export(model, ExportKind(streaming=True), root=tmp_path / "x",
                           command=fake(calls, "streaming"))
    assert b != a and n_calls(calls) == 2
    manifest = json.loads((b / MANIFEST_FILE).read_text())
    assert manifest["key"] == export_key(model, ExportKind(streaming=True))
    assert set(manifest["files"]) == {"model.onnx", "model.int8.onnx", "tokens.txt", "slimasr_export.json"}
    assert not [p for p in (tmp_path / "x").iterdir() if p.is_dir() and p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("damage", ["truncated", "same size", "deleted file", "no record", "garbage record",
                                    "record of another key"])
def test_a_damaged_entry_is_rebuilt_not_used(tmp_path, model, damage):
    calls = tmp_path / "calls"
    out = cached_onnx_export(model, root=tmp_path / "x", command=fake(calls))
    good = (out / "model.onnx").read_bytes()
    if damage == "truncated":
        (out / "model.onnx").write_bytes(good[:10])
    elif damage == "same size":
        (out / "model.onnx").write_bytes(b"X" * len(good))
    elif damage == "deleted file":
        (out / "model.int8.onnx").unlink()
    elif damage == "no record":
        (out / MANIFEST_FILE).unlink()
    elif damage == "garbage record":
        (out / MANIFEST_FILE).write_text("{not json")
    else:
        rec = json.loads((out / MANIFEST_FILE).read_text())
        (out / MANIFEST_FILE).write_text(json.dumps({**rec, "key": "0" * 64}))
    assert cached_onnx_export(model, root=tmp_path / "x", command=fake(calls)) == out
    assert n_calls(calls) == 2
    assert (out / "model.onnx").read_bytes() == good and (out / "model.int8.onnx").is_file()
    assert cached_onnx_export(model, root=tmp_path / "x", command=fake(calls)) == out and n_calls(calls) == 2
    assert not [p for p in (tmp_path / "x").iterdir() if p.is_dir() and p.name.startswith(".")]


def test_a_first_export_is_info_and_a_damaged_entry_a_warning(tmp_path, model, caplog):
    caplog.set_level(logging.DEBUG, logger="slimasr.export.cache")
    out = cached_onnx_export(model, root=tmp_path / "x", command=fake(tmp_path / "calls"))
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "exporting" in caplog.records[0].message
    caplog.clear()
    cached_onnx_export(model, root=tmp_path / "x", command=fake(tmp_path / "calls"))      # a hit: silent
    assert not caplog.records
    (out / "model.onnx").write_bytes(b"X")
    cached_onnx_export(model, root=tmp_path / "x", command=fake(tmp_path / "calls"))
    warnings = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("rebuilding the cached export")


def test_a_failed_or_unusable_export_leaves_nothing(tmp_path, model):
    root = tmp_path / "x"
    with pytest.raises(RuntimeError, match="exit 3.*no space"):
        cached_onnx_export(model, root=root, command=[sys.executable, "-c",
                                                      "import sys; sys.stderr.write('no space'); sys.exit(3)"])
    empty = [sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).mkdir()", "{out}"]
    with pytest.raises(ValueError, match="no usable export"):
        cached_onnx_export(model, root=root, command=empty)
    with pytest.raises(ValueError, match="expected 'streaming'"):        # an offline export for a streaming kind
        cached_onnx_export(model, ExportKind(streaming=True), root=root, command=fake(tmp_path / "calls"))
    assert not [p for p in root.iterdir() if p.is_dir()]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        cached_onnx_export(tmp_path / "missing.pt", root=root, command=empty)


def test_concurrent_exporters_export_once(tmp_path, model):
    """Four processes ask for the same missing entry at once: one exports, the others wait and use its export."""
    calls, root = tmp_path / "calls", tmp_path / "x"
    code = ("import sys; from slimasr.export.cache import cached_onnx_export; "
            f"print(cached_onnx_export({str(model)!r}, root={str(root)!r}, command={fake(calls, seconds=1.0)!r}))")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    outs = {r[0].strip() for r in results}
    assert len(outs) == 1 and n_calls(calls) == 1
    out = Path(outs.pop())
    assert cached_onnx_export(model, root=root, command=fake(calls)) == out and n_calls(calls) == 1   # whole


# ---------------------------------------------------------------------------------------------- a real export
@pytest.mark.slow
def test_a_real_export_in_process_and_in_a_separate_process(tmp_path, one_torch_thread):
    """A tiny model: exported in this process, then (another kind) by `slimasr export onnx` in another process;
    both entries are complete exports the runtime opens, and are reused without exporting again."""
    from slimasr.model import build_model
    from slimasr.runtime import Recognizer

    pt = build_model("tiny").eval().save(tmp_path / "tiny.pt")
    offline = cached_onnx_export(pt, ExportKind(int8=False), root=tmp_path / "x")
    assert Recognizer.from_onnx(offline).model_file.name == "model.onnx"
    kind = ExportKind(streaming=True, chunk_size=4, left_chunks=2)
    streaming = cached_onnx_export(pt, kind, root=tmp_path / "x", separate_process=True)
    desc = json.loads((streaming / "slimasr_export.json").read_text())
    assert (desc["kind"], desc["chunk_size"], desc["left_chunks"]) == ("streaming", 4, 2)
    assert (streaming / "model.int8.onnx").is_file()
    never = [sys.executable, "-c", "raise SystemExit('exported again')"]
    assert cached_onnx_export(pt, kind, root=tmp_path / "x", command=never) == streaming
    assert cached_onnx_export(pt, ExportKind(int8=False), root=tmp_path / "x", command=never) == offline
