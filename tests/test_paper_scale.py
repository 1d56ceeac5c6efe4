"""benchmarks/paper_scale.py: the imported-architecture models (configs made by the importers' own YAML mapping,
sizes derived from the published hyperparameters), the command line and the ratio lines (nothing is timed)."""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from slimasr.importers import import_nemo, import_wenet
from slimasr.importers.common import read_state_dict
from slimasr.importers.nemo import nemo_model_config, nemo_token_table
from slimasr.importers.wenet import read_units, wenet_model_config, wenet_token_table
from slimasr.model.asr import ASRModel
from slimasr.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "import"


@pytest.fixture(scope="module")
def ps(load_benchmark):
    return load_benchmark("paper_scale")


def _nemo_fixture() -> tuple[Path, dict, dict]:
    path = FIX / "nemo_fastconformer_ctc" / "model" / "fastconformer_ctc_tiny.nemo"
    if not path.is_file():
        pytest.skip("fixture nemo_fastconformer_ctc is absent (built by tools/import_fixtures/make_fixtures.py)")
    with tarfile.open(path) as tar:
        files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return path, yaml.safe_load(files["model_config.yaml"]), files


def _meta_model(cfg) -> ASRModel:
    """The model's structure without weights (parameter counts only)."""
    with torch.device("meta"):
        return ASRModel(cfg)


def test_the_yaml_mappings_are_the_ones_the_importers_use():
    """The functions the benchmark calls on a synthetic YAML give the importer's config for a real toolkit file,
    including what the importer otherwise reads from the weights (subsampling channels)."""
    path, conf, files = _nemo_fixture()
    table, _ = nemo_token_table(conf, path, files)
    assert nemo_model_config(conf, path, table) == import_nemo(path).config
    wdir = FIX / "wenet_u2pp_causal" / "model"
    if not wdir.is_dir():
        pytest.skip("fixture wenet_u2pp_causal is absent")
    wconf = yaml.safe_load((wdir / "train.yaml").read_text())
    wtable = wenet_token_table(read_units(wdir / "units.txt"), wconf, wdir / "units.txt", bpe=True)
    imported = import_wenet(wdir)
    assert wenet_model_config(wconf, wdir / "train.yaml", wtable) == imported.config
    assert Tokenizer.from_bytes(imported.tokenizer_bytes).table == wtable


def test_fastconformer_large_config_and_size(ps):
    cfg, frontend, table, conf = ps.imported_config("nemo-fc-l")
    enc = conf["encoder"]
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.kernel_size) == (
        enc["d_model"], enc["n_layers"], enc["n_heads"], enc["conv_kernel_size"]) == (512, 18, 8, 9)
    assert (cfg.subsampling, cfg.subsampling_channels, cfg.ffn_dim) == ("dw_striding8", 256, 2048)
    assert cfg.xscaling and not cfg.final_norm and cfg.vocab_size == len(enc and conf["decoder"]["vocabulary"]) + 1
    assert table.tokens[0] == "<blank>" and frontend.cmvn == "utterance_nemo"
    assert "per utterance" in cfg.streaming_refusal(frontend)          # the chunked rows say why they are skipped
    from slimasr.bench.flops import chunk_gemms

    with pytest.raises(ValueError, match="'dw_striding8' front-end .* does not stream chunk by chunk"):
        chunk_gemms(cfg, 16, 4)                                       # a one-line reason, not an assertion

    # NeMo's own parameter count of this encoder + CTC head, from the hyperparameters (conformer_modules.py,
    # subsampling.py dw_striding, ConvASRDecoder); slimasr folds each layer's BatchNorm (2 d affine parameters)
    d, ff, h, k, c, v = 512, 2048, 8, 9, 256, cfg.vocab_size
    layer = (2 * (2 * d * ff + ff + d)                     # feed_forward1, feed_forward2
             + 4 * (d * d + d) + d * d + 2 * d              # q, k, v, out; linear_pos (no bias); pos_bias_u, v
             + (2 * d * d + 2 * d) + (k * d + d) + 2 * d + (d * d + d)   # pointwise1, depthwise, batch_norm, pw2
             + 5 * 2 * d)                                   # norm_feed_forward1, self_att, conv, feed_forward2, out
    f = 80
    for _ in range(3):
        f = (f + 2 - 3) // 2 + 1                            # three stride-2 3x3 convolutions, padding 1
    pre = (9 * c + c) + 2 * ((9 * c + c) + (c * c + c)) + (c * f * d + d)
    nemo = 18 * layer + pre + (d * v + v)
    model = _meta_model(cfg)
    assert model.num_parameters() == nemo - 18 * 2 * d
    # the published size: "around 115M parameters" (stt_en_fastconformer_ctc_large model card; 463 MB in fp32)
    assert abs(nemo / 115e6 - 1) < 0.02, nemo


def test_fastconformer_filterbank_is_nemos(ps):
    """The synthetic model's mel filterbank equals the one NeMo's preprocessor stored in the fixture (same
    sample rate, n_fft and bins)."""
    path, conf, files = _nemo_fixture()
    fb = read_state_dict(path, "NeMo weights", files["model_weights.ckpt"])["preprocessor.featurizer.fb"]
    ours = ps._nemo_filterbank(ps.nemo_fastconformer_large_yaml())
    assert ours.shape == fb.shape
    assert torch.allclose(ours, fb.float(), atol=1e-6)


def test_wenet_u2pp_config_and_size(ps):
    cfg, frontend, table, conf = ps.imported_config("wenet-u2pp")
    enc = conf["encoder_conf"]
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, cfg.kernel_size) == (
        enc["output_size"], enc["num_blocks"], enc["attention_heads"], enc["linear_units"],
        enc["cnn_module_kernel"]) == (256, 12, 4, 2048, 15)
    assert cfg.causal_conv and cfg.conv_norm == "layer_norm" and cfg.subsampling == "conv2d4"
    assert cfg.pos_enc == "abs_key" and cfg.vocab_size == conf["output_dim"] == len(table.tokens)
    assert table.tokens[cfg.sos_eos_token] == "<sos/eos>" and frontend.cmvn == "global"
    assert cfg.streaming_refusal(frontend, onnx=True) is None        # offline and chunked rows
    # WeNet's parameter count (encoder.py, subsampling.py Conv2dSubsampling4, ctc.py), from the hyperparameters
    d, ff, h, k, v = 256, 2048, 4, 15, cfg.vocab_size
    layer = (2 * (2 * d * ff + ff + d) + 4 * (d * d + d) + d * d + 2 * d
             + (2 * d * d + 2 * d) + (k * d + d) + 2 * d + (d * d + d) + 5 * 2 * d)
    f = ((80 - 1) // 2 - 1) // 2
    embed = (9 * d + d) + (9 * d * d + d) + (d * f * d + d)
    assert _meta_model(cfg).num_parameters() == 12 * layer + embed + 2 * d + (d * v + v)


def test_models_option_names_what_it_accepts(ps, capsys):
    with pytest.raises(SystemExit) as e:
        ps.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "nemo-fc-l" in out and "wenet-u2pp" in out and "paper_scale.py" in out
    with pytest.raises(SystemExit) as e:
        ps.main(["--part", "table", "--models", "p20,fastconformer"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown model fastconformer" in err and "nemo-fc-l" in err
    with pytest.raises(ValueError, match="unknown imported model"):
        ps.imported_config("p20")


def test_ratio_lines_per_model(ps):
    runs = [{"model": m, "backend": b, "mode": "offline", "rtf": r}
            for m, b, r in (("p20", "torch", 0.6), ("p20", "onnx", 0.5), ("p20", "onnx-int8", 0.25),
                            ("nemo-fc-l", "torch", 0.3), ("nemo-fc-l", "onnx", 0.2), ("nemo-fc-l", "onnx-int8", 0.1))]
    runs.append({"model": "nemo-fc-l", "backend": "onnx", "mode": "chunked", "skipped": "per utterance"})
    lines = ps._ratios_md({"runs": runs})
    assert "- onnx offline: speed-up over p20: nemo-fc-l 2.50x" in lines
    assert "- nemo-fc-l offline: onnx 1.50x PyTorch eager; int8 2.00x fp32" in lines
    assert "- p20 offline: onnx 1.20x PyTorch eager; int8 2.00x fp32" in lines
    assert not any("chunked" in line for line in lines)


def _corpora_the_readme_makes(readme: str) -> set[str]:
    return set(re.findall(r"slimasr data (?:synth|real-test)[^\n`]*?--out (\S+)", readme))


def test_its_data_defaults_and_commands_name_corpora_the_readme_makes(ps):
    """The default --data, and every --data / --wer-data of the README's paper-scale section and of the module
    docstring's examples, is a manifest of a corpus that one of the README's data commands writes (the committed
    figures name the earlier corpus they were measured on in prose, not in a command that would fail)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    made = _corpora_the_readme_makes(readme)
    assert ps.DATA_COMMAND in readme and str(Path(ps.DATA).parent) in made
    section = readme[readme.index("### Speed at the paper's scale"):]
    section = section[:section.index("\n## ")]
    named = re.findall(r"--(?:wer-)?data (data/[\w./-]+\.jsonl)", section + ps.__doc__)
    assert len(named) >= 6, named
    assert [m for m in named if str(Path(m).parent) not in made] == []


def test_a_missing_manifest_is_named_before_any_model_is_built(ps, tmp_path, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the models were built before the manifests were checked")

    monkeypatch.setattr(ps, "build_models", no_build)
    out = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    missing = tmp_path / "none.jsonl"
    with pytest.raises(SystemExit) as e:
        ps.main(["--part", "table", "--data", str(missing), *out])
    assert str(e.value) == (f"--data {missing}: no such file; expected a JSON-lines test manifest (the default is "
                            f"the README's corpus: {ps.DATA_COMMAND})")
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(SystemExit, match=f"^--wer-data {re.escape(str(missing))}: no such file"):
        ps.main(["--part", "int8", "--data", str(tmp_path / "test.jsonl"), "--wer-data", str(missing), *out])


@pytest.mark.parametrize("run", ["paper_scale", "paper_scale_int8"])
def test_the_readme_names_the_run_behind_each_int8_wer(run):
    """The two int8 runs of the default model's WER (front-end convolution in float32, then in int8) gave different
    figures; where the README quotes one it names its file, with that file's fp32, per-tensor and per-channel WER."""
    import json

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    runs = json.loads((ROOT / "benchmarks" / "results" / run / "int8.json").read_text())["default_wer"]["runs"]
    wers = {f"{100 * r['wer']:.2f}%" for r in runs}
    cited = [m.start() for m in re.finditer(re.escape(f"{run}/int8.json"), readme)]
    assert cited, f"the README never names {run}/int8.json"
    assert any(all(w in readme[k - 400: k + 400] for w in wers) for k in cited), (run, wers)
