"""``slimasr info``: the shipped configurations and one model file's description."""
import json

from click.testing import CliRunner

from slimasr.cli import main as cli
from slimasr.model.asr import build_model


def test_info_lists_shipped_configs():
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 0, r.output
    assert "config small:" in r.output and "config paper:" in r.output


def test_info_model_describes_architecture_frontend_and_source(tmp_path):
    m = build_model("tiny")
    m.source = {"toolkit": "wenet", "sha256": "ab" * 32}
    path = m.save(tmp_path / "m.pt")
    r = CliRunner().invoke(cli, ["info", "--model", str(path), "--json"])
    assert r.exit_code == 0, r.output
    desc = json.loads(r.output)
    assert desc["layers"] == m.config.num_layers and desc["parameters"] == m.num_parameters()
    assert desc["source"]["toolkit"] == "wenet" and desc["frontend"]["kind"] == m.frontend.to_dict()["kind"]
    r = CliRunner().invoke(cli, ["info", "--model", str(path)])
    assert r.exit_code == 0 and '"toolkit": "wenet"' in r.output and f"{m.config.num_layers} layers" in r.output


def test_info_model_bad_files_one_line(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("not a model")
    for target in (bad, tmp_path / "missing.pt", tmp_path):
        r = CliRunner().invoke(cli, ["info", "--model", str(target)])
        assert r.exit_code == 1 and r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1
        assert "Traceback" not in r.output


def test_info_names_a_pruned_models_kept_layers(tmp_path):
    from slimasr.prune import remove_layers

    m = build_model("tiny")
    path = remove_layers(m, [1]).save(tmp_path / "p.pt")
    r = CliRunner().invoke(cli, ["info", "--model", str(path)])
    assert r.exit_code == 0, r.output
    assert "  pruned: kept original layers [0, 2, 3]" in r.output
    r = CliRunner().invoke(cli, ["info", "--model", str(m.save(tmp_path / "m.pt"))])
    assert r.exit_code == 0 and "pruned:" not in r.output
