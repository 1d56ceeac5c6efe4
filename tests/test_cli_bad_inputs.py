"""Obviously bad arguments to transcribe, decode, export and info: one ``Error:`` line naming the input and what
was expected, never a traceback, and nothing decoded or written first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from slimasr.cli import main


def _error_line(args: list[str]) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code != 0 and "Traceback" not in r.output, (args, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, (args, r.output)
    return lines[0]


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path / "cache"))
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "a.jsonl").write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": "x"}) + "\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")      # how an ONNX protobuf starts
    (tmp_path / "plain").write_text("a file, not a folder")
    return tmp_path


def test_an_audio_file_given_as_a_manifest(files):
    line = _error_line(["decode", "--data", files / "a.wav"])
    assert f"{files / 'a.wav'}:1: not UTF-8 text" in line and "slimasr transcribe" in line


def test_a_manifest_given_as_audio_names_decode(files):
    r = CliRunner().invoke(main, ["transcribe", "--no-progress", str(files / "a.jsonl")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"audio file {files / 'a.jsonl'} is unreadable" in r.output
    assert f"a manifest (JSON lines) is decoded with `slimasr decode --data {files / 'a.jsonl'}`" in r.output


@pytest.mark.parametrize("name", ["a.wav", "a.jsonl", "model.onnx"])
@pytest.mark.parametrize("command", [["info"], ["export", "onnx", "--out", "OUT"]])
def test_a_file_that_is_no_model(files, name, command):
    args = [files / "out" if a == "OUT" else a for a in command]
    line = _error_line([*args, "--model", files / name])
    assert f"{files / name} is not a readable slimasr checkpoint (not a PyTorch file; expected a .pt" in line


@pytest.mark.parametrize("command", [["decode", "--data", "MANIFEST"], ["transcribe", "WAV"]])
def test_a_model_directory_that_is_no_export(files, command):
    args = [files / "a.jsonl" if a == "MANIFEST" else files / "a.wav" if a == "WAV" else a for a in command]
    line = _error_line([*args, "--model", files / "dir"])
    assert f"model {files / 'dir'} is a directory without slimasr_export.json" in line


def test_a_directory_in_a_manifest_is_named_and_skipped(files):
    rows = [{"audio_filepath": "a.wav", "duration": 1.0, "text": "x"},
            {"audio_filepath": "dir", "duration": 1.0, "text": "y"}]
    (files / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["decode", "--data", str(files / "m.jsonl"), "--no-progress"])
    assert r.exit_code == 1, r.output                     # the others are scored; the status says one was skipped
    assert f"audio file {files / 'dir'} is a directory, expected an audio file" in r.output
    assert "1 utterances" in r.output and "skipped 1" in r.output


def test_an_export_that_cannot_be_written(files):
    line = _error_line(["export", "onnx", "--out", files / "plain" / "onnx"])
    assert f"--out {files / 'plain' / 'onnx'}: cannot write the export" in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (writable by no one, root included)")
def test_an_output_folder_that_permission_bits_call_writable_but_is_not(files):
    """As root, os.access says every folder is writable; the check writes a file instead."""
    line = _error_line(["decode", "--data", files / "a.jsonl", "--out", "/proc/slimasr-hyps.jsonl"])
    assert "--out /proc/slimasr-hyps.jsonl: the folder /proc is not writable" in line


def test_a_streaming_window_too_large_to_export(files):
    for args in (["export", "onnx", "--out", files / "o", "--streaming", "--chunk-size", "100000"],
                 ["decode", "--data", files / "a.jsonl", "--backend", "onnx", "--chunk-size", "100000",
                  "--left-chunks", "4"]):
        line = _error_line(args)
        assert "= 500000 encoder frames, at most 5000" in line, line
    assert not (files / "o").exists()


@pytest.mark.parametrize("device, fragment", [("foo", "expected a torch device such as cpu, cuda or cuda:1, got 'foo'"),
                                              ("mps", "expected cpu, cuda or cuda:N, got 'mps'"),
                                              ("cuda:99", "cuda:99: ")])
@pytest.mark.parametrize("command", [["decode", "--data", "MANIFEST"],
                                     ["prune", "score", "--data", "MANIFEST", "--out", "OUT"],
                                     ["train", "--config", "tiny", "--train", "MANIFEST", "--out", "OUT"]])
def test_a_device_torch_cannot_use_is_a_usage_error(files, command, device, fragment):
    args = [files / "a.jsonl" if a == "MANIFEST" else files / "out" if a == "OUT" else a for a in command]
    r = CliRunner().invoke(main, [str(a) for a in args] + ["--device", device])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"Invalid value for '--device': {fragment}" in r.output, r.output
    assert not (files / "out").exists()


def test_bench_checks_the_device_name_and_leaves_a_missing_gpu_to_its_runs(files):
    """bench skips, with the reason, the torch runs a missing GPU rules out (tests/test_cli_options.py passes
    --device cuda through); a name torch does not know is still a usage error."""
    r = CliRunner().invoke(main, ["bench", "--data", str(files / "a.jsonl"), "--json", str(files / "b.json"),
                                  "--device", "foo"])
    assert r.exit_code == 2 and "Invalid value for '--device': expected a torch device" in r.output, r.output


def test_a_manifest_line_that_is_not_utf8_is_one_skipped_row(tmp_path):
    from slimasr.data.manifest import ManifestError, read_manifest

    good = '{"audio_filepath": "%s.wav", "duration": 1.0, "text": "ok"}\n'
    m = tmp_path / "m.jsonl"
    m.write_bytes((good % "a").encode() + '{"text": "caf\xe9"}\n'.encode("latin-1") + (good % "b").encode())
    skipped: list = []
    assert [Path(r["audio_filepath"]).name for r in read_manifest(m, skipped=skipped)] == ["a.wav", "b.wav"]
    assert len(skipped) == 1 and skipped[0].where == f"{m}:2" and "not UTF-8 text" in str(skipped[0])
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not UTF-8 text"):
        read_manifest(m)


def test_serve_given_a_model_file_names_the_export_command(files):
    """serve runs an ONNX export; a .pt model file is refused with the export command that makes one."""
    from slimasr.model import build_model

    path = build_model("tiny").save(files / "m.pt")
    line = _error_line(["serve", "--port", "0", "--model", path])
    assert f"--model {path} is a file; expected an ONNX export directory" in line
    assert f"slimasr export onnx --model {path} --out DIR --streaming" in line
    # a model that cannot stream (per-utterance normalisation, e.g. NeMo) is named with the offline export
    from slimasr.features import FrontendConfig

    m = build_model("tiny")
    m.set_frontend(FrontendConfig(cmvn="utterance_mean"))
    path = m.save(files / "utt.pt")
    line = _error_line(["serve", "--port", "0", "--model", path])
    assert f"slimasr export onnx --model {path} --out DIR (offline: its front-end normalises" in line, line
    assert "--streaming" not in line


@pytest.mark.parametrize("command", [["average", "--out", "OUT"], ["bench", "--data", "MANIFEST", "--json", "OUT"]])
def test_an_onnx_export_where_a_pt_model_is_needed(files, command):
    export = files / "export"
    export.mkdir()
    (export / "slimasr_export.json").write_text("{}")
    args = [files / "a.jsonl" if a == "MANIFEST" else files / "o.json" if a == "OUT" else a for a in command]
    line = _error_line([*args[:1], export, *args[1:]] if command[0] == "average" else [*args, "--model", export])
    assert f"{export} is a directory, expected a slimasr model file (.pt); it is an ONNX export" in line
    assert "give the .pt model it was exported from" in line


def test_a_warning_is_one_line_without_the_source_line():
    """The command prints a library warning as its kind and message, not Python's file:line and source line."""
    code = ("import warnings, click\n"
            "from slimasr.cli import main\n"
            "main.add_command(click.Command('w', callback=lambda: warnings.warn('chunk 16 was never trained')))\n"
            "main(['w'])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "UserWarning: chunk 16 was never trained\n", p.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--hours", "nan"], "Invalid value for '--hours': 'nan' is not a positive finite number"),
    (["--hours", "0"], "Invalid value for '--hours': '0' is not a positive finite number"),
    (["--threads", "0"], "Invalid value for '--threads': 0 is not in the range x>=1")])
def test_demo_refuses_bad_hours_and_threads_before_any_work(tmp_path, args, fragment):
    """--threads 0 used to fail at the export, after the synthesis and the decoding."""
    assert fragment in _error_line(["demo", "--work", tmp_path / "w", *args])
    assert not (tmp_path / "w").exists()
