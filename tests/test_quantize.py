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
