"""Knowledge distillation: the cosine loss, gradients only into the student, the training run and the command."""
import json

import pytest
import torch
from click.testing import CliRunner
from test_iterative import tiny_model, write_corpus

from slimasr.cli import main
from slimasr.model import build_model, load_model
from slimasr.prune.distill import DistillLoss, build_student, cosine_distill_loss, distill
from slimasr.train import TrainConfig


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # trains students


def test_loss_zero_for_identical_logits_positive_otherwise():
    z = torch.randn(2, 7, 11)
    assert cosine_distill_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distill_loss(3.0 * z, z).item() == pytest.approx(0.0, abs=1e-6)      # cosine: scale-free
    assert cosine_distill_loss(z + torch.randn_like(z), z).item() > 0.01
    assert cosine_distill_loss(-z, z).item() == pytest.approx(2.0, abs=1e-5)


def test_loss_ignores_padding_frames():
    s, t = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    lens = torch.tensor([6, 3])
    t2 = t.clone()
    t2[1, 3:] = torch.randn(3, 5)                # only padding frames change
    assert cosine_distill_loss(s, t, lens).item() == pytest.approx(cosine_distill_loss(s, t2, lens).item())
    s2 = s.clone()
    s2[1, 3:] = t[1, 3:]
    expect = torch.cat([1 - torch.cosine_similarity(s[0], t[0], dim=-1),
                        1 - torch.cosine_similarity(s[1, :3], t[1, :3], dim=-1)]).mean()
    assert cosine_distill_loss(s2, t, lens).item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        cosine_distill_loss(s, t[:, :5])


def test_gradient_flows_only_into_the_student():
    teacher = build_model("tiny", num_layers=3).eval()
    student = build_model("tiny", num_layers=2, intermediate_ctc_layers=(1,)).train()
    hook = DistillLoss(teacher, weight=2.0)
    feats = torch.randn(2, 60, 80)
    batch = {"feats": feats, "feats_lens": torch.tensor([60, 45])}
    loss = hook(student, batch, {})
    assert loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    grads = [p.grad for p in student.encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert student.ctc.weight.grad.abs().sum() > 0
    # the student distilled from itself: zero loss
    same = DistillLoss(build_model("tiny", num_layers=2, intermediate_ctc_layers=(1,)), 1.0)
    same.teacher.load_state_dict(student.state_dict())
    student.eval()
    assert same(student, batch, {}).item() == pytest.approx(0.0, abs=1e-5)


def test_build_student_shares_the_teachers_tokenizer(tmp_path):
    teacher = tiny_model(tmp_path, num_layers=3)
    s = build_student(teacher.config.replace(num_layers=2, intermediate_ctc_layers=(1,)), teacher)
    assert s.config.vocab_size == teacher.config.vocab_size and s.tokenizer_bytes == teacher.tokenizer_bytes
    assert torch.equal(s.encoder.cmvn_mean, teacher.encoder.cmvn_mean) and len(s.encoder.layers) == 2
    with pytest.raises(ValueError, match="output tokens"):
        build_student(build_model("tiny", vocab_size=teacher.config.vocab_size + 1), teacher)


def test_distill_run_and_command(tmp_path):
    write_corpus(tmp_path)
    teacher = tiny_model(tmp_path, num_layers=3)
    teacher.save(tmp_path / "teacher.pt")
    cfg = TrainConfig(epochs=1, max_frames_per_batch=400, warmup_steps=2, num_workers=0, dev_max_utts=None,
                      specaug=False, distill_weight=5.0)
    res = distill(tmp_path / "teacher.pt", teacher.config.replace(num_layers=2, intermediate_ctc_layers=(1,)),
                  str(tmp_path / "train.jsonl"), str(tmp_path / "dev.jsonl"), tmp_path / "d1", cfg,
                  feature_cache=False, progress=False)
    assert res.steps > 0
    s = load_model(tmp_path / "d1" / "model.pt")
    assert len(s.encoder.layers) == 2 and s.tokenizer_bytes == teacher.tokenizer_bytes
    assert json.loads((tmp_path / "d1" / "train_config.json").read_text())["distill_weight"] == 5.0
    with pytest.raises(ValueError, match="distill_weight"):
        distill(teacher, s, str(tmp_path / "train.jsonl"), None, tmp_path / "d0", cfg.replace(distill_weight=0.0))

    r = CliRunner().invoke(main, [str(a) for a in (
        "distill", "--teacher", tmp_path / "teacher.pt", "--student", tmp_path / "d1" / "model.pt", "--train",
        tmp_path / "train.jsonl", "--dev", tmp_path / "dev.jsonl", "--out", tmp_path / "d2", "--epochs", 1,
        "--max-frames-per-batch", 400, "--num-workers", 0, "--warmup-steps", 2)])
    assert r.exit_code == 0, r.output
    assert "student:" in r.output and (tmp_path / "d2" / "model.pt").is_file()
    r = CliRunner().invoke(main, ["distill", "--student", "nope.json", "--train", tmp_path / "train.jsonl",
                                  "--out", tmp_path / "d3"])
    assert r.exit_code != 0 and "nope.json" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["distill", "--help"])
    assert r.exit_code == 0 and "slimasr distill" in r.output.split("Example:")[1]
