"""Iterative pruning during fine-tuning: removals at the right epochs, score log, figure, streaming of the result."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.model import build_model, load_model
from slimasr.prune.iterative import IterativePruner, iterative_prune, removal_epochs
from slimasr.prune.schedule import ConsistencyTracker
from slimasr.tokenizer import train_tokenizer
from slimasr.train import TrainConfig

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # fine-tunes while pruning


TEXTS = ["the cat sat", "a dog ran far", "the mat", "far away", "a cat ran", "the dog sat"]


def write_corpus(d, texts=TEXTS, speakers=("espeak-ng/en+f1", "flite/slt")):
    """Noise wavs with transcripts: train/dev/test manifests (enough for the training loop to run)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(texts):
        dur = 0.8 + 0.1 * i
        sf.write(d / f"{i}.wav", (0.1 * rng.standard_normal(int(16000 * dur))).astype(np.float32), 16000)
        rows.append({"audio_filepath": f"{i}.wav", "duration": dur, "text": text,
                     "speaker": speakers[i % len(speakers)]})
    for name in ("train", "dev", "test"):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def tiny_model(tmp, num_layers=5):
    tok = train_tokenizer(["the cat sat on the mat", "a dog ran far away"] * 30, vocab_size=18, out_dir=tmp / "tok")
    model = build_model("tiny", vocab_size=tok.vocab_size, num_layers=num_layers, intermediate_ctc_layers=(2,))
    model.attach_tokenizer(tok.to_bytes())
    return model


FAST = TrainConfig(epochs=4, max_frames_per_batch=400, lr=1e-3, warmup_steps=2, num_workers=0, dev_max_utts=None,
                   specaug=False, checkpoint_every_steps=10_000)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = write_corpus(tmp_path_factory.mktemp("iter"))
    model = tiny_model(d)
    model.save(d / "model.pt")
    # 5 -> 3 layers after epoch 2, 3 -> 2 after epoch 4 (the last: the final model is the one pruned then)
    res = iterative_prune(d / "model.pt", str(d / "train.jsonl"), str(d / "dev.jsonl"), d / "exp",
                          metric="correlation", every_m=2, remove_n=2, target_layers=2, train_cfg=FAST,
                          progress=False, feature_cache=False)
    return d, res


def test_removal_epochs():
    assert removal_epochs(12, 7, 2, 2) == [2, 4, 6]
    assert removal_epochs(12, 7, 4, 4) == [4, 8]
    assert removal_epochs(20, 12, 4, 4) == [4, 8] and removal_epochs(20, 12, 2, 2) == [2, 4, 6, 8]
    assert removal_epochs(5, 5, 2, 2) == []
    with pytest.raises(ValueError):
        removal_epochs(5, 6, 2, 2)


def test_schedule_removes_the_right_layers_at_the_right_epochs(run):
    d, res = run
    assert [r["epoch"] for r in res.removals] == [2, 4]
    assert [len(r["layers"]) for r in res.removals] == [2, 1]              # 5 -> 3 -> 2
    log = json.loads((d / "exp" / "score_log.json").read_text())
    assert [h["epoch"] for h in log["history"]] == [1, 2, 3, 4]
    assert [len(h["layers"]) for h in log["history"]] == [5, 5, 3, 3]
    assert log["initial"]["epoch"] == 0 and len(log["initial"]["scores"]) == 5
    # every removal drops the layers with the lowest mean correlation over the last m epochs (eq. 5; for
    # correlation a high score means "changes its input little" = unimportant)
    first = log["removals"][0]
    window = log["history"][:2]
    mean = [np.mean([h["scores"][h["layers"].index(layer)] for h in window]) for layer in range(5)]
    assert sorted(first["layers"]) == sorted(np.argsort(mean)[::-1][:2].tolist())
    with open(d / "exp" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layers"] for r in rows] == ["", "3", "", "2"]
    final = load_model(res.model_path)
    removed = {x for r in res.removals for x in r["layers"]}
    assert len(final.encoder.layers) == 2
    assert list(final.config.original_layers) == [i for i in range(5) if i not in removed] == res.final_layers
    assert (d / "exp" / "figure2.png").stat().st_size > 1000


def test_pruned_model_streams_like_offline(run):
    _, res = run
    m = load_model(res.model_path)
    x = torch.randn(1, 97, 80)
    for chunk, left in ((2, 1), (4, None)):
        with torch.no_grad():
            off, _ = m.ctc_log_probs(x, None, chunk, left)
            st = m.stream_log_probs(x, chunk, left)
        assert st.shape == off.shape
        assert (st - off).abs().max().item() <= 1e-4


def test_resume_replays_the_schedule():
    tracker = ConsistencyTracker("correlation", every_m=1, remove_n=1, target_layers=2)
    pruner = IterativePruner(tracker, dev_batches=[], out_dir=None, plot=False)
    for epoch, scores in ((1, [0.1, 0.9, 0.2, 0.3]), (2, [0.1, 0.2, 0.8]), (3, [0.1, 0.2])):
        tracker.add_epoch(scores, epoch=epoch)
        tracker.layers_to_remove()
    assert tracker.current_layers == [0, 2] and len(tracker.removals) == 2
    pruner._rewind(2)                      # the run restarts from the checkpoint after epoch 1
    t = pruner.tracker
    assert [h["epoch"] for h in t.history] == [1] and t.current_layers == [0, 2, 3]
    assert [r["layers"] for r in t.removals] == [[1]]


def test_too_few_epochs_is_an_error(tmp_path):
    write_corpus(tmp_path)
    model = tiny_model(tmp_path)
    with pytest.raises(ValueError, match="needs 4 epochs"):
        iterative_prune(model, str(tmp_path / "train.jsonl"), str(tmp_path / "dev.jsonl"), tmp_path / "x",
                        every_m=2, remove_n=2, target_layers=1, train_cfg=FAST.replace(epochs=3), progress=False,
                        feature_cache=False)


def test_cli(tmp_path, caplog):
    write_corpus(tmp_path)
    with open(tmp_path / "dev.jsonl", "a") as f:           # a malformed line is named and skipped, not the end
        f.write('{"audio_filepath": "0.wav"}\n')
    tiny_model(tmp_path, num_layers=3).save(tmp_path / "m.pt")

    def args(epochs, out):
        return [str(a) for a in (
            "prune", "iterative", "--model", tmp_path / "m.pt", "--train", tmp_path / "train.jsonl", "--dev",
            tmp_path / "dev.jsonl", "--every", "1", "--remove", "1", "--target", "2", "--epochs", epochs,
            "--train-fraction", "1.0", "--max-frames-per-batch", "400", "--num-workers", "0", "--warmup-steps", "2",
            "--out", tmp_path / out)]

    with caplog.at_level("WARNING"):
        r = CliRunner().invoke(main, args(1, "exp"))
    assert r.exit_code == 0, r.output
    assert f"skipped {tmp_path / 'dev.jsonl'}:7: missing key" in caplog.text
    assert "epoch 1: removed original layers" in r.output
    assert len(load_model(tmp_path / "exp" / "model.pt").encoder.layers) == 2
    assert json.loads((tmp_path / "exp" / "score_log.json").read_text())["removals"][0]["epoch"] == 1
    r = CliRunner().invoke(main, args(0, "y"))
    assert r.exit_code != 0 and "--epochs must be at least 1" in r.output
    r = CliRunner().invoke(main, ["prune", "iterative", "--help"])
    assert r.exit_code == 0 and "slimasr prune iterative" in r.output.split("Example:")[1]
