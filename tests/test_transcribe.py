"""``slimasr transcribe`` and ``Recognizer.transcribe_long`` on espeak-ng speech: formats, segments at endpoints,
word timestamps, directories / globs / stdin / stereo 44.1 kHz, an unreadable file among many, torch and runtime."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from slimasr.cli import main

pytestmark = [pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                 reason="espeak-ng is not installed (make setup installs it)"),
              pytest.mark.slow]  # exports the default model and transcribes long audio


def _say(path, text, voice="en-us+m3"):
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    x, sr = sf.read(str(path), dtype="float32")
    return x, sr


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """two.wav: two phrases 2.5 s apart (an endpoint between them, rule 2); one.wav; a stereo 44.1 kHz FLAC of
    one.wav; a file that is not audio."""
    from scipy.signal import resample_poly

    d = tmp_path_factory.mktemp("transcribe")
    a, sr = _say(d / "a.wav", "hello there my friend")
    b, _ = _say(d / "b.wav", "the quick brown fox jumps over the lazy dog")
    sf.write(d / "two.wav", np.concatenate([a, np.zeros(int(2.5 * sr), np.float32), b]), sr)
    os.remove(d / "a.wav")
    os.replace(d / "b.wav", d / "one.wav")
    y = resample_poly(b, 44100, sr).astype(np.float32)
    (d / "more").mkdir()
    sf.write(d / "more" / "one_stereo44k.flac", np.stack([y, 0.5 * y], axis=1), 44100)
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return d


@pytest.fixture(autouse=True)
def _export_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _run(*args):
    return CliRunner().invoke(main, ["transcribe", "--no-progress", *map(str, args)])


def test_json_has_segments_at_the_endpoint_and_word_times(audio):
    r = _run(audio / "two.wav", "--format", "json")
    assert r.exit_code == 0, r.output
    t = json.loads(r.stdout)
    assert t["file"].endswith("two.wav") and t["duration"] == pytest.approx(sf.info(str(audio / "two.wav")).duration,
                                                                           abs=1e-3)
    segs = t["segments"]
    assert len(segs) == 2, segs                          # rule 2: 1.2 s of silence after speech
    assert "friend" in segs[0]["text"] and "lazy dog" in segs[1]["text"]
    words = [w for s in segs for w in s["words"]]
    assert " ".join(w["word"] for w in words) == " ".join(s["text"] for s in segs) == t["text"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["start"] < w["end"] for w in words)
    assert segs[0]["end"] < 2.0 < segs[1]["start"]       # the second phrase starts after the 2.5 s pause


def test_srt_and_vtt(audio, tmp_path):
    r = _run(audio / "two.wav", "--format", "srt", "--out", tmp_path / "two.srt")
    assert r.exit_code == 0, r.output
    cue = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    blocks = (tmp_path / "two.srt").read_text().strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["1", "2"]
    assert all(re.fullmatch(cue.replace("[,.]", ","), b.splitlines()[1]) for b in blocks)
    r = _run(audio / "two.wav", "--format", "vtt")
    assert r.exit_code == 0, r.output
    vtt = r.stdout.split("\n\n")
    assert vtt[0] == "WEBVTT" and re.fullmatch(cue.replace("[,.]", r"\."), vtt[1].splitlines()[0])
    assert vtt[1].splitlines()[1] == blocks[0].splitlines()[2]          # same first cue text in both formats


def test_many_inputs_directory_glob_stdin_and_a_broken_file(audio, tmp_path):
    r = _run(audio / "more", str(audio / "o*.wav"), audio / "broken.wav", "--out", tmp_path / "out")
    assert r.exit_code == 1                                   # something was skipped (documented in --help)
    assert "broken.wav is unreadable" in r.stderr and "1 of 3 inputs skipped" in r.stderr, r.stderr
    one = (tmp_path / "out" / "one.txt").read_text()
    stereo = (tmp_path / "out" / "one_stereo44k.txt").read_text()
    assert "quick brown" in one and "quick brown" in stereo   # stereo 44.1 kHz FLAC mixed down and resampled
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-m", "slimasr.cli", "transcribe", "-", "--no-progress"],
                       input=(audio / "one.wav").read_bytes(), capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode() == one                           # the same WAV on standard input
    r = _run(str(audio / "nothing*.wav"))
    assert r.exit_code != 0 and "no file matches" in r.output


def test_torch_backend_equals_the_runtime(audio):
    a = _run(audio / "two.wav", "--backend", "torch")
    b = _run(audio / "two.wav", "--backend", "onnx")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 2


def test_recognizer_transcribe_long(audio):
    from slimasr.decoding import cached_export
    from slimasr.runtime import Recognizer

    export = cached_export(None, None, streaming=True, chunk_size=16, left_chunks=4)
    rec = Recognizer.from_onnx(export)
    t = rec.transcribe_long(audio / "two.wav")
    cli = json.loads(_run(audio / "two.wav", "--format", "json", "--model", export).stdout)
    assert [s.text for s in t.segments] == [s["text"] for s in cli["segments"]] and len(t.segments) == 2
    x, sr = sf.read(str(audio / "two.wav"), dtype="float32")
    same = rec.transcribe_long(np.stack([x, x], axis=1), sample_rate=sr)      # an array, two channels
    assert same.text == t.text and "lazy dog" in t.text
    assert [w[0] for w in t.words] == t.text.split()
    with pytest.raises(ValueError, match="sample_rate"):
        rec.transcribe_long(x)
    with pytest.raises(ValueError, match="does not exist"):
        rec.transcribe_long(audio / "missing.wav")
    offline = cached_export(None, None, streaming=False)              # an offline export: each file decoded whole
    r = _run(audio / "one.wav", "--model", offline)
    want = Recognizer.from_onnx(offline).transcribe(str(audio / "one.wav")).text
    assert r.exit_code == 0 and r.stdout == want + "\n" and want


def test_help():
    r = CliRunner().invoke(main, ["transcribe", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "--format" in r.output


@pytest.mark.parametrize("opt", ["--chunk-size", "--left-chunks"])
def test_a_zero_chunk_option_is_refused_not_replaced_by_the_default(audio, opt):
    r = _run(opt, "0", audio / "one.wav")
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert f"Invalid value for '{opt}'" in r.output, r.output


def test_a_too_short_clip_is_skipped_named_and_counted_as_decode_does(audio, tmp_path):
    x, sr = sf.read(str(audio / "one.wav"), dtype="float32")
    sf.write(tmp_path / "blip.wav", x[:int(0.05 * sr)], sr)            # 50 ms: less than one encoder frame
    r = _run(tmp_path / "blip.wav", audio / "one.wav")
    assert r.exit_code == 1, r.output
    assert re.search(r"skipped: .*blip\.wav: audio too short \(50 ms\); at least \d+ ms is needed", r.stderr), r.stderr
    assert "1 of 2 inputs skipped" in r.stderr and "blip.wav" not in r.stdout and "quick brown" in r.stdout


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_one_sample_and_empty_files_are_skipped_with_their_length_and_the_minimum(audio, tmp_path, backend):
    sf.write(tmp_path / "one-sample.wav", np.full(1, 0.1, np.float32), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    r = _run(tmp_path / "one-sample.wav", tmp_path / "empty.wav", audio / "one.wav", "--backend", backend)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert re.search(r"skipped: .*one-sample\.wav: audio too short \(0\.062 ms\); at least \d+ ms is needed "
                     r"\(\d+ feature frames for one output frame\)\n", r.stderr), r.stderr
    assert re.search(r"skipped: .*empty\.wav.* empty \(0 samples\)", r.stderr), r.stderr
    assert "2 of 3 inputs skipped" in r.stderr and "quick brown" in r.stdout


def test_an_output_file_that_is_the_input_is_refused(audio, tmp_path):
    wav = tmp_path / "talk.wav"
    wav.write_bytes((audio / "one.wav").read_bytes())
    r = _run(wav, "--out", wav)
    assert r.exit_code == 1 and r.output == f"Error: --out {wav} is also an input ({wav}); writing it would " \
                                            "replace that input: choose another file name\n", r.output
    assert wav.read_bytes() == (audio / "one.wav").read_bytes()


def test_help_says_what_several_inputs_print():
    r = CliRunner().invoke(main, ["transcribe", "--help"])
    assert "FILE<TAB>TEXT" in " ".join(r.output.split()), r.output
    assert "one JSON object per line" in " ".join(r.output.split()), r.output


def test_several_inputs_as_json_on_stdout_are_json_lines(audio):
    r = _run(audio / "one.wav", audio / "two.wav", "--format", "json")
    assert r.exit_code == 0, r.output
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(d["file"]).name for d in docs] == ["one.wav", "two.wav"] and "quick" in docs[0]["text"]


@pytest.mark.parametrize("several", [False, True], ids=["file", "directory"])
def test_an_out_that_cannot_be_written_is_refused_before_decoding(audio, tmp_path, monkeypatch, several):
    import slimasr.decoding

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(slimasr.decoding, "open_backend", no_model)
    (tmp_path / "f").write_text("a file, not a folder")
    out = tmp_path / "f" / ("subs" if several else "one.txt")
    inputs = (audio / "one.wav", audio / "two.wav") if several else (audio / "one.wav",)
    r = _run(*inputs, "--out", out)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"--out {out}: cannot create the folder" in r.output, r.output


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_pt_model_is_read_once(audio, tmp_path, monkeypatch, backend):
    """transcribe reads a .pt model's weights once: whether it streams (trained on chunks, can stream) is decided
    from its settings, read with the file mapped (torch.load(mmap=True): the tensors are not read), and the backend
    (torch; the runtime through a first export, in a cache of its own) loads it."""
    import torch

    from slimasr.model import default_model_path

    model = shutil.copy(default_model_path(), tmp_path / "m.pt")
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path / "cache"))        # no export yet: the runtime loads it too
    whole, load = [], torch.load

    def counting_load(f, *args, **kwargs):
        if not kwargs.get("mmap"):
            whole.append(f)
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    r = _run(audio / "one.wav", "--model", model, "--backend", backend)
    assert r.exit_code == 0 and "quick brown" in r.stdout, r.output
    assert len(whole) == 1, whole


def test_inputs_of_the_same_name_are_listed_with_their_outputs(audio, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(audio / "one.wav", tmp_path / "a" / "x.wav")
    shutil.copy(audio / "two.wav", tmp_path / "b" / "x.wav")
    out = tmp_path / "out"
    r = _run(tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", audio / "one.wav", "--out", out, "--backend", "torch")
    assert r.exit_code == 0, r.output
    assert f"{tmp_path / 'a' / 'x.wav'} -> {out / 'x.txt'}\n" in r.stderr, r.stderr
    assert f"{tmp_path / 'b' / 'x.wav'} -> {out / 'x-2.txt'}\n" in r.stderr, r.stderr
    assert "one.wav ->" not in r.stderr                          # its name is its own: nothing to say
    assert "friend" not in (out / "x.txt").read_text() and "friend" in (out / "x-2.txt").read_text()
    assert "INPUT -> OUTPUT" in " ".join(CliRunner().invoke(main, ["transcribe", "--help"]).output.split())


def test_a_silent_input_gives_an_empty_valid_document_and_a_note(audio, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    note = f"{silent}: empty transcript (no speech recognised in 1.00 s)\n"
    expected = {"text": "", "srt": "", "vtt": "WEBVTT\n\n"}
    for fmt in ("text", "json", "srt", "vtt"):
        r = _run(silent, "--format", fmt, "--backend", "torch")
        assert r.exit_code == 0 and note in r.stderr, (fmt, r.output)
        if fmt == "json":
            doc = json.loads(r.stdout)
            assert doc["text"] == "" and doc["segments"] == [] and doc["file"] == str(silent), r.stdout
        else:
            assert r.stdout == expected[fmt], (fmt, r.stdout)
    r = _run(silent, audio / "one.wav", "--backend", "torch")       # several on stdout: each line names its input
    assert r.exit_code == 0 and note in r.stderr, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"{silent}\t" and lines[1].startswith(f"{audio / 'one.wav'}\tthe quick"), lines
