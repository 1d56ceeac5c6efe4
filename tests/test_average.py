"""``slimasr average`` and :func:`slimasr.model.average.average_checkpoints`: checkpoint averaging, WiSE-FT
interpolation, training-checkpoint input, provenance, float16 output, and one-line errors for bad input."""
import dataclasses
import hashlib
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402

from slimasr.cli import main  # noqa: E402
from slimasr.model import build_model, load_model  # noqa: E402
from slimasr.model import average_checkpoints  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world this is a test",
         "speech recognition with small models", "average the weights of two models"]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_emitting_model, one_torch_thread):
    """Two tiny models with the same tokenizer but different weights (and CMVN), saved as a.pt and b.pt."""
    root = tmp_path_factory.mktemp("average")
    a, _ = tiny_emitting_model(TEXTS, root / "tok", vocab_size=30, seed=0)
    torch.manual_seed(1)
    b = build_model("tiny", vocab_size=a.config.vocab_size)
    b.attach_tokenizer(a.tokenizer_bytes)
    with torch.no_grad():
        b.ctc.bias[0] = b.ctc.bias[-1] = -10.0
    a.set_cmvn(torch.zeros(80), torch.ones(80))
    b.set_cmvn(torch.full((80,), 2.0), torch.full((80,), 0.5))
    a.save(root / "a.pt")
    b.save(root / "b.pt")
    return SimpleNamespace(root=root, a=root / "a.pt", b=root / "b.pt", sa=_state(a), sb=_state(b))


def _run(*args):
    res = CliRunner().invoke(main, ["average", *map(str, args)])
    return res


def _ok(*args):
    res = _run(*args)
    assert res.exit_code == 0, res.output
    return res


def test_uniform_average_equals_the_manual_average(pair, tmp_path):
    _ok(pair.a, pair.b, "--out", tmp_path / "avg.pt")
    got = load_model(tmp_path / "avg.pt").state_dict()
    assert got.keys() == pair.sa.keys()
    for k, v in got.items():
        torch.testing.assert_close(v, (pair.sa[k] + pair.sb[k]) / 2, rtol=1e-6, atol=1e-7, msg=k)
    assert not torch.equal(got["ctc.weight"], pair.sa["ctc.weight"])      # the inputs really differ


def test_weights_are_normalised_and_recorded_with_the_inputs_digests(pair, tmp_path):
    out = _ok(pair.a, pair.b, "--weights", "1,3", "--out", tmp_path / "w.pt").output
    m = load_model(tmp_path / "w.pt")
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, 0.25 * pair.sa[k] + 0.75 * pair.sb[k], rtol=1e-6, atol=1e-7, msg=k)
    inputs = m.source["inputs"]
    assert m.source["operation"] == "average"
    assert [i["name"] for i in inputs] == ["a.pt", "b.pt"] and [i["weight"] for i in inputs] == [0.25, 0.75]
    for i, p in zip(inputs, (pair.a, pair.b)):
        assert i["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert "a.pt" in out and "w.pt" in out
    # one --weights per model means the same
    _ok(pair.a, pair.b, "--weights", 1, "--weights", 3, "--out", tmp_path / "w2.pt")
    assert torch.equal(load_model(tmp_path / "w2.pt").ctc.weight, m.ctc.weight)


def test_weights_one_zero_reproduce_the_first_model_exactly(pair, tmp_path):
    _ok(pair.a, pair.b, "--weights", "1,0", "--out", tmp_path / "first.pt")
    got = load_model(tmp_path / "first.pt")
    for k, v in got.state_dict().items():
        assert torch.equal(v, pair.sa[k]), k
    assert got.tokenizer_bytes == load_model(pair.a).tokenizer_bytes


def test_averaged_model_loads_and_decodes(pair, tmp_path):
    from slimasr.decoding import greedy_ctc
    from slimasr.tokenizer import Tokenizer

    _ok(pair.a, pair.b, "--weights", "0.3,0.7", "--out", tmp_path / "wise.pt")
    m = load_model(tmp_path / "wise.pt")
    ref = build_model("tiny", vocab_size=m.config.vocab_size).eval()
    ref.load_state_dict({k: 0.3 * pair.sa[k] + 0.7 * pair.sb[k] for k in pair.sa})
    feats = torch.randn(1, 120, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ids = greedy_ctc(*m.ctc_log_probs(feats))[0]
        ref_ids = greedy_ctc(*ref.ctc_log_probs(feats))[0]
    assert ids and ids == ref_ids
    assert Tokenizer.from_bytes(m.tokenizer_bytes).decode(ids).strip()


def test_training_checkpoints_as_input_and_last_n(pair, tmp_path):
    from slimasr.train import TrainConfig
    from slimasr.train.trainer import Trainer

    run = tmp_path / "run"
    trainer = Trainer(load_model(pair.a).train(), None, SimpleNamespace(durations=[1.0, 2.0]), None, run,
                      TrainConfig(keep_last=3), progress=False)
    trainer.step = 10
    first = trainer.save_checkpoint()
    trainer.model.load_state_dict(pair.sb)
    trainer.step = 20
    trainer.save_checkpoint()
    assert torch.equal(load_model(first).ctc.weight, pair.sa["ctc.weight"])       # load_model reads them too

    _ok(first, pair.b, "--weights", "1,0", "--out", tmp_path / "from-ckpt.pt")
    got = load_model(tmp_path / "from-ckpt.pt").state_dict()
    assert all(torch.equal(v, pair.sa[k]) for k, v in got.items())

    out = _ok(run, "--last", 2, "--out", tmp_path / "last2.pt").output
    assert "step-000000010.pt" in out and "step-000000020.pt" in out
    got = load_model(tmp_path / "last2.pt").state_dict()
    for k, v in got.items():
        torch.testing.assert_close(v, (pair.sa[k] + pair.sb[k]) / 2, rtol=1e-6, atol=1e-7, msg=k)
    res = _run(run, "--last", 3, "--out", tmp_path / "x.pt")
    assert res.exit_code == 1 and "holds 2 step-*.pt" in res.output
    (tmp_path / "plain").mkdir()
    res = _run(tmp_path / "plain", "--last", 1, "--out", tmp_path / "y.pt")
    assert res.exit_code == 1 and "has no checkpoints/ folder" in res.output


def test_half_stores_float16(pair, tmp_path):
    _ok(pair.a, pair.b, "--out", tmp_path / "f32.pt")
    _ok(pair.a, pair.b, "--half", "--out", tmp_path / "f16.pt")
    sd = torch.load(tmp_path / "f16.pt", weights_only=True)["state_dict"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    full = load_model(tmp_path / "f32.pt").state_dict()
    assert all(torch.equal(sd[k].float(), v.half().float()) for k, v in full.items())
    sd32 = torch.load(tmp_path / "f32.pt", weights_only=True)["state_dict"]
    weight_bytes = [sum(v.numel() * v.element_size() for v in d.values()) for d in (sd, sd32)]
    assert 2 * weight_bytes[0] == weight_bytes[1]
    # the file shrinks by those bytes (tokenizer and archive overhead stay)
    saved = (tmp_path / "f32.pt").stat().st_size - (tmp_path / "f16.pt").stat().st_size
    assert saved >= 0.9 * weight_bytes[0]


def _bad_files(pair, root):
    """name -> (file, fragments the error must contain)."""
    files = {}
    (root / "empty.pt").write_bytes(b"")
    files["empty"] = (root / "empty.pt", "empty")
    (root / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    files["corrupt"] = (root / "junk.pt", "truncated or corrupt")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    files["foreign"] = (root / "foreign.pt", "not a slimasr model checkpoint")
    ckpt = load_model(pair.a).checkpoint_dict()
    ckpt["state_dict"]["ctc.weight"] = ckpt["state_dict"]["ctc.weight"][:, :5]
    torch.save(ckpt, root / "damaged.pt")
    files["wrong shape"] = (root / "damaged.pt", "damaged slimasr checkpoint")
    a = load_model(pair.a)
    deeper = build_model(a.config.replace(num_layers=a.config.num_layers + 1))
    deeper.attach_tokenizer(a.tokenizer_bytes)
    deeper.save(root / "deeper.pt")
    files["architecture"] = (root / "deeper.pt", "architecture differs from", f"(num_layers {a.config.num_layers + 1} "
                                                                              f"vs {a.config.num_layers})")
    other_fe = load_model(pair.a)
    fe = other_fe.frontend
    other_fe.set_frontend(dataclasses.replace(fe, fbank=dataclasses.replace(fe.fbank, dither=0.5)))
    other_fe.save(root / "frontend.pt")
    files["front-end"] = (root / "frontend.pt", "front-end differs from", "(fbank.dither 0.5 vs 0.0)")
    no_tok = load_model(pair.a)
    no_tok.attach_tokenizer(None)
    no_tok.save(root / "notok.pt")
    files["tokenizer"] = (root / "notok.pt", "tokenizer differs from")
    return files


def test_bad_models_give_one_line_errors_naming_the_file(pair, tmp_path):
    files = _bad_files(pair, tmp_path)
    files["missing"] = (tmp_path / "nope.pt", "not found")
    for what, (path, *fragments) in files.items():
        res = _run(pair.a, path, "--out", tmp_path / "out.pt")
        assert res.exit_code == 1, (what, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output, (what, lines)
        assert str(path) in lines[0] and all(f in lines[0] for f in fragments), (what, lines)
        assert not (tmp_path / "out.pt").exists()


def test_an_unwritable_output_is_refused_before_any_work(pair):
    res = _run(pair.a, pair.b, "--out", pair.a / "avg.pt")        # its folder would be a file
    assert res.exit_code == 1 and res.output.startswith(f"Error: --out {pair.a / 'avg.pt'}: cannot create")
    assert f"({pair.a} is a file, not a folder)" in res.output
    assert len(res.output.strip().splitlines()) == 1


def _digests(*paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_an_output_that_is_an_input_is_refused_before_anything_is_written(pair, tmp_path, monkeypatch):
    import os

    link = tmp_path / "link.pt"
    link.symlink_to(pair.b)
    before = _digests(pair.a, pair.b)
    monkeypatch.chdir(pair.root)
    for out in (pair.a, pair.b, "./b.pt", link, pair.root / "sub" / ".." / "a.pt"):
        res = _run(pair.a, pair.b, "--out", out)
        assert res.exit_code == 1 and "Traceback" not in res.output, (out, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: --out {out} is also an input ("), (out, lines)
        assert _digests(pair.a, pair.b) == before
    assert not (pair.root / "sub").exists()                           # not even its folder was created
    assert sorted(os.listdir(pair.root)) == ["a.pt", "b.pt", "tok"]   # and no temporary file is left


def test_last_n_refuses_an_output_among_its_checkpoints(pair, tmp_path):
    from slimasr.train import TrainConfig
    from slimasr.train.trainer import Trainer

    run = tmp_path / "run"
    trainer = Trainer(load_model(pair.a).train(), None, SimpleNamespace(durations=[1.0]), None, run,
                      TrainConfig(keep_last=2), progress=False)
    trainer.step = 10
    first = trainer.save_checkpoint()
    before = _digests(first)
    res = _run(run, "--last", 1, "--out", first)
    assert res.exit_code == 1 and res.output.startswith(f"Error: --out {first} is also an input ({first})")
    assert _digests(first) == before


def test_an_interrupted_write_leaves_the_earlier_output_intact(pair, tmp_path, monkeypatch):
    """The output is written to a temporary file that replaces --out only once complete."""
    out = tmp_path / "avg.pt"
    _ok(pair.a, pair.b, "--out", out)
    before = _digests(out)

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    res = _run(pair.a, pair.b, "--weights", "1,3", "--out", out)
    assert res.exit_code != 0
    assert _digests(out) == before and [p.name for p in tmp_path.iterdir()] == ["avg.pt"]
    monkeypatch.undo()
    assert load_model(out) is not None


def test_training_only_settings_do_not_block_averaging(pair, tmp_path):
    b = load_model(pair.b)
    b.config = b.config.replace(dynamic_chunk=not b.config.dynamic_chunk, dropout=0.3)
    b.save(tmp_path / "b-ft.pt")
    _ok(pair.a, tmp_path / "b-ft.pt", "--out", tmp_path / "avg.pt")
    assert load_model(tmp_path / "avg.pt").config == b.config            # taken from the last model


@pytest.mark.parametrize("weights, fragment", [
    (["1"], "got 1 weight(s) for 2 model(s)"),
    (["1,2,3"], "got 3 weight(s) for 2 model(s)"),
    (["1,2", "--weights", "3"], "got 3 weight(s) for 2 model(s)"),
    (["1,-0.5"], "non-negative, got -0.5"),
    (["-1,2"], "non-negative, got -1.0"),
    (["1,nan"], "finite and non-negative, got nan"),
    (["0,0"], "all zero"),
    (["1,x"], "expected numbers, one per model, comma-separated (e.g. 0.7,0.3), got 'x'"),
    (["1,,2"], "got ''"),
    (["0.5", "0.5"], "'0.5' is a number, not a model file; give all the weights to one --weights"),
])
def test_bad_weights_are_refused(pair, tmp_path, weights, fragment):
    res = _run(pair.a, pair.b, "--weights", *weights, "--out", tmp_path / "out.pt")
    assert res.exit_code == 2 and "Traceback" not in res.output         # a usage error, before any model is read
    assert fragment in res.output, res.output
    assert not (tmp_path / "out.pt").exists()


def test_library_function_refuses_like_the_command(pair):
    with pytest.raises(ValueError, match="all zero"):
        average_checkpoints([pair.a, pair.b], [0, 0])
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        average_checkpoints([pair.a, pair.a.parent / "nope.pt"])


def test_help_has_runnable_examples():
    r = _run("--help")
    assert r.exit_code == 0 and "Example:" in r.output
    examples = r.output.split("Example:")[1]
    assert "slimasr average" in examples and "--last 2" in examples and "--weights 0.5,0.5" in examples
