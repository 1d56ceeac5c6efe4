"""The reproduction end to end on a tiny teacher and a tiny corpus: all tables written, finished runs skipped."""
import json
import os

import pytest
import torch
from click.testing import CliRunner
from test_iterative import tiny_model, write_corpus

from slimasr.cli import main
from slimasr.recipes.reproduce import BUDGETS, ExperimentSpec, estimate_seconds, plan_experiments, reproduce

FAST = BUDGETS["small"].replace(max_frames_per_batch=400, num_workers=0, warmup_steps=2, scratch_warmup_steps=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_small_budget_on_12_layers():
    plan = plan_experiments(12, BUDGETS["small"], [0, 1])
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
    few = plan_experiments(12, BUDGETS["small"].replace(epochs=1), [0])
    assert [(s.remove_n, s.every_m) for s in few if s.kind == "iterative"] == [(4, 2), (2, 1)]


@pytest.mark.slow
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
    plan = plan_experiments(4, FAST.replace(epochs=1), [0])
    assert rep["pending"] == [] and len(rep["runs"]) == len(plan) == 20
    md = (tmp_path / "results" / "reproduction.md").read_text()
    for title in ("## Table 1", "## Table 2", "## Table 3", "## Figure 2", "oracle", "WER by held-out test voice",
                  "## Do the paper's findings hold here?"):
        assert title in md
    findings = md.split("## Do the paper's findings hold here?")[1].split("## How to")[0]
    # every finding is decided (holds / does not hold) from the runs, none pending
    assert findings.count("hold") >= 5 and "pending" not in findings
    assert "pending" not in md.split("## Table 1")[1].split("## How to")[0]
    assert "WER espeak-ng" in md and "WER flite" in md and "Online" in md
    # the cost table keeps devices apart (every run here trained on the CPU)
    assert "| runs | device | finished | mean steps | mean minutes |" in md and "| oneshot | cpu | " in md
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

    # a fresh work directory seeded from the report: nothing to train, the same tables and Figure 2
    report = tmp_path / "results" / "reproduction.json"
    lines.clear()
    rep3 = reproduce(tmp_path / "teacher.pt", data, tmp_path / "work2", **{**kw, "results_dir": tmp_path / "r2"},
                     resume_from=report)
    assert len(rep3["runs"]) == 20 and "20 finished runs taken from" in " ".join(lines)
    assert not any(line.startswith("[") for line in lines)
    md2 = (tmp_path / "r2" / "reproduction.md").read_text()
    assert md2.split("## Table 1")[1] == md.split("## Table 1")[1]
    with pytest.raises(ValueError, match="other settings"):
        reproduce(tmp_path / "teacher.pt", data, tmp_path / "work3", **{**kw, "epochs": 2}, resume_from=report)


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
    assert "wall-clock" not in r.output  # one worker: run time is wall-clock time
    r = CliRunner().invoke(main, [str(a) for a in args + ["--dry-run", "--workers", 2, "--device", "cpu"]])
    assert r.exit_code == 0, r.output
    if (os.cpu_count() or 1) >= 2:  # two CPU workers need two cores to run side by side
        assert "h of wall-clock time with 2 workers" in r.output, r.output
    else:
        assert "wall-clock" not in r.output
    md = (tmp_path / "results" / "reproduction.md").read_text()
    assert "## Table 1" in md and "## Table 3" in md and "pending" in md
    r = CliRunner().invoke(main, [str(a) for a in ["reproduce", "--data", tmp_path, "--out", tmp_path / "w",
                                                   "--results-dir", tmp_path / "r"]])
    assert r.exit_code != 0 and "train.jsonl" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, [str(a) for a in ["reproduce", "--data", data, "--out", tmp_path / "w"]])
    assert r.exit_code != 0 and "--results-dir" in r.output          # no default place for the report
    r = CliRunner().invoke(main, ["reproduce", "--help"])
    assert r.exit_code == 0 and "slimasr reproduce" in r.output.split("Example:")[1]
    assert ExperimentSpec("oneshot", 0, 7, metric="energy", ratio=0.4).id == "seed0/oneshot-energy-7L"


def test_gpu_budget_gives_scratch_models_their_own_budget(tmp_path):
    b = BUDGETS["gpu"]
    plan = plan_experiments(12, b, [0, 1])
    assert len(plan) == 40
    # whole epochs: the paper's schedules as they are (removals after epochs 4, 8 and 2, 4, 6 of 10)
    assert [(s.remove_n, s.every_m) for s in plan if s.kind == "iterative" and s.seed == 0] == [(4, 4), (2, 2)]
    s = next(p for p in plan if p.kind == "scratch")
    o = next(p for p in plan if p.kind == "oneshot")
    # scratch: 12 epochs over all of train vs 10 over 20%: 6x the fine-tuning audio
    assert estimate_seconds(s, b, 7.5, 12) > 4 * estimate_seconds(o, b, 7.5, 12)


@pytest.mark.slow
def test_workers_share_the_plan_and_the_feature_cache(tmp_path):
    """Two worker processes: every run done once, by claims; scratch runs get their own budget; the runs' data
    subsets read the one feature cache of the whole training set."""
    data = tmp_path / "data"
    data.mkdir()
    write_corpus(data)
    tiny_model(tmp_path, num_layers=4).save(tmp_path / "teacher.pt")
    budget = FAST.replace(scratch_epochs=2, scratch_fraction=1.0, ratios=(0.25,), iterative_schedules=((1, 1),))
    lines = []
    rep = reproduce(tmp_path / "teacher.pt", data, tmp_path / "work", seeds=[0], budget=budget, epochs=1,
                    results_dir=tmp_path / "results", progress=False, echo=lines.append, workers=2)
    plan = plan_experiments(4, budget.replace(epochs=1), [0])
    assert rep["pending"] == [] and len(rep["runs"]) == len(plan) == 10, lines
    assert not any(line.startswith("FAILED") for line in lines), lines
    owners = {(d / "owner").read_text().split()[1] for d in (tmp_path / "work" / "claims" / "seed0").iterdir()}
    assert len(owners) == 2
    runs = {r["id"]: r for r in rep["runs"]}
    scratch = runs["seed0/scratch-3L"]["train"]
    assert scratch["epochs"] == 2 and scratch["train_fraction"] == 1.0
    assert runs["seed0/oneshot-correlation-3L"]["train"]["epochs"] == 1
    assert runs["seed0/distill-3L"]["student_init"] == "scratch"
    caches = sorted((data / ".feature_cache").glob("fbank-*.json"))
    assert len(caches) == 1          # train and dev (the same files here) and every run's subset read one cache
    md = (tmp_path / "results" / "reproduction.md").read_text()
    assert "2 epochs over 100% of the training set" in md


@pytest.mark.slow
def test_max_minutes_zero_starts_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_corpus(data)
    tiny_model(tmp_path, num_layers=4).save(tmp_path / "teacher.pt")
    lines = []
    rep = reproduce(tmp_path / "teacher.pt", data, tmp_path / "work", seeds=[0], budget=FAST, epochs=1,
                    results_dir=tmp_path / "results", progress=False, echo=lines.append, max_minutes=0,
                    feature_cache=False)
    assert rep["runs"] == [] and len(rep["pending"]) == 20
    assert any("time is up" in line for line in lines)


def test_measured_rate_counts_runs_of_the_same_device_kind():
    """A GPU's training rate must not predict a CPU run's time (nor the reverse)."""
    from slimasr.recipes.reproduce.budget import _measured_rate

    def result(seconds, device):
        return {"kind": "oneshot", "layers": 12,
                "train": {"seconds": seconds, "audio_hours": 10.0, "host": {"device": device}}}

    results = [result(100.0, "cuda"), result(120.0, "cuda:0"), result(1400.0, "cpu")]
    assert _measured_rate(results, 12, "cpu") == 140.0
    assert _measured_rate(results, 12, "cuda") == 11.0
    assert _measured_rate(results, 12) == 12.0                        # no device given: every run counts
    assert _measured_rate([result(100.0, "cuda")], 12, "cpu") is None  # falls back to the assumed CPU rate
