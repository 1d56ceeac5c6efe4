"""TensorRT: the exported graphs use only what TensorRT's ONNX parser supports (an allow-list derived from
onnx-tensorrt's docs/operators.md, TensorRT 10.15); without TensorRT or a GPU the command says so; with both,
engines are built and agree with onnxruntime."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.export import export_onnx
from slimasr.export.tensorrt import (
    TRT_ONNX_SUPPORT, TensorRTUnavailableError, build_engines, check_tensorrt_compatibility, default_profile,
    parse_shapes, tensorrt_status,
)
from slimasr.model import build_model
from slimasr.prune import remove_layers

pytestmark = pytest.mark.slow  # exports and builds engines

UNAVAILABLE = tensorrt_status()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    m = build_model("tiny").eval()
    m.set_cmvn(torch.randn(80) * 0.1, 1.0 + 0.1 * torch.rand(80))
    return {
        "model": m,
        "offline": export_onnx(m, root / "offline", int8=True),
        "streaming": export_onnx(m, root / "streaming", streaming=True, chunk_size=4, left_chunks=2),
        "pruned": export_onnx(remove_layers(m, [1]), root / "pruned", streaming=True, chunk_size=4, left_chunks=2),
    }


def test_graph_ops_are_in_tensorrt_allow_list(exports):
    """Lists the op types of both graphs; every node (op type and data type, constant axes, opset) passes."""
    for kind in ("offline", "streaming", "pruned"):
        path = exports[kind]["model"]
        ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
        print(kind, ops)
        assert set(ops) <= set(TRT_ONNX_SUPPORT), set(ops) - set(TRT_ONNX_SUPPORT)
        assert check_tensorrt_compatibility(path) == []
        assert not {"Loop", "If", "Scan", "NonZero", "SequenceAt"} & set(ops)   # no control flow


def test_checker_is_not_vacuous(exports, tmp_path):
    # the int8 graph has MatMulInteger / DynamicQuantizeLinear, which TensorRT's parser rejects
    problems = check_tensorrt_compatibility(exports["offline"]["model_int8"])
    assert any("MatMulInteger" in p for p in problems) and any("DynamicQuantizeLinear" in p for p in problems)
    # a double-typed Sin and a non-constant Unsqueeze axes input are caught
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Sin", ["a"], ["b"]), helper.make_node("Unsqueeze", ["b", "ax"], ["c"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [2]),
         helper.make_tensor_value_info("ax", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("c", TensorProto.DOUBLE, [1, 2])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    problems = check_tensorrt_compatibility(path)
    assert any("FP64 tensor" in p and "Sin" in p for p in problems)
    assert any("axes must be a constant" in p for p in problems)


def test_profiles_and_shape_strings(exports):
    assert parse_shapes("x:1x67x80, offset:1") == {"x": (1, 67, 80), "offset": (1,)}
    with pytest.raises(ValueError, match="name:AxBxC"):
        parse_shapes("x=1x2")
    cfg = json.loads(exports["streaming"]["config"].read_text())
    lo, opt, hi = default_profile(cfg)
    assert opt == hi
    assert hi["x"] == (1, 19, 80) and hi["attn_cache"] == (4, 2, 8, 32) and hi["conv_cache"] == (4, 1, 32, 3)
    assert hi["attn_mask"] == (1, 1, 12)
    # a stream's short last chunk: down to one encoder frame (7 feature frames), the caches fixed
    assert lo == {**hi, "x": (1, 7, 80), "attn_mask": (1, 1, 9)}
    lo, opt, hi = default_profile(json.loads(exports["offline"]["config"].read_text()))
    assert lo["x"][1] <= opt["x"][1] <= hi["x"][1] and hi["x_lens"] == (hi["x"][0],)


def test_bad_input(exports, tmp_path):
    with pytest.raises(ValueError, match="not a slimasr ONNX export"):
        build_engines(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="does not exist"):
        build_engines(tmp_path / "nope", tmp_path / "out")
    src = exports["offline"]["model"].parent
    with pytest.raises(ValueError, match="unknown input"):
        build_engines(src, tmp_path / "out", max_shapes="y:1x2")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        build_engines(src, tmp_path / "out", max_shapes="x:1x5x80")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        build_engines(src, tmp_path / "busy")


@pytest.mark.skipif(UNAVAILABLE is None, reason="TensorRT and a GPU are available here")
def test_without_tensorrt_the_command_says_so(exports, tmp_path):
    src = exports["streaming"]["model"].parent
    with pytest.raises(TensorRTUnavailableError, match="cannot build TensorRT engines here"):
        build_engines(src, tmp_path / "out")
    r = CliRunner().invoke(main, ["export", "tensorrt", "--onnx", str(src), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "cannot build TensorRT engines here" in r.output
    assert ("no CUDA GPU" in r.output) or ("slimasr[tensorrt]" in r.output)
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(UNAVAILABLE is not None, reason=f"TensorRT engines cannot be built here: {UNAVAILABLE}")
@pytest.mark.parametrize("kind", ["offline", "streaming"])
def test_engine_matches_onnxruntime(exports, tmp_path, kind):
    from slimasr.export.tensorrt import TensorRTRunner

    src = exports[kind]["model"].parent
    opt = "x:2x300x80,x_lens:2" if kind == "offline" else None
    hi = "x:2x600x80,x_lens:2" if kind == "offline" else None
    written = build_engines(src, tmp_path / "trt", opt_shapes=opt, max_shapes=hi)
    assert json.loads(written["config"].read_text())["precision"] == "fp32"
    run = TensorRTRunner(written["engine"])
    sess = ort.InferenceSession(str(exports[kind]["model"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if kind == "offline":
        feeds = {"x": (rng.standard_normal((2, 300, 80)) * 3 + 5).astype(np.float32),
                 "x_lens": np.array([300, 200], np.int64)}
    else:
        feeds = {"x": (rng.standard_normal((1, 19, 80)) * 3 + 5).astype(np.float32),
                 "offset": np.array([8], np.int64), "required_cache_size": np.array([8], np.int64),
                 "attn_cache": rng.standard_normal((4, 2, 8, 32)).astype(np.float32),
                 "conv_cache": rng.standard_normal((4, 1, 32, 3)).astype(np.float32),
                 "attn_mask": np.array([[[False] * 4 + [True] * 8]])}
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    got = run(**feeds)
    for name, r in ref.items():
        if name == "log_probs" and kind == "offline":
            for i, n in enumerate(ref["log_probs_lens"]):
                assert np.abs(got[name][i, :n] - r[i, :n]).max() <= 1e-3
        else:
            assert np.abs(got[name].astype(r.dtype) - r).max() <= 1e-3, name
