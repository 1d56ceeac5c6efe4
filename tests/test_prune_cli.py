"""The prune commands (click CliRunner) on a tiny model with a tokenizer and a noise manifest."""
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.model import build_model, load_model
from slimasr.tokenizer import train_tokenizer

TEXTS = ["the cat sat", "a dog ran far", "the mat", "far away"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune")
    tok = train_tokenizer(["the cat sat on the mat", "a dog ran far away"] * 30, vocab_size=18, out_dir=d / "tok")
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS):
        dur = 1.0 + 0.25 * i
        sf.write(d / f"{i}.wav", (0.1 * rng.standard_normal(int(16000 * dur))).astype(np.float32), 16000)
        rows.append({"audio_filepath": f"{i}.wav", "duration": dur, "text": text})
    (d / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = build_model("tiny", vocab_size=tok.vocab_size)
    model.attach_tokenizer(tok.to_bytes())
    model.save(d / "model.pt")
    return d


def test_help_has_examples():
    for cmd in (["prune"], ["prune", "score"], ["prune", "oneshot"]):
        r = _run(*cmd, "--help")
        assert r.exit_code == 0 and "Example:" in r.output and "slimasr prune" in r.output.split("Example:")[1]


@pytest.mark.slow
def test_score_all(setup):
    d = setup
    r = _run("prune", "score", "--model", d / "model.pt", "--data", d / "dev.jsonl", "--metric", "all",
             "--out", d / "scores.json", "--plot", d / "scores.png", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    s = json.loads((d / "scores.json").read_text())
    assert s["layers"] == 4 and s["num_utterances"] == 4
    expected = {"correlation", "correlation_raw", "energy", "gradient", "hessian", "taylor", "oracle", "oracle_wer",
                "last", "random"}
    assert set(s["metrics"]) == expected
    for m in s["metrics"].values():
        assert len(m["scores"]) == 4 and sorted(m["ranks"]) == [0, 1, 2, 3]
    assert set(s["oracle_agreement"]) == expected - {"oracle"}
    assert set(s["agreement"]["energy"]) == expected - {"energy"}
    assert all(0.0 <= w for w in s["metrics"]["oracle_wer"]["scores"]) and "oracle_full_wer" in s["info"]
    assert (d / "scores.png").stat().st_size > 1000
    assert "tau vs oracle" in r.output

    r = _run("prune", "score", "--model", d / "model.pt", "--data", d / "dev.jsonl", "--metric", "energy",
             "--metric", "correlation", "--max-batches", "1", "--batch-size", "2", "--out", d / "s2.json")
    assert r.exit_code == 0, r.output
    s2 = json.loads((d / "s2.json").read_text())
    assert list(s2["metrics"]) == ["energy", "correlation"] and s2["num_utterances"] == 2


@pytest.mark.slow
def test_oneshot(setup):
    d = setup
    if not (d / "scores.json").exists():
        test_score_all(setup)
    scores = json.loads((d / "scores.json").read_text())
    r = _run("prune", "oneshot", "--model", d / "model.pt", "--scores", d / "scores.json", "--metric",
             "correlation", "--remove", "1", "--out", d / "p1.pt")
    assert r.exit_code == 0, r.output
    p1 = load_model(d / "p1.pt")
    dropped = scores["metrics"]["correlation"]["prune_order"][0]
    assert list(p1.config.original_layers) == [i for i in range(4) if i != dropped]
    assert p1.tokenizer_bytes == load_model(d / "model.pt").tokenizer_bytes

    r = _run("prune", "oneshot", "--model", d / "model.pt", "--metric", "last", "--keep", "2", "--out", d / "l.pt")
    assert r.exit_code == 0, r.output
    assert load_model(d / "l.pt").config.original_layers == (0, 1)
    r = _run("prune", "oneshot", "--model", d / "model.pt", "--metric", "random", "--seed", "3", "--ratio", "0.5",
             "--out", d / "r.pt")
    assert r.exit_code == 0, r.output
    assert len(load_model(d / "r.pt").encoder.layers) == 2

    # no scores file: score on --data, then prune; then prune the pruned model again (original indices kept)
    r = _run("prune", "oneshot", "--model", d / "p1.pt", "--data", d / "dev.jsonl", "--metric", "energy",
             "--remove", "1", "--out", d / "p2.pt")
    assert r.exit_code == 0, r.output
    p2 = load_model(d / "p2.pt")
    assert len(p2.encoder.layers) == 2 and set(p2.config.original_layers) < set(p1.config.original_layers)


def test_oneshot_half_stores_float16_weights_that_load_as_the_float32_ones(setup, tmp_path):
    d = setup
    for name, extra in (("full.pt", ()), ("half.pt", ("--half",))):
        r = _run("prune", "oneshot", "--model", d / "model.pt", "--metric", "last", "--keep", "2",
                 "--out", tmp_path / name, *extra)
        assert r.exit_code == 0, r.output
    import torch
    state = torch.load(tmp_path / "half.pt", map_location="cpu", weights_only=False)["state_dict"]
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert (tmp_path / "half.pt").stat().st_size < 0.9 * (tmp_path / "full.pt").stat().st_size  # tokenizer, CMVN: not halved
    full, half = load_model(tmp_path / "full.pt"), load_model(tmp_path / "half.pt")
    assert half.config == full.config
    for (k, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-3), k


def test_errors(setup):
    d = setup
    base = ["prune", "oneshot", "--model", d / "model.pt", "--out", d / "x.pt"]
    r = _run(*base, "--metric", "last")
    assert r.exit_code != 0 and "--remove, --keep or --ratio" in r.output
    r = _run(*base, "--metric", "last", "--remove", "4")
    assert r.exit_code != 0 and "at least one layer" in r.output and "Traceback" not in r.output
    r = _run(*base, "--metric", "energy", "--remove", "1")
    assert r.exit_code != 0 and "--scores or --data" in r.output
    r = _run("prune", "oneshot", "--model", d / "nope.pt", "--metric", "last", "--remove", "1", "--out", d / "x.pt")
    assert r.exit_code != 0 and "nope.pt" in r.output
    (d / "broken.json").write_text("{not json")
    r = _run(*base, "--metric", "energy", "--remove", "1", "--scores", d / "broken.json")
    assert r.exit_code != 0 and "broken.json" in r.output
    (d / "few.json").write_text(json.dumps({"layers": 4, "metrics": {"last": {"scores": [0, 1, 2, 3],
                                                                              "ranks": [3, 2, 1, 0]}}}))
    r = _run(*base, "--metric", "energy", "--remove", "1", "--scores", d / "few.json")
    assert r.exit_code != 0 and "no 'energy' scores" in r.output
    # scores of a 4-layer model do not fit the 3-layer pruned model
    (d / "s3.json").write_text(json.dumps({"layers": 4, "metrics": {"energy": {"scores": [0, 1, 2, 3],
                                                                               "ranks": [0, 1, 2, 3]}}}))
    bare = build_model("tiny")
    bare.save(d / "bare.pt")
    r = _run("prune", "oneshot", "--model", d / "bare.pt", "--metric", "energy", "--remove", "1",
             "--scores", d / "s3.json", "--out", d / "x.pt")
    assert r.exit_code == 0, r.output
    r = _run("prune", "oneshot", "--model", d / "x.pt", "--metric", "energy", "--remove", "1",
             "--scores", d / "s3.json", "--out", d / "y.pt")
    assert r.exit_code != 0 and "4-layer" in r.output and "s3.json" in r.output
    # a model without a tokenizer cannot be scored on a manifest; a missing manifest is named
    r = _run("prune", "score", "--model", d / "bare.pt", "--data", d / "dev.jsonl", "--out", d / "z.json")
    assert r.exit_code != 0 and "tokenizer" in r.output
    r = _run("prune", "score", "--model", d / "model.pt", "--data", d / "missing.jsonl", "--out", d / "z.json")
    assert r.exit_code != 0 and "missing.jsonl" in r.output
    r = _run("prune", "score", "--model", d / "model.pt", "--data", d / "dev.jsonl", "--out", d / "z.json",
             "--max-batches", "0")
    assert r.exit_code != 0 and "--max-batches" in r.output


@pytest.mark.parametrize("stated", [0.05, 1.0], ids=["duration_right", "duration_wrong"])
def test_score_skips_and_names_a_50ms_clip(setup, tmp_path, caplog, stated):
    """A 50 ms clip among three utterances (its manifest duration right, or wrong) and a malformed line: scored on
    the other two, the clip named in the log and counted in the summary, the line named; never a failed job."""
    d = setup
    sf.write(tmp_path / "short.wav", np.zeros(800, np.float32), 16000)
    rows = [{"audio_filepath": str(d / f"{i}.wav"), "duration": 1.0 + 0.25 * i, "text": TEXTS[i]} for i in (0, 1)]
    rows.append({"audio_filepath": str(tmp_path / "short.wav"), "duration": stated, "text": "the cat"})
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": "no audio"}\n')
    with caplog.at_level("WARNING", logger="slimasr.data.dataset"):
        r = _run("prune", "score", "--model", d / "model.pt", "--data", tmp_path / "dev.jsonl", "--metric", "energy",
                 "--out", tmp_path / "s.json", "--batch-size", "3")
    assert r.exit_code == 0, r.output
    assert "scored on 2 utterances (2 malformed, unreadable or too short, skipped and named above)" in r.output
    assert "dev.jsonl:4: missing key(s) audio_filepath, duration" in r.stderr, r.stderr   # a malformed line: named
    assert "short.wav" in caplog.text and ("too_short" in caplog.text or "too short" in caplog.text)
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["num_utterances"] == 2 and saved["info"]["skipped_utterances"] == 2, saved


def test_oneshot_refuses_scores_of_another_model(setup, tmp_path):
    """Scores record the scored model file's SHA-256: pruning another model of the same depth with them (scored
    without --model, then pruning one's own model) is refused by name, not done by the wrong ranks."""
    d = setup
    r = _run("prune", "score", "--model", d / "model.pt", "--data", d / "dev.jsonl", "--metric", "correlation",
             "--out", tmp_path / "s.json", "--max-batches", "1", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    assert "tau vs oracle" not in r.output                   # no oracle computed: no empty column
    info = json.loads((tmp_path / "s.json").read_text())["info"]
    assert info["model_file"] == "model.pt" and len(info["model_sha256"]) == 64
    other = build_model("tiny", vocab_size=load_model(d / "model.pt").config.vocab_size)   # same depth, new weights
    other.save(tmp_path / "other.pt")
    r = _run("prune", "oneshot", "--model", tmp_path / "other.pt", "--scores", tmp_path / "s.json", "--metric",
             "correlation", "--remove", "1", "--out", tmp_path / "x.pt")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    line = r.output.strip()
    assert "\n" not in line and "computed on another model (model.pt" in line and "other.pt" in line
    assert "slimasr prune score --model" in line and not (tmp_path / "x.pt").exists()
    r = _run("prune", "oneshot", "--model", d / "model.pt", "--scores", tmp_path / "s.json", "--metric",
             "correlation", "--remove", "1", "--out", tmp_path / "x.pt")
    assert r.exit_code == 0, r.output


def test_an_output_that_is_an_input_or_unwritable_is_refused_before_any_work(setup, tmp_path):
    d = setup
    (d / "s.json").write_text(json.dumps({"layers": 4, "metrics": {"last": {"scores": [0, 1, 2, 3],
                                                                            "ranks": [3, 2, 1, 0]}}}))
    before = {p: p.read_bytes() for p in (d / "s.json", d / "model.pt", d / "dev.jsonl")}
    for args, out in [(["oneshot", "--metric", "last", "--remove", "1", "--scores", d / "s.json"], d / "s.json"),
                      (["oneshot", "--metric", "last", "--remove", "1"], d / "model.pt"),
                      (["score", "--metric", "last", "--data", d / "dev.jsonl"], d / "dev.jsonl")]:
        r = _run("prune", *args, "--model", d / "model.pt", "--out", out)
        assert r.exit_code == 1 and r.output.startswith(f"Error: --out {out} is also an input ("), r.output
    assert all(p.read_bytes() == b for p, b in before.items())
    (tmp_path / "file").write_text("")
    r = _run("prune", "score", "--metric", "last", "--model", d / "model.pt", "--data", d / "dev.jsonl",
             "--out", tmp_path / "s.json", "--plot", tmp_path / "file" / "p.png")
    assert r.exit_code == 1 and "is a file, not a folder" in r.output and not (tmp_path / "s.json").exists()
