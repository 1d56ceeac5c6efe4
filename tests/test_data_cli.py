"""The data and tokenizer commands (click CliRunner)."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from slimasr.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_has_examples():
    for cmd in (["data"], ["data", "synth"], ["data", "import-kaldi"], ["tokenizer"], ["tokenizer", "train"]):
        r = _run(*cmd, "--help")
        assert r.exit_code == 0 and "Example:" in r.output and "slimasr " in r.output.split("Example:")[1]


def _kaldi_dir(tmp_path):
    """A Kaldi data directory with one 1 s utterance."""
    d = tmp_path / "k"
    d.mkdir()
    sf.write(d / "a.wav", np.zeros(16000, np.float32), 16000)
    (d / "wav.scp").write_text(f"u1 {d / 'a.wav'}\n")
    (d / "text").write_text("u1 hello there\n")
    return d


def test_import_kaldi_cli(tmp_path):
    d = _kaldi_dir(tmp_path)
    r = _run("data", "import-kaldi", str(d), "--out", str(tmp_path / "m.jsonl"))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.jsonl").read_text())["duration"] == 1.0
    (d / "wav.scp").write_text("u1 gunzip -c a.wav.gz |\n")
    r = _run("data", "import-kaldi", str(d))
    assert r.exit_code != 0 and "piped command" in r.output and "Traceback" not in r.output
    r = _run("data", "import-kaldi", str(tmp_path / "nope"))
    assert r.exit_code != 0 and "nope" in r.output


def test_import_kaldi_then_decode_from_another_directory(tmp_path, monkeypatch):
    """The manifest path rule end to end: paths relative to the working directory at import time, a manifest in
    a subfolder, decoded from the same working directory, then after moving the whole folder."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "data" / "kaldi" / "train"
    d.mkdir(parents=True)
    sf.write(d / "u1.wav", np.zeros(16000, np.float32), 16000)
    sf.write(d / "rec.wav", np.zeros(3 * 16000, np.float32), 16000)
    (d / "wav.scp").write_text("u1 u1.wav\n")
    (d / "text").write_text("u1 hello there\n")
    r = _run("data", "import-kaldi", "data/kaldi/train", "--out", "data/train.jsonl")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "data" / "train.jsonl").read_text())["audio_filepath"] == "kaldi/train/u1.wav"
    r = _run("decode", "--data", "data/train.jsonl")
    assert r.exit_code == 0 and "1 utterances" in r.output, r.output
    shutil.move(tmp_path / "data", tmp_path / "moved")
    r = _run("decode", "--data", "moved/train.jsonl")
    assert r.exit_code == 0 and "1 utterances" in r.output, r.output
    # segments: two utterances of one recording, plus unusable lines reported with counts
    d = tmp_path / "moved" / "kaldi" / "train"
    (d / "wav.scp").write_text("rec rec.wav\n")
    (d / "segments").write_text("a rec 0 1.5\nb rec 1.5 3\nc nowhere 0 1\n")
    (d / "text").write_text("a one\nb two\nc three\nd four\n")
    r = _run("data", "import-kaldi", str(d), "--out", "seg.jsonl")
    assert r.exit_code == 0, r.output
    assert "2 segments" in r.output and "1 segments naming a recording that is not in wav.scp: c" in r.output
    assert "1 transcripts in text with no audio" in r.output
    r = _run("decode", "--data", "seg.jsonl")
    assert r.exit_code == 0 and "2 utterances" in r.output, r.output


def test_tokenizer_cli(tmp_path):
    m = tmp_path / "train.jsonl"
    m.write_text("".join(json.dumps({"audio_filepath": f"{i}.wav", "duration": 1.0, "text": t}) + "\n"
                         for i, t in enumerate(["the cat sat on the mat", "a dog ran far away"] * 30)))
    r = _run("tokenizer", "train", "--data", str(m), "--vocab-size", "18", "--out", str(tmp_path / "tok"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "tok" / "tokenizer.model").is_file()
    assert (tmp_path / "tok" / "tokens.txt").read_text().splitlines()[-1] == "<sos/eos> 19"
    r = _run("tokenizer", "train", "--data", str(m), "--vocab-size", "5000", "--out", str(tmp_path / "t2"))
    assert r.exit_code != 0 and "vocab-size" in r.output and "Traceback" not in r.output
    r = _run("tokenizer", "train", "--data", str(tmp_path / "no.jsonl"), "--vocab-size", "5", "--out", "x")
    assert r.exit_code != 0 and "no.jsonl" in r.output
    good = m.read_text()
    m.write_text("{broken\n" + good)                               # a malformed line is named, the rest used
    r = _run("tokenizer", "train", "--data", str(m), "--vocab-size", "18", "--out", str(tmp_path / "t3"))
    assert r.exit_code == 0 and "skipped " in r.stderr and "train.jsonl:1: not valid JSON" in r.stderr, r.output
    assert "from 60 texts" in r.output, r.output
    m.write_text("{broken\n")
    r = _run("tokenizer", "train", "--data", str(m), "--vocab-size", "5", "--out", str(tmp_path / "t4"))
    assert r.exit_code != 0 and "train.jsonl:1" in r.output
    wav = tmp_path / "speech.wav"                                  # audio given as --data: one line, not one a row
    wav.write_bytes(b"RIFF\x24\x80\x00\x00WAVEfmt \x10\x00\x00\x00\n" * 20)
    r = _run("tokenizer", "train", "--data", str(wav), "--vocab-size", "5", "--out", str(tmp_path / "t5"))
    assert r.exit_code == 1 and r.output == (f"Error: manifest {wav} has no utterances (20 malformed rows skipped, "
                                             f"the first: {wav}:1: not UTF-8 text (a manifest is JSON lines; to "
                                             "transcribe audio files use `slimasr transcribe`))\n"), r.output
    txt = tmp_path / "text.txt"
    txt.write_bytes(b"hello\n\xff\xfe\n")
    r = _run("tokenizer", "train", "--data", str(txt), "--vocab-size", "5", "--out", str(tmp_path / "t6"))
    assert r.exit_code == 1 and r.output == f"Error: --data {txt} is not UTF-8 text (byte 6); expected one " \
                                            "sentence a line\n", r.output


def test_synth_cli_bad_args(tmp_path):
    r = _run("data", "synth", "--out", str(tmp_path), "--hours", "0")
    assert r.exit_code != 0 and "--hours" in r.output


@pytest.mark.parametrize("args, code, message", [
    (["--hours", "nan"], 2, "Invalid value for '--hours': 'nan' is not a positive finite number"),
    (["--hours", "inf"], 2, "Invalid value for '--hours': 'inf' is not a positive finite number"),
    (["--hours", "0.01", "--noise-snr", "nan"], 1, "Error: --noise-snr must be a finite SNR in dB, got nan")])
def test_synth_cli_refuses_hours_and_snr_that_are_not_finite(tmp_path, args, code, message):
    """nan hours used to write an empty corpus and exit 0, inf hours to plan forever."""
    r = _run("data", "synth", "--out", str(tmp_path / "c"), *args)
    assert r.exit_code == code and message in r.output, r.output
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make setup installs it)")
def test_synth_cli_missing_fortunes(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMASR_FORTUNES_DIR", str(tmp_path / "empty"))
    r = _run("data", "synth", "--out", str(tmp_path / "c"), "--hours", "0.01")
    assert r.exit_code != 0 and "make setup" in r.output and "Traceback" not in r.output


def test_import_kaldi_prints_short_sets_in_seconds_or_minutes_not_zero_hours(tmp_path):
    from slimasr.data.manifest import format_duration

    d = _kaldi_dir(tmp_path)
    r = _run("data", "import-kaldi", str(d), "--out", str(tmp_path / "m.jsonl"))
    assert r.exit_code == 0 and "1 utterances, 1.0 s ->" in r.output, r.output
    assert [format_duration(s) for s in (1.0, 90.0, 359.0, 360.0, 7200.0)] == ["1.0 s", "1.5 min", "6.0 min",
                                                                                "0.10 h", "2.00 h"]
