import os
import random

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
