"""int8 quantization of exports (slimasr.export.quantize): per-tensor and per-channel weights, metadata, errors."""
import numpy as np
import pytest

from slimasr.export.onnx import export_onnx, read_metadata
from slimasr.export.quantize import QuantizeConfig, quantize
from slimasr.model import build_model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    export_onnx(build_model("tiny").eval(), d / "off")
    export_onnx(build_model("tiny").eval(), d / "str", streaming=True, chunk_size=4, left_chunks=2)
    return d


def _scales(path):
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
            if i.name.endswith("_scale") and i.name.startswith("onnx::MatMul")}      # weight scales


def test_per_channel_scales_and_outputs(export_dir, tmp_path):
    import onnxruntime as ort

    src = export_dir / "off" / "model.onnx"
    pt, pc = quantize(src, tmp_path / "pt.onnx", QuantizeConfig(per_channel=False)), \
        quantize(src, tmp_path / "pc.onnx", QuantizeConfig(per_channel=True))
    assert all(s.size == 1 for s in _scales(pt).values()) and _scales(pt)
    assert any(s.size > 1 for s in _scales(pc).values())
    meta = read_metadata(pc)
    assert meta["slimasr_int8_per_channel"] == "1" and meta["slimasr_int8_method"] == "dynamic"
    assert meta["slimasr_kind"] == read_metadata(src)["slimasr_kind"]          # export metadata kept
    x = {"x": np.random.default_rng(0).standard_normal((1, 120, 80)).astype(np.float32),
         "x_lens": np.array([120], np.int64)}
    ref = ort.InferenceSession(str(src)).run(None, x)[0]
    for f in (pt, pc):
        out = ort.InferenceSession(str(f)).run(None, x)[0]
        assert out.shape == ref.shape and np.abs(np.exp(out) - np.exp(ref)).max() < 0.2


def test_static_needs_calibration_and_an_offline_graph(export_dir, tmp_path):
    src = export_dir / "off" / "model.onnx"
    with pytest.raises(ValueError, match="calibration"):
        quantize(src, tmp_path / "s.onnx", QuantizeConfig(method="static"))
    with pytest.raises(ValueError, match="streaming export"):
        quantize(export_dir / "str" / "model.onnx", tmp_path / "s.onnx", QuantizeConfig(method="static"),
                 calibration=[np.zeros((50, 80), np.float32)])
    out = quantize(src, tmp_path / "s.onnx", QuantizeConfig(method="static"),
                   calibration=[np.random.default_rng(i).standard_normal((60 + 10 * i, 80)).astype(np.float32)
                                for i in range(2)])
    assert read_metadata(out)["slimasr_int8_method"] == "static"


def test_bad_settings():
    with pytest.raises(ValueError, match="method"):
        QuantizeConfig(method="awq")
    with pytest.raises(ValueError, match="op_types"):
        QuantizeConfig(op_types=("Softmax",))
    with pytest.raises(ValueError, match="no such ONNX model"):
        quantize("missing.onnx", "out.onnx")


def _conv_model(c_in, c_out, k, stride, pads, group=1):
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(c_in + k)
    w = rng.standard_normal((c_out, c_in // group, k, k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=pads, group=group, name="conv")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1, c_in, "h", "w"])],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("pads,stride,per_channel,reduce_range", [([0, 0, 0, 0], 2, True, False),
                                                                   ([1, 1, 1, 1], 2, False, False),
                                                                   ([0, 1, 0, 1], 1, True, True)])
def test_conv_as_matmul_matches_the_convolution(pads, stride, per_channel, reduce_range):
    import onnxruntime as ort
    from onnx import numpy_helper

    from slimasr.export.quantize import quantize_convs_as_matmul

    model = _conv_model(16, 24, 3, stride, pads)
    x = np.maximum(np.random.default_rng(1).standard_normal((1, 16, 23, 19)), 0).astype(np.float32)   # after ReLU
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert quantize_convs_as_matmul(model, per_channel, reduce_range) == 1
    assert "Conv" not in {n.op_type for n in model.graph.node} and "MatMulInteger" in {n.op_type for n in model.graph.node}
    w_q = next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("/w_q"))
    assert np.abs(w_q).max() == (63 if reduce_range else 127)
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 0.03 * np.abs(ref).max()          # int8 rounding, not a different function


def test_conv_as_matmul_leaves_small_and_grouped_convolutions():
    from slimasr.export.quantize import quantize_convs_as_matmul

    for model in (_conv_model(1, 8, 3, 2, [0, 0, 0, 0]),              # 9 products per output: the first conv
                  _conv_model(16, 16, 3, 1, [0, 0, 0, 0], group=16)):   # depthwise
        assert quantize_convs_as_matmul(model) == 0 and [n.op_type for n in model.graph.node] == ["Conv"]


def test_export_front_end_convolution_is_int8(export_dir, tmp_path):
    import onnx

    src = export_dir / "str" / "model.onnx"
    q = onnx.load(str(quantize(src, tmp_path / "q.onnx")))
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert any("im2col_int8" in n.name and n.op_type == "MatMulInteger" for n in q.graph.node)
    assert all(next(a.i for a in n.attribute if a.name == "group") > 1 or "conv.0" in n.name for n in convs)
    plain = onnx.load(str(quantize(src, tmp_path / "plain.onnx", QuantizeConfig(conv_as_matmul=False))))
    assert len([n for n in plain.graph.node if n.op_type == "Conv"]) == len(convs) + 1


def test_pre_processed_without_touching_logging(export_dir, tmp_path, caplog):
    import logging

    root = logging.getLogger()
    filters = list(root.filters)
    with caplog.at_level(logging.WARNING):
        out = quantize(export_dir / "off" / "model.onnx", tmp_path / "q.onnx")
    assert not [r for r in caplog.records if "pre-process" in r.getMessage()]     # onnxruntime's hint is moot
    assert root.filters == filters
    meta = read_metadata(out)
    assert meta["slimasr_int8_im2col_convs"] == "1" and "onnx.quant.pre_process" not in meta
