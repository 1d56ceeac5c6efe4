"""The benchmark: FLOP counts (by hand and against PyTorch's FLOP counter), WER against jiwer, the speed-goal
arithmetic, and a tiny end-to-end run that produces the JSON schema, the markdown and the plot."""
import json

import jiwer
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from slimasr.bench import ModelSpec, RunSpec, evaluate_goals, plan_runs, run_benchmark, to_markdown, write_outputs
from slimasr.bench.flops import (chunk_gemms, flops_by_component, flops_per_audio_second, offline_gemms,
                                 total_flops)
from slimasr.scoring import error_rates
from slimasr.model import build_model
from slimasr.model.config import TINY


# ---------------------------------------------------------------------------------------------- FLOPs
def _hand_layer(tq, keys, d=32, h=2, ffn=64, kernel=7):
    """One TINY Conformer layer by hand (multiply-adds; x2 at the end)."""
    dk = d // h
    pos = keys + tq - 1
    macs = (2 * (tq * d * ffn + tq * ffn * d)        # two feed-forward modules
            + 4 * tq * d * d                          # q, k, v, out
            + pos * d * d                             # linear_pos over the chunk's distances
            + h * tq * dk * keys                      # (q + u) k^T
            + h * tq * dk * pos                       # (q + v) p^T
            + h * tq * keys * dk                      # attention x values
            + tq * d * 2 * d + tq * d * kernel + tq * d * d)   # pointwise1, depthwise, pointwise2
    return 2 * macs


def test_flops_equal_a_hand_count():
    # offline, 67 feature frames: conv1 -> 33 x 39, conv2 -> 16 x 19 (8 channels), 16 encoder frames
    front = 2 * (33 * 39 * 9 * 8 + 16 * 19 * 72 * 8 + 16 * 8 * 19 * 32)
    ctc = 2 * 16 * 32 * 40
    assert total_flops(offline_gemms(TINY, 67)) == front + 4 * _hand_layer(16, 16) + ctc
    # chunked: chunk 4, 2 left chunks -> window 19 frames -> 9 x 39, 4 x 19; 12 keys, 15 distances
    front = 2 * (9 * 39 * 9 * 8 + 4 * 19 * 72 * 8 + 4 * 8 * 19 * 32)
    assert total_flops(chunk_gemms(TINY, 4, 2)) == front + 4 * _hand_layer(4, 12) + 2 * 4 * 32 * 40
    # pruning removes whole layers, never the front-end
    assert (total_flops(chunk_gemms(TINY, 4, 2)) - total_flops(chunk_gemms(TINY, 4, 2, num_layers=3))
            == _hand_layer(4, 12))


@pytest.mark.slow
def test_flops_equal_pytorchs_counter():
    """The counted products are exactly the ones the model runs (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from slimasr.export.onnx import StreamingCtcOnnx, streaming_example_inputs

    m = build_model("tiny").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m.ctc_log_probs(torch.randn(1, 123, 80))
    assert fc.get_total_flops() == total_flops(offline_gemms(m.config, 123))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        StreamingCtcOnnx(m, 4).eval()(*streaming_example_inputs(m, 4, 2))
    assert fc.get_total_flops() == total_flops(chunk_gemms(m.config, 4, 2))


def test_flops_per_audio_second():
    per_chunk = flops_by_component(chunk_gemms(TINY, 4, 2))
    r = flops_per_audio_second(TINY, "chunked", chunk_size=4, left_chunks=2)
    assert r["total"] == pytest.approx(sum(per_chunk.values()) * 25 / 4)     # 25 encoder frames per second
    assert r["frontend_share"] == pytest.approx(per_chunk["subsampling"] / sum(per_chunk.values()))
    off = flops_per_audio_second(TINY, "offline", durations=[0.67, 0.67])
    assert off["total"] == pytest.approx(total_flops(offline_gemms(TINY, 67)) / 0.67)
    with pytest.raises(ValueError, match="durations"):
        flops_per_audio_second(TINY, "offline")


# ---------------------------------------------------------------------------------------------- WER, goals
def test_wer_equals_jiwer_on_known_strings():
    refs = ["the cat sat on the mat", "hello world", "a b c d"]
    hyps = ["the cat sat on mat", "hello there world", "a x c d e"]
    r = error_rates(refs, hyps)
    # 1 deletion + 1 insertion + (1 substitution + 1 insertion) over 6 + 2 + 4 words
    assert r["wer"] == pytest.approx(4 / 12)
    assert r["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert r["cer"] == pytest.approx(jiwer.cer(refs, hyps))


def _run(model, backend, mode, rtf, layers=12, **kw):
    return {"model": model, "backend": backend, "mode": mode, "decoder": "greedy", "threads": 2, "layers": layers,
            "rtf": rtf, "search_rtf": 0.0, **kw}


def test_goal_arithmetic():
    result = {"runs": [
        _run("full", "torch", "offline", 0.30, encoder_rtf=0.28),
        _run("full", "onnx", "offline", 0.10, encoder_rtf=0.09),
        _run("p40", "onnx", "offline", 0.07, layers=7, encoder_rtf=0.05, original_layers=[0, 1, 2, 3, 5, 8, 11]),
        _run("full", "onnx", "chunked", 0.20, chunk_ms=640.0, chunk_p95_ms=170.0),
        _run("full", "sherpa-onnx", "chunked", 0.19, chunk_ms=640.0, chunk_p95_ms=100.0),
        _run("full", "onnx", "chunked", 0.22, chunk_ms=640.0, chunk_p95_ms=150.0, spin_threads=True),
        {**_run("full", "onnx", "offline", 0.25, encoder_rtf=0.09), "decoder": "beam", "search_rtf": 0.15,
         "beam_size": 100, "lm": "lm.bin"},
        {"model": "full", "backend": "tensorrt", "mode": "offline", "decoder": "greedy", "skipped": "no GPU"},
    ]}
    g = {x["goal"]: x for x in evaluate_goals(result)}
    assert g["onnx fp32 vs torch eager, offline (full)"]["value"] == pytest.approx(3.0)
    prune = next(x for k, x in g.items() if k.startswith("p40"))
    assert prune["value"] == pytest.approx(0.09 / 0.05) and prune["met"]
    chunk = next(x for k, x in g.items() if "chunk compute p95, onnx" in k)
    assert chunk["met"] is False                                             # 170 ms >= 640 / 4
    beam = next(x for k, x in g.items() if k.startswith("beam"))
    assert beam["value"] == pytest.approx(0.15 / 0.09) and not beam["met"]
    # the goal compares the same thread policy (sherpa-onnx's threads spin); our default policy is information
    same = g["slimasr runtime vs sherpa-onnx, onnx chunked (full; both spinning)"]
    assert same["value"] == pytest.approx(0.22 / 0.19) and same["met"] is False
    default = g["slimasr runtime vs sherpa-onnx, onnx chunked (full; ours not spinning, sherpa-onnx spinning)"]
    assert default["value"] == pytest.approx(0.20 / 0.19) and default["met"] is None
    # the other goals use the runs at the default policy
    assert next(x for k, x in g.items() if "chunk compute p95, onnx greedy" in k)["value"] == 170.0
    assert "chunk compute p95, onnx (spin) greedy (full, 2 threads)" in g


def test_speed_goals_compare_a_model_only_with_the_model_it_was_pruned_from():
    wenet = _run("wenet", "onnx", "offline", 0.10, layers=12, encoder_rtf=0.09, d_model=256, original_layers=None)
    nemo = _run("nemo", "onnx", "offline", 0.40, layers=16, encoder_rtf=0.38, d_model=176, original_layers=None)
    pruned = _run("wenet-p6", "onnx", "offline", 0.06, layers=6, encoder_rtf=0.05, d_model=256,
                  original_layers=[0, 1, 2, 4, 7, 11])
    result = {"runs": [pruned, nemo, wenet],
              "floors": [{"model": m, "mode": "offline", "flops_per_audio_s": f, "frontend_flops_share": 0.1}
                         for m, f in (("wenet", 4e9), ("nemo", 1e9), ("wenet-p6", 2e9))]}
    rows = [g for g in evaluate_goals(result) if " layers) vs " in g["goal"]]
    assert [g["goal"] for g in rows] == ["wenet-p6 (6 layers) vs wenet (12), onnx offline"]   # not nemo's
    assert rows[0]["value"] == pytest.approx(0.09 / 0.05) and "FLOPs 2.00x fewer" in rows[0]["measured"]


def test_speed_goals_do_not_pair_pruned_models_of_different_architectures():
    """Two pruned imports of the same width (a WeNet and a NeMo model, both d = 64) are not one the pruned version
    of the other; the physical-floor note names the models' own subsampling."""
    w_arch = {"d_model": 64, "kernel_size": 8, "vocab_size": 62, "subsampling": "conv2d4", "frontend": "kaldi_fbank"}
    n_arch = {"d_model": 64, "kernel_size": 9, "vocab_size": 61, "subsampling": "dw_striding8", "frontend": "stft_mel"}
    w = _run("w", "onnx", "offline", 0.002, layers=2, encoder_rtf=0.001, d_model=64, original_layers=[0, 2],
             architecture=w_arch)
    n = _run("n", "onnx", "offline", 0.003, layers=1, encoder_rtf=0.001, d_model=64, original_layers=[0],
             architecture=n_arch)
    floors = [{"model": m, "mode": "offline", "layers": k, "flops_per_audio_s": 1e8, "frontend_flops_share": 0.8,
               "flops_by_component": {"subsampling": 8e7, "ffn": 2e7}, "gemm_gflops": 90.0, "floor_rtf": 0.001,
               "frontend_floor_share": 0.8} for m, k in (("w", 2), ("n", 1))]
    result = {"runs": [w, n], "floors": floors}
    assert not [g for g in evaluate_goals(result) if " layers) vs " in g["goal"]]
    p1 = _run("w-p1", "onnx", "offline", 0.001, layers=1, encoder_rtf=0.0005, d_model=64, original_layers=[0],
              architecture=w_arch)
    rows = [g["goal"] for g in evaluate_goals({"runs": [w, n, p1], "floors": floors}) if " layers) vs " in g["goal"]]
    assert rows == ["w-p1 (1 layers) vs w (2), onnx offline"]
    runs = [{**r, "skipped": "not run here"} for r in (w, n)]         # the note reads every run's architecture
    md = to_markdown({"machine": {}, "runs": runs, "floors": floors})
    assert "The front-end (conv2d4 / dw_striding8 subsampling) is not pruned" in md


def test_aggregate_merges_rounds():
    """Rounds are merged per utterance: WER over all of them (jiwer), RTF and percentiles over all."""
    from slimasr.bench.runner import aggregate

    def utt(name, ref, hyp, compute):
        return {"audio_filepath": name, "audio_s": 2.0, "reference": ref, "hypothesis": hyp, "compute": compute,
                "features": 0.01, "encoder": compute - 0.01, "search": 0.0}

    def part(utts, rss):
        return {"utts": utts, "peak_rss_mb": rss, "peak_rss_before_model_mb": 50.0, "model_load_s": 0.1,
                "model_file": "model.onnx", "model_file_mb": 1.0, "gpu_memory_mb": None, "load_average": [1.0]}

    spec = RunSpec(model="m", model_path=None, backend="onnx", mode="offline")
    out = aggregate(spec, [part([utt("b", "a b c", "a b", 0.2)], 100.0),
                           part([utt("a", "x y", "x y", 0.1), utt("c", "p q r s", "p z r s", 0.3)], 120.0)])
    assert out["utterances"] == 3 and out["peak_rss_mb"] == 120.0 and out["processes"] == 2
    assert [h["audio_filepath"] for h in out["hypotheses"]] == ["a", "b", "c"]
    assert out["wer"] == pytest.approx(jiwer.wer(["x y", "a b c", "p q r s"], ["x y", "a b", "p z r s"]))
    assert out["rtf"] == pytest.approx(0.6 / 6.0) and out["latency_p50_ms"] == pytest.approx(200.0)
    assert out["encoder_rtf"] == pytest.approx(0.57 / 6.0)


def test_chunk_duration_follows_the_models_subsampling(tmp_path):
    """A chunked run of a model with 8x subsampling (WeNet conv2d8) has chunks of chunk_size x 80 ms: the chunk
    compute goal compares with that, not with 40 ms frames."""
    from pathlib import Path

    from slimasr.bench.runner import aggregate, execute
    from slimasr.tokenizer import train_tokenizer

    wav = Path(__file__).parent / "fixtures" / "import" / "audio" / "utt0.wav"
    if not wav.is_file():
        pytest.skip("tests/fixtures/import/audio/utt0.wav is absent")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": str(wav), "duration": 1.6, "text": "a"}) + "\n")
    tok = train_tokenizer(["hello world this is a test", "the quick brown fox jumps"] * 4, vocab_size=24,
                          out_dir=tmp_path / "tok")
    m = build_model("tiny", subsampling="conv2d8", vocab_size=tok.vocab_size)
    m.attach_tokenizer(tok.to_bytes())
    model = m.save(tmp_path / "m.pt")
    spec = RunSpec(model="m", model_path=str(model), backend="torch", mode="chunked", data=str(tmp_path / "m.jsonl"),
                   chunk_size=4, left_chunks=2, warmup=0, threads=1)
    out = aggregate(spec, [execute(spec)])
    assert out["chunk_ms"] == pytest.approx(4 * 80.0)
    run = {"model": "m", "backend": "torch", "mode": "chunked", "decoder": "greedy", "layers": 4, "params": 1e5,
           "threads": 1, "model_file_mb": 0.1, **out}
    md = to_markdown({"machine": {}, "settings": {"chunk_size": 4, "left_chunks": 2, "data": "m.jsonl"},
                      "runs": [run]})
    assert "chunked: chunk 4 x 80 ms, 2 left chunks" in md


def test_model_spec_and_plan():
    assert ModelSpec.parse("default") == ModelSpec("default", None)
    assert ModelSpec.parse("full=default") == ModelSpec("full", None)
    assert ModelSpec.parse("p20 (no fine-tuning)=exp/p20.pt") == ModelSpec("p20 (no fine-tuning)", "exp/p20.pt")
    assert ModelSpec.parse("exp/p40.pt").label == "p40"
    specs = plan_runs([ModelSpec("a"), ModelSpec("b", "b.pt")], ["torch", "onnx"], ["offline", "chunked"],
                      ["greedy", "beam"], data="t.jsonl", lm="lm.bin")
    assert len(specs) == 16 and specs[0].model == "a" and specs[-1].model == "b"
    assert all((s.lm is None) == (s.decoder == "greedy") for s in specs)
    specs = plan_runs([ModelSpec("a")], ["torch", "onnx", "sherpa-onnx"], ["chunked"], data="t.jsonl",
                      spin=(False, True))
    assert [(s.backend, s.spin_threads) for s in specs] == [("torch", False), ("onnx", False), ("onnx", True),
                                                            ("sherpa-onnx", False)]
    with pytest.raises(ValueError, match="backend"):
        RunSpec(model="a", model_path=None, backend="tflite")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    import soundfile as sf

    from slimasr.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bench")
    texts = ["the quick brown fox jumps over the lazy dog", "hello world this is a test",
             "streaming speech recognition with conformer models", "pack my box with five dozen liquor jugs"] * 4
    tok = train_tokenizer(texts, vocab_size=38, out_dir=root / "tok")
    torch.manual_seed(0)
    m = build_model("tiny").eval()
    m.attach_tokenizer(tok.to_bytes())
    m.set_cmvn(torch.full((80,), 10.0), torch.full((80,), 0.3))
    with torch.no_grad():
        m.ctc.bias[0] -= 3.0                      # an untrained model that still emits tokens
    m.save(root / "tiny.pt")
    rng = np.random.default_rng(0)
    rows = []
    for k, text in enumerate(texts[:3]):
        t = np.arange(int((1.2 + 0.4 * k) * 16000)) / 16000
        wave = 0.1 * np.sin(2 * np.pi * (300 + 200 * k) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"u{k}.wav", wave.astype(np.float32), 16000)
        rows.append({"audio_filepath": f"u{k}.wav", "duration": t.size / 16000, "text": text})
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.slow
def test_tiny_end_to_end_run(tiny_setup):
    root = tiny_setup
    common = dict(data=str(root / "test.jsonl"), threads=1, warmup=1, chunk_size=4, left_chunks=2,
                  floor_min_time=0.001)
    specs = [RunSpec(model="tiny", model_path=str(root / "tiny.pt"), backend="torch", mode="offline", **common),
             RunSpec(model="tiny", model_path=str(root / "tiny.pt"), backend="onnx", mode="chunked", spin_threads=True,
                     **common),
             RunSpec(model="tiny", model_path=str(root / "tiny.pt"), backend="tensorrt", mode="offline", **common)]
    result = run_benchmark(specs, work_dir=root / "work", progress=False, keep_hypotheses=True)
    assert {"machine", "settings", "runs", "floors"} <= set(result)
    assert result["machine"]["cpu_model"] and result["machine"]["usable_cores"] >= 1
    off, chunked, trt = result["runs"]
    assert "error" not in off and "error" not in chunked, (off.get("error"), chunked.get("error"))
    for r in (off, chunked):
        for key in ("model", "backend", "mode", "decoder", "layers", "params", "wer", "cer", "rtf", "peak_rss_mb",
                    "model_file_mb", "threads", "throughput_x_realtime", "floor_rtf", "x_floor", "utterances"):
            assert key in r, key
        assert r["layers"] == 4 and r["utterances"] == 3 and r["rtf"] > 0 and r["peak_rss_mb"] > 0
        refs = [h["reference"] for h in r["hypotheses"]]
        hyps = [h["hypothesis"] for h in r["hypotheses"]]
        assert r["wer"] == pytest.approx(jiwer.wer(refs, hyps))              # the run's WER is jiwer's
    assert off["latency_p50_ms"] <= off["latency_p95_ms"]
    assert chunked["chunks"] > 0 and chunked["chunk_p95_ms"] is not None and chunked["final_latency_p50_ms"] >= 0
    assert off["model_file"] == "tiny.pt" and chunked["model_file"] == "model.onnx"
    assert chunked["spin_threads"] is True and off["spin_threads"] is False      # the thread policy is recorded
    # each run's memory is its own: the onnx run never holds the parent's PyTorch (this process has it loaded)
    assert chunked["peak_rss_before_model_mb"] < 200 < off["peak_rss_mb"]
    if torch.cuda.is_available():
        assert "error" not in trt
    else:
        assert "GPU" in trt["skipped"]
    assert {(f["model"], f["mode"]) for f in result["floors"]} == {("tiny", "offline"), ("tiny", "chunked")}

    write_outputs(result, root / "out" / "bench.json", root / "out" / "bench.md", root / "out" / "bench.png")
    saved = json.loads((root / "out" / "bench.json").read_text())
    assert saved["runs"][0]["wer"] == off["wer"] and "goals" in saved
    md = (root / "out" / "bench.md").read_text()
    assert "| tiny | torch | offline |" in md and "| tiny | onnx (spin) | chunked" in md and "Not run" in md
    assert (root / "out" / "bench.png").stat().st_size > 1000
    assert to_markdown(result).startswith("## Benchmark")


def test_cli_help_and_errors(tmp_path):
    from slimasr.cli import main

    r = CliRunner().invoke(main, ["bench", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "--backend" in r.output
    r = CliRunner().invoke(main, ["bench", "--data", str(tmp_path / "missing.jsonl"), "--json",
                                  str(tmp_path / "b.json")])
    assert r.exit_code != 0 and "missing.jsonl" in r.output
    (tmp_path / "t.jsonl").write_text("")
    r = CliRunner().invoke(main, ["bench", "--data", str(tmp_path / "t.jsonl"), "--lm", "x.arpa",
                                  "--json", str(tmp_path / "b.json")])
    assert r.exit_code != 0 and "--decoder beam" in r.output
    (tmp_path / "file").write_text("")
    for opt in ("--json", "--markdown", "--plot"):      # refused before any run, not after all of them
        outs = {"--json": str(tmp_path / "b.json"), opt: str(tmp_path / "file" / "out")}
        r = CliRunner().invoke(main, ["bench", "--data", str(tmp_path / "t.jsonl"),
                                      *[a for kv in outs.items() for a in kv]])
        assert r.exit_code == 1 and r.output == (f"Error: {opt} {tmp_path / 'file' / 'out'}: cannot create the "
                                                 f"folder {tmp_path / 'file'} ({tmp_path / 'file'} is a file, not "
                                                 "a folder)\n"), r.output


@pytest.mark.slow
def test_a_short_clip_is_skipped_and_a_failed_run_says_why(tiny_setup, tmp_path):
    """A 50 ms clip and a malformed manifest line among three utterances: every run decodes the other two and
    names both; a run with nothing decodable fails with the real reason on the first line (console and markdown),
    not an empty one."""
    import soundfile as sf

    root = tiny_setup
    sf.write(tmp_path / "short.wav", np.zeros(800, np.float32), 16000)
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()][:2]
    rows = [{**r, "audio_filepath": str(root / r["audio_filepath"])} for r in rows]
    rows.append({"audio_filepath": str(tmp_path / "short.wav"), "duration": 0.05, "text": "hi"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[-1]) + "\n")
    common = dict(threads=1, warmup=1, chunk_size=4, left_chunks=2)
    specs = [RunSpec(model="tiny", model_path=str(root / "tiny.pt"), backend=b, mode=m, data=str(tmp_path / "m.jsonl"),
                     **common) for b, m in (("onnx", "offline"), ("torch", "chunked"))]
    specs.append(RunSpec(model="tiny", model_path=str(root / "tiny.pt"), backend="onnx", mode="offline",
                         data=str(tmp_path / "bad.jsonl"), **common))
    result = run_benchmark(specs, work_dir=root / "work", floor=False, progress=False)
    for run in result["runs"][:2]:
        assert "error" not in run, run.get("error")
        assert run["utterances"] == 2 and run["skipped_utterances"] == 2
        why = {x["audio_filepath"].rsplit("/", 1)[-1]: x["reason"] for x in run["skipped_items"]}
        assert "too short (50 ms)" in why["short.wav"] and "not valid JSON" in why["m.jsonl:4"], why
    failed = result["runs"][2]
    first = failed["error"].splitlines()[0]
    assert "failed (exit 1): no utterance could be decoded" in first and "short.wav" in first, first
    md = to_markdown(result)
    assert "### Skipped utterances" in md and "short.wav: audio too short" in md
    assert f"failed: {first}" in md
    from slimasr.cli import main

    r = CliRunner().invoke(main, [
        "bench", "--model", f"tiny={root / 'tiny.pt'}", "--data", str(tmp_path / "bad.jsonl"), "--backend", "onnx",
        "--no-floor", "--warmup", "0", "--work-dir", str(root / "work"), "--json", str(tmp_path / "b.json")])
    assert r.exit_code != 0 and "no utterance could be decoded" in r.stderr and "too short" in r.stderr, r.output


def test_floor_skips_chunked_for_a_model_whose_streaming_graph_cannot_exist(tmp_path):
    """An imported NeMo FastConformer (padded x8 subsampling: no streaming export) benchmarked beside a model that
    streams: its offline floor is measured, its chunked one is left out, and the other model's floors are still
    measured (one process measures every model's floor)."""
    from pathlib import Path

    import torch

    from slimasr.bench.runner import _execute_floor
    from slimasr.importers import import_nemo

    src = next((Path(__file__).parent / "fixtures" / "import" / "nemo_fastconformer_ctc" / "model").glob("*.nemo"))
    nemo = import_nemo(src).config
    assert nemo.streaming_refusal(onnx=True)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "u.wav", "duration": 1.0, "text": "x"}) + "\n")
    spec = RunSpec(model="x", model_path=None, kind="floor", data=str(tmp_path / "m.jsonl"),
                   threads=torch.get_num_threads(),                      # the process's: the floor changes none
                   chunk_size=4, left_chunks=2, floor_min_time=0.001, floor_modes=("offline", "chunked"),
                   floor_configs={"nemo": nemo.to_dict(), "tiny": TINY.to_dict()})
    out = _execute_floor(spec)
    assert set(out["nemo"]) == {"offline"} and set(out["tiny"]) == {"offline", "chunked"}
    assert out["nemo"]["offline"]["floor_rtf"] > 0
