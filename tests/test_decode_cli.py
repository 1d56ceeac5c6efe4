"""``slimasr decode``: one loop over backends (same text from torch, the runtime and sherpa-onnx on the embedded
model), a 50 ms clip among three utterances skipped and named, clear errors."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.scoring import error_rates

pytestmark = [pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                 reason="espeak-ng is not installed (make setup installs it)"),
              pytest.mark.slow]  # synthesises a corpus, exports and decodes it on every backend

TEXTS = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two espeak-ng utterances (22.05 kHz, as espeak-ng writes them) and a 50 ms clip, in one manifest."""
    d = tmp_path_factory.mktemp("decode")
    rows = []
    for k, text in enumerate(TEXTS):
        subprocess.run(["espeak-ng", "-v", "en-us+m3", "-w", str(d / f"u{k}.wav"), text], check=True)
        rows.append({"audio_filepath": f"u{k}.wav", "duration": sf.info(str(d / f"u{k}.wav")).duration,
                     "text": text})
    sf.write(d / "short.wav", np.zeros(800, np.float32), 16000)                 # 50 ms
    rows.append({"audio_filepath": "short.wav", "duration": 0.05, "text": "hi"})
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(autouse=True)
def _export_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _decode(corpus, *args):
    out = corpus / f"hyps-{'-'.join(a.replace('/', '_') for a in args)}.jsonl"
    r = CliRunner().invoke(main, ["decode", "--data", str(corpus / "test.jsonl"), "--no-progress", "--out", str(out),
                                  *args])
    hyps = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    return r, hyps


CHUNKED = ("--chunk-size", "16", "--left-chunks", "4")


def _texts(corpus, backend, *args):
    r, hyps = _decode(corpus, "--backend", backend, *args)
    assert r.exit_code == 1, r.output                     # one skipped: scored without it, said by the status
    assert "2 utterances" in r.output and "skipped 1" in r.output, r.output
    assert "short.wav: audio too short (50 ms)" in r.stderr, r.stderr
    assert [h["audio_filepath"].rsplit("/", 1)[-1] for h in hyps] == ["u0.wav", "u1.wav"]
    return [h["text"] for h in hyps]


@pytest.mark.parametrize("mode", [(), CHUNKED], ids=["offline", "chunked"])
def test_torch_and_runtime_give_the_same_text_and_skip_the_short_clip(corpus, mode):
    torch_texts = _texts(corpus, "torch", *mode)
    # a trained model on clean speech: real words, and the same words from the runtime on its export
    assert "quick brown" in torch_texts[0] and "shells" in torch_texts[1], torch_texts
    assert _texts(corpus, "onnx", *mode) == torch_texts


def test_sherpa_onnx_streaming_equals_the_runtimes_compatibility_setting(corpus):
    """sherpa-onnx ends a stream with 0.66 s of zeros: the runtime's compatibility setting, same tokens."""
    assert _texts(corpus, "sherpa-onnx", *CHUNKED) == _texts(corpus, "onnx", *CHUNKED, "--end-of-stream",
                                                              "sherpa-onnx")
    r, _ = _decode(corpus, "--backend", "torch", *CHUNKED, "--end-of-stream", "sherpa-onnx")
    assert r.exit_code != 0 and "runs a short last chunk" in r.output


def test_sherpa_onnx_offline_equals_the_runtime_up_to_its_dither(corpus):
    """sherpa-onnx's offline recognizer dithers its features although its config says ``dither=0`` (README:
    Independent runtime agreement), so on this model's near-tie frames its transcript is a sample: one flipped frame
    can change a letter ("lazy" -> "laszy"). The texts must agree but for such flips: CER at most 5% against the
    runtime's (a wrong feature pipeline or graph gives far more), and the same utterances in the same order."""
    ours = _texts(corpus, "onnx")
    theirs = _texts(corpus, "sherpa-onnx")
    assert len(theirs) == len(ours) and all(theirs), (theirs, ours)
    assert error_rates(ours, theirs)["cer"] <= 0.05, (theirs, ours)


def test_beam_search_is_the_same_on_every_backend(corpus):
    beam = ("--decoder", "beam", "--beam-size", "8")
    texts = _texts(corpus, "torch", *CHUNKED, *beam)
    assert "quick brown" in texts[0]
    assert _texts(corpus, "onnx", *CHUNKED, *beam) == texts


def test_errors_are_one_line(corpus, tmp_path):
    r = CliRunner().invoke(main, ["decode", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "--backend" in r.output
    r, _ = _decode(corpus, "--lm", str(tmp_path / "x.arpa"))
    assert r.exit_code != 0 and "--decoder beam" in r.output
    r, _ = _decode(corpus, "--backend", "onnx", "--chunk-size", "16")
    assert r.exit_code != 0 and "--left-chunks" in r.output
    for opt in ("--chunk-size", "--left-chunks"):                  # click names the option, nothing runs
        r, _ = _decode(corpus, opt, "0")
        assert r.exit_code == 2 and f"Invalid value for '{opt}'" in r.output, r.output
    r, _ = _decode(corpus, "--model", str(tmp_path / "missing.pt"))
    assert r.exit_code != 0 and "missing.pt does not exist" in r.output and "Traceback" not in r.output
    (tmp_path / "f").write_text("a file, not a folder")          # --out checked before any decoding
    r, _ = _decode(corpus, "--out", str(tmp_path / "f" / "hyps.jsonl"))
    assert r.exit_code != 0 and f"--out {tmp_path / 'f' / 'hyps.jsonl'}: cannot create the folder" in r.output
    assert "utterances" not in r.output, r.output
    manifest = tmp_path / "m.jsonl"                                # --out naming the manifest: refused, kept
    manifest.write_bytes((corpus / "test.jsonl").read_bytes())
    r = CliRunner().invoke(main, ["decode", "--data", str(manifest), "--out", str(manifest)])
    assert r.exit_code == 1 and r.output.startswith(f"Error: --out {manifest} is also an input"), r.output
    assert manifest.read_bytes() == (corpus / "test.jsonl").read_bytes()
    (tmp_path / "notexport").mkdir()                            # a directory that is not an export: said so
    for backend in ("torch", "onnx"):
        r, _ = _decode(corpus, "--model", str(tmp_path / "notexport"), "--backend", backend, *CHUNKED)
        assert r.exit_code != 0 and "notexport is a directory without slimasr_export.json" in r.output, r.output
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "slimasr_export.json").write_text("{}")
    r, _ = _decode(corpus, "--model", str(tmp_path / "onnx"))
    assert r.exit_code != 0 and "torch backend needs a slimasr model" in r.output
    bad = tmp_path / "bad.jsonl"                                  # every utterance unusable: the run fails, naming why
    bad.write_text(json.dumps({"audio_filepath": str(corpus / "short.wav"), "duration": 0.05, "text": "hi"}) + "\n"
                   + json.dumps({"audio_filepath": str(tmp_path / "gone.wav"), "duration": 1.0, "text": "x"}) + "\n")
    r = CliRunner().invoke(main, ["decode", "--data", str(bad), "--no-progress"])
    assert r.exit_code != 0 and "no utterance" in r.output and "2 skipped" in r.output and "too short" in r.output


def test_a_malformed_manifest_line_is_skipped_and_named(corpus):
    """One bad row among good ones does not stop the run: it is counted and named by file and line."""
    lines = (corpus / "test.jsonl").read_text().splitlines()
    m = corpus / "with_a_bad_line.jsonl"                  # beside the audio: its relative paths resolve
    m.write_text("\n".join([lines[0], "not json", lines[1]]) + "\n")
    r = CliRunner().invoke(main, ["decode", "--data", str(m), "--no-progress"])
    assert r.exit_code == 1, r.output                     # as transcribe: 1 when any input was skipped
    assert "2 utterances" in r.output and "skipped 1" in r.output, r.output
    assert f"skipped {m}:2: not valid JSON" in r.stderr, r.stderr
    m.write_text("\n".join(lines[:2]) + "\n")            # every utterance decoded: 0
    assert CliRunner().invoke(main, ["decode", "--data", str(m), "--no-progress"]).exit_code == 0


def test_the_summary_names_the_lm_and_its_weight(corpus, tmp_path):
    from test_decoders import ARPA

    (tmp_path / "lm.arpa").write_text(ARPA)
    lines = (corpus / "test.jsonl").read_text().splitlines()
    m = corpus / "first.jsonl"
    m.write_text(lines[0] + "\n")
    args = ["decode", "--data", str(m), "--no-progress", "--decoder", "beam", "--beam-size", "4"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "(torch, offline, beam 4):" in r.output, r.output
    r = CliRunner().invoke(main, [*args, "--lm", str(tmp_path / "lm.arpa"), "--lm-weight", "0.3"])
    assert r.exit_code == 0, r.output
    assert f"(torch, offline, beam 4 + LM {tmp_path / 'lm.arpa'} (weight 0.3)):" in r.output, r.output


def test_the_summary_names_the_chunking_that_ran(corpus):
    """A streaming export decoded without --chunk-size runs (and reports) the export's chunking, not "offline"
    (exit status 1: the corpus's 50 ms clip is skipped)."""
    from slimasr.decoding import cached_export

    export = cached_export(None, None, streaming=True, chunk_size=16, left_chunks=4)
    for backend in ("onnx", "sherpa-onnx"):
        r, _ = _decode(corpus, "--model", str(export), "--backend", backend)
        assert r.exit_code == 1 and f"({backend}, chunk 16, left 4, greedy)" in r.output, r.output
    r, _ = _decode(corpus, "--backend", "torch", "--chunk-size", "8")
    assert r.exit_code == 1 and "(torch, chunk 8, left all, greedy)" in r.output, r.output
    r, _ = _decode(corpus, "--backend", "torch")
    assert r.exit_code == 1 and "(torch, offline, greedy)" in r.output, r.output


def test_decode_manifest_of_an_in_memory_model_skips_the_short_clip(corpus):
    """What the reproduction and the demo call: a model object, offline and chunked."""
    from slimasr.decoding import decode_manifest
    from slimasr.model import load_model

    m = load_model()
    off = decode_manifest(m, corpus / "test.jsonl")
    chunked = decode_manifest(m, corpus / "test.jsonl", chunk_size=16, left_chunks=4)
    for r in (off, chunked):
        assert r["utterances"] == 2 and r["skipped"] == 1 and r["backend"] == "torch"
        assert r["skipped_items"][0]["audio_filepath"].endswith("short.wav")
        assert 0.0 <= r["wer"] < 0.5 and r["rtf"] > 0
    with pytest.raises(ValueError, match="in-memory model"):
        from slimasr.decoding import BackendConfig

        decode_manifest(m, corpus / "test.jsonl", BackendConfig(backend="onnx"))


def test_runtime_backends_on_a_cached_export_do_not_import_torch(corpus, tmp_path):
    """The onnx backend with the default model: the export is made once, later runs load it without PyTorch."""
    import os
    import sys

    from slimasr.decoding import default_model_file
    from slimasr.model.asr import default_model_path

    assert default_model_file() == default_model_path()
    _decode(corpus, "--backend", "onnx", *CHUNKED)                       # export (cached)
    code = ("import sys; from slimasr.decoding import BackendConfig, decode_manifest; "
            f"r = decode_manifest(None, {str(corpus / 'test.jsonl')!r}, BackendConfig(backend='onnx', chunk_size=16, "
            "left_chunks=4)); print(r['utterances'], 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["2", "False"]


def test_an_empty_manifest_is_named_as_empty_before_any_export(tmp_path, monkeypatch):
    import slimasr.decoding as decoding

    def no_backend(*a, **k):
        raise AssertionError("a backend was opened (a model exported) for a manifest with no utterances")

    monkeypatch.setattr(decoding, "open_backend", no_backend)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    r = CliRunner().invoke(main, ["decode", "--data", str(empty), "--backend", "onnx", "--no-progress"])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert f"manifest {empty} has no utterances" in r.output, r.output


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_model_that_cannot_stream_is_refused_with_advice_for_decode(tmp_path, backend):
    """An imported NeMo model (per-utterance normalisation) asked to decode in chunks: the error names the model
    and says to decode offline, not to export offline."""
    from pathlib import Path

    from slimasr.importers import import_nemo

    src = next((Path(__file__).parent / "fixtures" / "import" / "nemo_fastconformer_ctc" / "model").glob("*.nemo"))
    pt = tmp_path / "nemo.pt"
    import_nemo(src).save(pt)
    wav = Path(__file__).parent / "fixtures" / "import" / "audio" / "utt0.wav"
    data = tmp_path / "m.jsonl"
    data.write_text(json.dumps({"audio_filepath": str(wav), "duration": sf.info(str(wav)).duration, "text": "x"}))
    r = CliRunner().invoke(main, ["decode", "--model", str(pt), "--data", str(data), "--backend", backend,
                                  "--chunk-size", "16", "--left-chunks", "4", "--no-progress"])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert str(pt) in r.output and "per utterance" in r.output, r.output
    assert "without --chunk-size" in r.output and "--streaming" not in r.output, r.output


def test_segments_of_one_recording_are_told_apart_in_the_hypotheses(corpus, tmp_path):
    """Two utterances cut from one recording (a Kaldi ``segments`` import: same audio_filepath, different
    offsets): each hypothesis carries its utterance's utt_id and offset, so it can be matched to its reference."""
    x, sr = sf.read(str(corpus / "u0.wav"), dtype="float32")
    rec = tmp_path / "rec.wav"
    sf.write(rec, np.concatenate([x, np.zeros(sr // 2, np.float32), x]), sr)
    d = x.size / sr
    rows = [{"audio_filepath": str(rec), "offset": 0.0, "duration": d, "text": TEXTS[0], "utt_id": "a"},
            {"audio_filepath": str(rec), "offset": d + 0.5, "duration": d, "text": TEXTS[0], "utt_id": "b"}]
    (tmp_path / "seg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "hyps.jsonl"
    r = CliRunner().invoke(main, ["decode", "--data", str(tmp_path / "seg.jsonl"), "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    hyps = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(h["utt_id"], h["offset"]) for h in hyps] == [("a", 0.0), ("b", d + 0.5)]
