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


def test_info_describes_an_export_directory(tmp_path):
    from slimasr.export import export_onnx
    from slimasr.prune import remove_layers

    m = remove_layers(build_model("tiny"), [1])
    export_onnx(m, tmp_path / "s", streaming=True, chunk_size=4, left_chunks=2, int8=True)
    r = CliRunner().invoke(cli, ["info", "--model", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == (f"{tmp_path / 's'}: streaming ONNX export (chunk 4 x 40 ms, 2 left chunks), 3 layers, "
                        f"d={m.config.d_model}, heads={m.config.num_heads}, kernel={m.config.kernel_size}, "
                        f"vocab={m.config.vocab_size}")
    assert lines[1].startswith("  files: model.onnx (") and "model.int8.onnx (" in lines[1]
    assert "  pruned: kept original layers [0, 2, 3]" in lines
    assert "sherpa-onnx: OnlineRecognizer.from_wenet_ctc(model=..., tokens=..., chunk_size=4, num_left_chunks=2)" \
        in r.output
    r = CliRunner().invoke(cli, ["info", "--model", str(tmp_path / "s"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["chunk_size"] == 4
    (tmp_path / "s" / "slimasr_export.json").write_text("{}")
    r = CliRunner().invoke(cli, ["info", "--model", str(tmp_path / "s")])
    assert r.exit_code == 1 and "lacks" in r.output and "re-export" in r.output and "Traceback" not in r.output


def test_info_reports_an_averaged_models_inputs_and_a_model_without_a_record(tmp_path):
    """`slimasr average` records its inputs (name, sha256, weight; an input's own source kept): info lists them,
    and a model without a record is not described as anything it cannot show."""
    from slimasr.model.average import average_checkpoints

    a = build_model("tiny")
    a.source = {"toolkit": "wenet", "sha256": "ab" * 32}
    pa = a.save(tmp_path / "a.pt")
    pb = build_model("tiny").save(tmp_path / "b.pt")
    r = CliRunner().invoke(cli, ["info", "--model", str(pb)])
    assert r.exit_code == 0 and "source: none recorded" in r.output and "trained with" not in r.output, r.output
    avg = average_checkpoints([pa, pb], [1, 3])
    path = avg.save(tmp_path / "avg.pt", half=True)
    r = CliRunner().invoke(cli, ["info", "--model", str(path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    k = next(i for i, line in enumerate(lines) if "source:" in line)
    shas = [i["sha256"][:16] for i in avg.source["inputs"]]
    assert lines[k] == "  source: weight-space average (slimasr average) of 2 model(s): weight, file, sha256"
    assert lines[k + 1:k + 4] == [f"    0.2500  a.pt  sha256 {shas[0]}",
                                  f'        source: {{"toolkit": "wenet", "sha256": "{"ab" * 32}"}}',
                                  f"    0.7500  b.pt  sha256 {shas[1]}"], lines


def test_info_prints_an_imported_stft_front_end_without_its_mel_matrix_bytes(tmp_path):
    """An imported ESPnet / NeMo model's STFT front-end carries its mel matrix as base64 (tens of kB): the text
    description names its shape and leaves the unused fbank settings out; --json keeps everything."""
    import numpy as np

    from slimasr.features import FrontendConfig
    from slimasr.frontends import StftMelConfig, encode_matrix

    m = build_model("tiny")
    n = m.config.num_mel_bins
    stft = StftMelConfig(num_mel_bins=n, mel_matrix=encode_matrix(np.ones((n, 257), np.float32)), n_fft=512,
                         win_length=400, hop_length=160)
    m.set_frontend(FrontendConfig(kind="stft_mel", stft=stft, cmvn="global"))
    path = m.save(tmp_path / "m.pt")
    r = CliRunner().invoke(cli, ["info", "--model", str(path)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("  front-end: "))
    fe = json.loads(line.removeprefix("  front-end: "))
    assert fe["kind"] == "stft_mel" and "fbank" not in fe and fe["stft"]["n_fft"] == 512
    assert fe["stft"]["mel_matrix"] == f"{n} x 257 float32 matrix" and len(line) < 600, line
    r = CliRunner().invoke(cli, ["info", "--model", str(path), "--json"])
    assert json.loads(r.output)["frontend"]["stft"]["mel_matrix"] == stft.mel_matrix


def test_info_gives_an_export_chunk_in_its_own_encoder_frames(tmp_path):
    """A chunk of a model with 8x subsampling (WeNet conv2d8) lasts 8 x 80 ms, not 8 x 40 ms."""
    from slimasr.export import export_onnx

    m = build_model("tiny", subsampling="conv2d8")
    export_onnx(m, tmp_path / "s8", streaming=True, chunk_size=8, left_chunks=2)
    r = CliRunner().invoke(cli, ["info", "--model", str(tmp_path / "s8")])
    assert r.exit_code == 0, r.output
    assert "streaming ONNX export (chunk 8 x 80 ms, 2 left chunks)" in r.output.splitlines()[0], r.output
