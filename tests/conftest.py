import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    try:
        import numpy as np
        np.random.seed(0)
    except ImportError:
        pass
    try:
        import torch
        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread (and much faster on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_emitting_model():
    """Factory: a tiny untrained model with a SentencePiece tokenizer trained on ``texts`` (in ``tok_dir``), biased
    so that it emits tokens (never blank-only, never <sos/eos>), in eval mode. Returns (model, tokenizer)."""
    def make(texts, tok_dir, vocab_size=40, seed=0):
        import torch

        from slimasr.model import build_model
        from slimasr.tokenizer import train_tokenizer

        tok = train_tokenizer(texts, vocab_size, tok_dir)
        torch.manual_seed(seed)
        m = build_model("tiny", vocab_size=tok.vocab_size)
        m.attach_tokenizer(tok.to_bytes())
        with torch.no_grad():
            m.ctc.bias[0] = -10.0
            m.ctc.bias[-1] = -10.0
        return m.eval(), tok

    return make


# The streaming chunking the shared export is written with (the README's and `slimasr export onnx`'s defaults).
DEFAULT_EXPORT_CHUNK, DEFAULT_EXPORT_LEFT = 16, 4


@pytest.fixture(scope="session")
def default_export(tmp_path_factory):
    """The embedded default model (``slimasr.load_model()``) exported once per test session, streaming (chunk 16,
    left 4) and offline, for every test file that needs a real export.

    Returns a dict: ``model`` (the PyTorch model, eval mode), ``streaming`` / ``offline`` (export directories),
    ``chunk_size``, ``left_chunks``. Skips when torch/onnx are missing or the installation has no default model.
    """
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import slimasr
    from slimasr.export import export_onnx

    try:
        model = slimasr.load_model()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("default-export")
    export_onnx(model, root / "streaming", streaming=True, chunk_size=DEFAULT_EXPORT_CHUNK,
                left_chunks=DEFAULT_EXPORT_LEFT)
    export_onnx(model, root / "offline")
    return {"model": model, "streaming": root / "streaming", "offline": root / "offline",
            "chunk_size": DEFAULT_EXPORT_CHUNK, "left_chunks": DEFAULT_EXPORT_LEFT}


@pytest.fixture(scope="session")
def load_benchmark():
    """Loader of a script under ``benchmarks/`` as a module: ``load_benchmark("paper_scale")``. The module is
    registered in ``sys.modules`` while the session runs (its dataclasses look their module up there)."""
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            loaded[name] = mod
        return loaded[name]

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
