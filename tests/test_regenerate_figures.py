"""benchmarks/regenerate_figures.py: part commands, input checks and the figures summary (no part is run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimasr.cli import main as group
from slimasr.model.asr import default_model_path


@pytest.fixture(scope="module")
def regen(load_benchmark):
    return load_benchmark("regenerate_figures")


def _corpus(tmp_path: Path) -> Path:
    data = tmp_path / "corpus"
    data.mkdir()
    for f in ("dev.jsonl", "test.jsonl", "test_espeak.jsonl", "lm_text.txt"):
        (data / f).write_text("")
    return data


def test_dry_run_passes_the_model_to_every_part(regen, tmp_path, capsys):
    model = str(tmp_path / "m.pt")                           # outside the working directory: shown as given
    Path(model).symlink_to(default_model_path())
    corpus = str(_corpus(tmp_path))
    assert regen.main(["--model", model, "--data-dir", corpus, "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split("]")[0].strip("["): line for line in lines}
    assert set(shown) == set(regen.PARTS)
    for part, line in shown.items():
        assert (f"--model full={model}" if part == "bench_vs_sherpa" else f"--model {model}") in line, line
    assert not (tmp_path / "out").exists()                  # a dry run writes nothing
    manifests = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for m in manifests:
        m.write_text("")
    assert regen.main(["--parts", "default_eval", "--data-dir", corpus, "--train", str(manifests[0]),
                       "--train", str(manifests[1]), "--dry-run"]) == 0
    assert f"--train {manifests[0]} --train {manifests[1]}" in capsys.readouterr().out


def test_bad_parts_and_a_corpus_without_its_files_are_one_line_errors(regen, tmp_path):
    with pytest.raises(SystemExit, match="--parts 'bench,nope': expected a comma-separated list of"):
        regen.main(["--parts", "bench,nope"])
    with pytest.raises(SystemExit, match="missing test.jsonl; synthesise it with"):
        regen.main(["--data-dir", str(tmp_path), "--parts", "chunk_vs_sherpa", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--chunk-rounds 0: expected a positive integer"):
        regen.main(["--chunk-rounds", "0"])


def test_bad_name_paths_and_model_files_are_refused_before_any_part_runs(regen, tmp_path):
    with pytest.raises(SystemExit, match="--name '../x': expected a file-name part"):
        regen.main(["--name", "../x", "--dry-run"])
    with pytest.raises(SystemExit, match="--real .*: no such folder"):
        regen.main(["--real", str(tmp_path / "none"), "--dry-run"])
    with pytest.raises(SystemExit, match="--lm-text .*: no such file"):
        regen.main(["--lm-text", str(tmp_path / "none.txt"), "--dry-run"])
    with pytest.raises(SystemExit, match="--train .*: no such file; expected a training manifest"):
        regen.main(["--train", str(tmp_path / "none.jsonl"), "--dry-run"])
    (tmp_path / "f.txt").write_text("text")
    with pytest.raises(SystemExit, match="--out .* is a file"):
        regen.main(["--out", str(tmp_path / "f.txt"), "--dry-run"])
    with pytest.raises(SystemExit, match="not a PyTorch file"):
        regen.main(["--model", str(tmp_path / "f.txt"), "--dry-run"])
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="an empty file"):
        regen.main(["--model", str(tmp_path / "e.pt"), "--dry-run"])


def test_summary_gives_each_part_its_file_its_run_and_whether_it_is_stale(regen, tmp_path):
    out, this, other = tmp_path / "out", "a" * 64, "b" * 64
    (out / "default_model").mkdir(parents=True)
    rows = [{"set": "espeak-ng held-out voices: espeak-ng/en-us+f4", "decoder": "greedy", "utterances": 4,
             "wer_offline": 0.5, "wer_chunked": 0.5},
            {"set": "espeak-ng held-out voices", "decoder": "greedy", "utterances": 84, "wer_offline": 0.25,
             "wer_chunked": 0.30},
            {"set": "espeak-ng held-out voices", "decoder": "beam 100 + 4-gram LM (weight 0.6)", "utterances": 84,
             "wer_offline": 0.10, "wer_chunked": 0.12},
            {"set": "real recordings (pocketsphinx-testdata)", "decoder": "beam 100 + 4-gram LM (weight 0.6)",
             "utterances": 10, "wer_offline": 0.80, "wer_chunked": 0.76}]
    (out / "default_model" / "eval_x.json").write_text(json.dumps({"model": "m.pt", "rows": rows}))
    (out / "chunk_vs_sherpa.json").write_text(json.dumps({
        "model_sha256": other, "data": "eval8/test.jsonl", "utterances": 20, "threads": 2, "chunk_size": 16,
        "left_chunks": 4, "load_average": [1.5, 1.0, 1.0], "ratio_median": 0.9, "ratio_spin_median": 1.1,
        "rounds": [{"slimasr_ms": 9.0, "slimasr_spin_ms": 11.0, "sherpa_ms": 10.0}]}))
    (out / "regenerate.json").write_text(json.dumps([{
        "part": "default_eval", "command": "python benchmarks/default_model_eval.py", "model_sha256": this,
        "started_utc": "2026-01-01 00:00", "wall_s": 80.0, "load_average_start": [1.0, 1, 1],
        "load_average_end": [2.0, 1, 1]}]))
    text = regen.write_summary(out, "x", this).read_text()
    sections = {s.split("\n")[0]: s for s in text.split("\n## ")[1:]}

    ev = sections["default_eval"]
    assert "eval_x.json" in ev and "python benchmarks/default_model_eval.py" in ev and "(this summary's model)" in ev
    assert "| held-out espeak-ng voices | 84 | 25.0% | 30.0% (+20%) |" in ev
    assert "| held-out espeak-ng voices, beam 100 + 4-gram LM | 84 | 10.0% | 12.0% (+20%) |" in ev
    assert "| real recordings, beam 100 + 4-gram LM | 10 | 80.0% | 76.0% (-5%) |" in ev
    assert "en-us+f4" not in ev                              # single voices: not in the README's table
    ch = sections["chunk_vs_sherpa"]
    assert "another model: stale" in ch and "no run of this part" in ch and "**0.90x** (rounds 0.90-0.90x)" in ch and "**1.10x**" in ch
    assert "No result file (bench.json)" in sections["bench"]


def test_demo_refuses_a_missing_model_before_any_work(tmp_path):
    r = CliRunner().invoke(group, ["demo", "--work", str(tmp_path / "w"), "--model", str(tmp_path / "none.pt")])
    assert r.exit_code == 2 and "does not exist" in r.output, r.output
    assert not (tmp_path / "w").exists()
