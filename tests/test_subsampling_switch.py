"""Switching a pruned model's front-end to dw_striding4: initialisation, distillation, streaming, FLOP model, CLI."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from slimasr.bench.flops import flops_per_audio_second, offline_gemms
from slimasr.cli import main
from slimasr.model import build_model, load_model
from slimasr.prune.surgery import _separable_from_full, distill_subsampling, remove_layers, switch_subsampling


def test_separable_init_is_exact_for_a_separable_kernel():
    c, k = 6, 3
    full, dw, pw = (torch.nn.Conv2d(c, c, k, 2), torch.nn.Conv2d(c, c, k, 2, groups=c), torch.nn.Conv2d(c, c, 1))
    with torch.no_grad():                         # W[o, i] = P[o, i] * D[i]: exactly separable
        full.weight.copy_(torch.randn(c, c)[:, :, None, None] * torch.randn(c, k, k)[None])
    _separable_from_full(full, dw, pw)
    x = torch.randn(2, c, 11, 13)
    torch.testing.assert_close(pw(dw(x)), full(x), atol=1e-4, rtol=1e-4)


def test_switch_keeps_geometry_and_streams_like_offline(one_torch_thread):
    m = remove_layers(build_model("tiny").eval(), [3])
    n = switch_subsampling(m, "dw_striding4").eval()
    assert n.config.subsampling == "dw_striding4" and m.config.subsampling == "conv2d4"
    assert (n.config.subsampling_factor, n.config.right_context, n.config.left_context) == (4, 6, 0)
    assert n.config.original_layers == m.config.original_layers
    # the input model is untouched; first convolution and projection are copied
    assert isinstance(m.encoder.subsampling.conv[2], torch.nn.Conv2d) and m.encoder.subsampling.conv[2].groups == 1
    assert n.encoder.subsampling.conv[2].groups == n.config.subsampling_channels
    torch.testing.assert_close(n.encoder.subsampling.out.weight, m.encoder.subsampling.out.weight)
    feats = torch.randn(1, 203, 80)
    assert n.encoder.front_end(feats).shape == m.encoder.front_end(feats).shape
    full, _ = n.ctc_log_probs(feats, chunk_size=4, left_chunks=2)
    state, parts = n.init_state(1), []
    for s in range(0, 203, 37):
        lp, state = n.stream_step(feats[:, s:s + 37], state, 4, 2, final=s + 37 >= 203)
        parts.append(lp)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)


def test_switch_refuses_other_front_ends():
    with pytest.raises(ValueError, match="supported: dw_striding4"):
        switch_subsampling(build_model("tiny"), "dw_striding8")
    m = switch_subsampling(build_model("tiny"), "dw_striding4")
    with pytest.raises(ValueError, match="needs a model with the 'conv2d4' front-end"):
        switch_subsampling(m, "dw_striding4")


def test_distillation_lowers_the_front_end_error(one_torch_thread):
    teacher = build_model("tiny").eval()
    student = switch_subsampling(teacher, "dw_striding4")
    batches = [{"feats": torch.randn(2, 120, 80), "feats_lens": torch.tensor([120, 90])} for _ in range(3)]
    losses = distill_subsampling(student, teacher, batches, steps=40, lr=3e-3)
    assert len(losses) == 40 and losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(student.encoder.layers.parameters(),
                                                  teacher.encoder.layers.parameters()))
    with pytest.raises(ValueError, match="no batch"):
        distill_subsampling(student, teacher, [], steps=1)


def test_flop_model_counts_the_separable_front_end():
    from slimasr.model.config import PAPER

    dw = PAPER.replace(subsampling="dw_striding4", num_layers=12)
    full = PAPER.replace(num_layers=12)
    g = {x.name: x for x in offline_gemms(dw, 403)}
    # 403 frames -> 201 x 39 -> 100 x 19 (x C = 512 channels)
    assert (g["subsampling.conv2.depthwise"].m, g["subsampling.conv2.depthwise"].k) == (100 * 19 * 512, 9)
    assert (g["subsampling.conv2.pointwise"].m, g["subsampling.conv2.pointwise"].k) == (100 * 19, 512)
    a = flops_per_audio_second(full, "chunked", chunk_size=16, left_chunks=4)
    b = flops_per_audio_second(dw, "chunked", chunk_size=16, left_chunks=4)
    # everything but the second convolution is the same; that one is ~9x cheaper (9 C^2 -> C^2 + 9 C per position)
    conv2 = a["by_component"]["subsampling"] - b["by_component"]["subsampling"]
    assert b["total"] == pytest.approx(a["total"] - conv2)
    assert b["frontend_share"] < 0.5 * a["frontend_share"]
    hop = flops_per_audio_second(full, "chunked", chunk_size=16, left_chunks=4, hop=8)
    assert hop["total"] == pytest.approx(2 * a["total"])


def test_prune_cli_switches_and_distils(tmp_path):
    from slimasr.tokenizer import train_tokenizer

    tok = train_tokenizer(["the cat sat on the mat", "a dog ran far away"] * 30, vocab_size=18, out_dir=tmp_path / "t")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", (0.1 * rng.standard_normal(16000 + 4000 * i)).astype(np.float32), 16000)
        rows.append({"audio_filepath": f"{i}.wav", "duration": 1 + 0.25 * i, "text": "the cat"})
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = build_model("tiny", vocab_size=tok.vocab_size)
    m.attach_tokenizer(tok.to_bytes())
    m.save(tmp_path / "m.pt")
    args = ["prune", "oneshot", "--model", str(tmp_path / "m.pt"), "--metric", "last", "--keep", "3",
            "--subsampling", "dw_striding4", "--out", str(tmp_path / "p.pt")]
    r = CliRunner().invoke(main, args + ["--data", str(tmp_path / "dev.jsonl"), "--distill-steps", "5"])
    assert r.exit_code == 0, r.output
    assert "distilled 5 steps" in r.output
    p = load_model(tmp_path / "p.pt")
    assert p.config.subsampling == "dw_striding4" and len(p.encoder.layers) == 3
    r = CliRunner().invoke(main, args + ["--distill-steps", "0"])
    assert r.exit_code != 0 and "Invalid value for '--distill-steps'" in r.output
    r = CliRunner().invoke(main, args[:-2] + ["--out", str(tmp_path / "q.pt")])
    assert r.exit_code == 0 and "SVD initialisation only" in r.output


def test_overlapping_chunks_are_the_runtimes_only():
    from slimasr.bench.runner import RunSpec, _skip_reason
    from slimasr.decoding import BackendConfig

    assert BackendConfig(backend="onnx", chunk_size=16, left_chunks=2, hop=8).hop == 8
    with pytest.raises(ValueError, match="hop = chunk size"):
        BackendConfig(backend="torch", chunk_size=16, hop=8)
    spec = RunSpec(model="m", model_path=None, backend="torch", mode="chunked", chunk_size=16, hop=8)
    assert "hop = chunk size" in _skip_reason(spec)
    assert _skip_reason(RunSpec(model="m", model_path=None, backend="torch", mode="chunked", chunk_size=16,
                                hop=16)) is None
