"""The reproduction end to end on a tiny teacher and a tiny corpus: all tables written, finished runs skipped."""
import json

import pytest
import torch
from click.testing import CliRunner
from test_iterative import tiny_model, write_corpus

from slimasr.cli import main
from slimasr.reproduce import BUDGETS, RunSpec, estimate_seconds, plan_runs, reproduce

FAST = BUDGETS["small"].replace(max_frames_per_batch=400, num_workers=0, warmup_steps=2, scratch_warmup_steps=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_small_budget_on_12_layers():
    plan = plan_runs(12, BUDGETS["small"], [0, 1])
    assert len(plan) == 2 * (2 * 7 + 2 * 2 + 2) and len({s.id for s in plan}) == len(plan)
    assert {s.layers for s in plan if s.kind == "oneshot"} == {10, 7}
    it = [s for s in plan if s.kind == "iterative" and s.seed == 0]
    # 10 epochs of 4%: (4 layers, every 4) removes after epochs 4 and 8; (2, 2) after 2, 4 and 6
    assert [(s.remove_n, s.every_m, s.layers) for s in it] == [(4, 4, 7), (2, 2, 7)]
    # distillation comes after the scratch model it starts from
    ids = [s.id for s in plan]
    assert ids.index("seed0/scratch-7L") < ids.index("seed0/distill-7L")
    assert all(estimate_seconds(s, BUDGETS["small"], 7.5, 12) > 0 for s in plan)
    # a schedule that does not fit the epochs is compressed (one epoch left after the last removal)
    few = plan_runs(12, BUDGETS["small"].replace(epochs=1), [0])
    assert [(s.remove_n, s.every_m) for s in few if s.kind == "iterative"] == [(4, 2), (2, 1)]


def test_reproduce_end_to_end_and_resume(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_corpus(data)
    teacher = tiny_model(tmp_path, num_layers=4)
    teacher.save(tmp_path / "teacher.pt")
    lines = []
    kw = dict(seeds=[0], budget=FAST, epochs=1, results_dir=tmp_path / "results", progress=False,
              feature_cache=False, echo=lines.append)
    rep = reproduce(tmp_path / "teacher.pt", data, tmp_path / "work", **kw)
    plan = plan_runs(4, FAST.replace(epochs=1), [0])
    assert rep["pending"] == [] and len(rep["runs"]) == len(plan) == 20
    md = (tmp_path / "results" / "reproduction.md").read_text()
    for title in ("## Table 1", "## Table 2", "## Table 3", "## Figure 2", "oracle", "WER by held-out test voice"):
        assert title in md
    assert "pending" not in md.split("## Table 1")[1].split("## How to")[0]
    assert "WER espeak-ng" in md and "WER flite" in md and "Online" in md
    assert (tmp_path / "results" / "reproduction_figure2_2x2.png").is_file()
    data_json = json.loads((tmp_path / "results" / "reproduction.json").read_text())
    r = next(x for x in data_json["runs"] if x["id"] == "seed0/oneshot-correlation-2L")
    assert r["layers"] == 2 and len(r["original_layers"]) == 2 and "before_finetune" in r
    assert set(r["eval"]) == {"offline", "chunked"} and set(r["eval"]["offline"]["by_group"]) == {"espeak-ng", "flite"}
    it = next(x for x in data_json["runs"] if x["kind"] == "iterative")
    assert it["layers"] == 2 and it["iterations"] >= 1

    # a second call trains nothing: every run is skipped
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "results").rglob("*.json")}
    lines.clear()
    rep2 = reproduce(tmp_path / "teacher.pt", data, tmp_path / "work", **kw)
    assert len(rep2["runs"]) == 20 and not any(line.startswith("[") for line in lines)
    assert "20 done, 0 pending" in " ".join(lines)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "results").rglob("*.json")}
    # other settings in the same work directory are refused
    with pytest.raises(ValueError, match="other settings"):
        reproduce(tmp_path / "teacher.pt", data, tmp_path / "work", **{**kw, "epochs": 2})


def test_pending_runs_and_the_command(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_corpus(data)
    tiny_model(tmp_path, num_layers=4).save(tmp_path / "teacher.pt")
    args = ["reproduce", "--teacher", tmp_path / "teacher.pt", "--data", data, "--out", tmp_path / "work",
            "--results-dir", tmp_path / "results", "--epochs", 1, "--seeds", 0, 1]
    r = CliRunner().invoke(main, [str(a) for a in args + ["--dry-run"]])
    assert r.exit_code == 0, r.output
    assert "40 runs planned, 0 done, 40 pending" in r.output and "estimated" in r.output
    md = (tmp_path / "results" / "reproduction.md").read_text()
    assert "## Table 1" in md and "## Table 3" in md and "pending" in md
    r = CliRunner().invoke(main, [str(a) for a in ["reproduce", "--data", tmp_path, "--out", tmp_path / "w"]])
    assert r.exit_code != 0 and "train.jsonl" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["reproduce", "--help"])
    assert r.exit_code == 0 and "slimasr reproduce" in r.output.split("Example:")[1]
    assert RunSpec("oneshot", 0, 7, metric="energy", ratio=0.4).id == "seed0/oneshot-energy-7L"
