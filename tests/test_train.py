"""Training: runs, logs, atomic checkpoints, exact resume after a crash, DDP with gloo, CLI errors."""
import json
import os
import socket

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.data.manifest import write_manifest
from slimasr.model import load_model
from slimasr.tokenizer import train_tokenizer
from slimasr.train import EpochHooks, TrainConfig, train_model

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 short noise+tone utterances with word transcripts, a tokenizer, a tiny model config."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        n = int(16000 * (0.6 + 0.05 * i))
        t = np.arange(n) / 16000
        wav = 0.1 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.01 * rng.standard_normal(n)
        p = d / f"u{i:02d}.wav"
        sf.write(p, wav.astype(np.float32), 16000)
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2))
        rows.append({"audio_filepath": str(p), "duration": n / 16000, "text": text, "speaker": f"s{i % 2}"})
    write_manifest(d / "train.jsonl", rows[:12])
    write_manifest(d / "dev.jsonl", rows[12:])
    tok = train_tokenizer([r["text"] for r in rows] * 4, vocab_size=20, out_dir=d / "tok", model_type="char")
    cfg = d / "tiny.json"
    from slimasr.model import TINY

    cfg.write_text(json.dumps(TINY.replace(vocab_size=tok.vocab_size).to_dict()))
    return d, str(cfg)


def _cfg(**kw):
    base = dict(epochs=2, max_frames_per_batch=400, lr=2e-3, warmup_steps=5, num_workers=0, dev_max_utts=None,
                checkpoint_every_steps=1000, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return load_model(path).state_dict()


@pytest.mark.slow
def test_training_writes_model_logs_and_checkpoints(corpus, tmp_path):
    d, cfg = corpus
    res = train_model(cfg, str(d / "train.jsonl"), str(d / "dev.jsonl"), tmp_path / "exp", _cfg(),
                      tokenizer=str(d / "tok"), progress=False)
    assert res.epochs_done == 2 and res.steps > 0
    assert (tmp_path / "exp" / "model.pt").is_file() and (tmp_path / "exp" / "best.pt").is_file()
    lines = (tmp_path / "exp" / "log.csv").read_text().strip().splitlines()
    assert lines[0].startswith("epoch,step,train_loss,lr") and len(lines) == 3
    assert list((tmp_path / "exp" / "tb").iterdir())
    m = load_model(tmp_path / "exp" / "model.pt")
    assert m.tokenizer_bytes and not m.training
    assert not torch.equal(m.encoder.cmvn_istd, torch.ones(80))        # CMVN computed on the training set
    ckpts = sorted((tmp_path / "exp" / "checkpoints").glob("step-*.pt"))
    assert 1 <= len(ckpts) <= 3 and not list((tmp_path / "exp" / "checkpoints").glob("*.tmp"))


@pytest.mark.slow
def test_loss_decreases(corpus, tmp_path):
    d, cfg = corpus
    res = train_model(cfg, str(d / "train.jsonl"), None, tmp_path / "exp", _cfg(epochs=12, specaug=False),
                      tokenizer=str(d / "tok"), progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_resume_after_crash_is_exact(corpus, tmp_path):
    """Kill training mid-epoch; resuming from the last checkpoint gives the same weights as an uninterrupted run."""
    d, cfg = corpus
    args = (cfg, str(d / "train.jsonl"), str(d / "dev.jsonl"))
    tc = _cfg(epochs=2, checkpoint_every_steps=1)
    train_model(*args, tmp_path / "ref", tc, tokenizer=str(d / "tok"), progress=False)

    calls = {"n": 0}

    def crash(model, batch, out):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return out["loss"].new_zeros(())

    with pytest.raises(KeyboardInterrupt):
        train_model(*args, tmp_path / "run", tc, tokenizer=str(d / "tok"), progress=False,
                    hooks=EpochHooks(extra_loss=crash))
    assert sorted((tmp_path / "run" / "checkpoints").glob("step-*.pt"))      # work up to the kill is kept
    train_model(*args, tmp_path / "run", tc, tokenizer=str(d / "tok"), progress=False, resume=True)
    a, b = _weights(tmp_path / "ref" / "model.pt"), _weights(tmp_path / "run" / "model.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ref_log = (tmp_path / "ref" / "log.csv").read_text().splitlines()
    run_log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert [l.split(",")[:3] for l in ref_log] == [l.split(",")[:3] for l in run_log]


@pytest.mark.slow
def test_corrupt_checkpoint_is_never_picked(corpus, tmp_path):
    """A partially written checkpoint (the temp file of an interrupted save) is ignored by --resume."""
    d, cfg = corpus
    out = tmp_path / "exp"
    train_model(cfg, str(d / "train.jsonl"), None, out, _cfg(epochs=1), tokenizer=str(d / "tok"), progress=False)
    (out / "checkpoints" / ".step-000000999.pt.abc.tmp").write_bytes(b"partial")
    res = train_model(cfg, str(d / "train.jsonl"), None, out, _cfg(epochs=2), tokenizer=str(d / "tok"),
                      progress=False, resume=True)
    assert res.epochs_done == 2


def _train_cli(d, cfg, out, *extra):
    return CliRunner().invoke(main, ["train", "--config", cfg, "--tokenizer", str(d / "tok"), "--train",
                                     str(d / "train.jsonl"), "--dev", str(d / "dev.jsonl"), "--out", str(out),
                                     "--max-frames-per-batch", "400", "--warmup-steps", "5", "--num-workers", "0",
                                     "--device", "cpu", *extra])


def _log_rows(out):
    import csv

    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_applies_new_options(corpus, tmp_path):
    """--resume --epochs 3 --lr 1e-4 after a 2-epoch run at 1e-3: the third epoch runs on the Noam schedule of
    the new peak at the resumed step, and train_config.json records the settings in use."""
    from slimasr.train import noam_lambda

    d, cfg = corpus
    out = tmp_path / "exp"
    r = _train_cli(d, cfg, out, "--epochs", "2", "--lr", "1e-3")
    assert r.exit_code == 0, r.output
    r = _train_cli(d, cfg, out, "--resume", "--epochs", "3", "--lr", "1e-4")
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["lr"] == 1e-4 and saved["epochs"] == 3 and saved["warmup_steps"] == 5
    rows = _log_rows(out)
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3]
    for row, peak in zip(rows, (1e-3, 1e-3, 1e-4)):
        step = int(row["step"])
        assert float(row["lr"]) == pytest.approx(peak * noam_lambda(5)(step), rel=1e-6), row
    # an option left out keeps the run's value: resuming with only --epochs keeps lr 1e-4
    r = _train_cli(d, cfg, out, "--resume", "--epochs", "4")
    assert r.exit_code == 0, r.output
    last = _log_rows(out)[-1]
    assert float(last["lr"]) == pytest.approx(1e-4 * noam_lambda(5)(int(last["step"])), rel=1e-6)
    assert json.loads((out / "train_config.json").read_text())["lr"] == 1e-4


@pytest.mark.slow
def test_resume_refuses_what_cannot_change(corpus, tmp_path):
    d, cfg = corpus
    out = tmp_path / "exp"
    assert _train_cli(d, cfg, out, "--epochs", "1").exit_code == 0
    before = (out / "train_config.json").read_text()
    r = _train_cli(d, cfg, out, "--resume", "--epochs", "2", "--seed", "7", "--train-fraction", "0.5")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "--seed cannot change on resume (0 -> 7)" in r.output and "--train-fraction" in r.output
    r = _train_cli(d, cfg, out, "--resume", "--max-frames-per-batch", "300", "--epochs", "2")
    assert r.exit_code != 0 and "--max-frames-per-batch cannot change" in r.output
    r = _train_cli(d, cfg, out, "--resume", "--no-dynamic-chunk", "--epochs", "2")   # the run's model streams
    assert r.exit_code != 0 and "--dynamic-chunk cannot change on resume" in r.output, r.output
    # the library refuses it too (a recipe passing a whole config)
    with pytest.raises(ValueError, match="seed cannot change on resume"):
        train_model(cfg, str(d / "train.jsonl"), None, out, _cfg(epochs=2, seed=3), tokenizer=str(d / "tok"),
                    progress=False, resume=True)
    assert (out / "train_config.json").read_text() == before          # nothing ran
    r = _train_cli(d, cfg, out, "--epochs", "0")
    assert r.exit_code != 0 and "--epochs must be at least 1, got 0" in r.output


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, d, cfg, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)

    def dump(trainer, epoch):
        torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}-epoch{epoch}.pt"))

    train_model(cfg, os.path.join(d, "train.jsonl"), None, os.path.join(out, "exp"),
                _cfg(epochs=2, max_frames_per_batch=300), tokenizer=os.path.join(d, "tok"), device="cpu",
                progress=False, hooks=EpochHooks(epoch_end=dump))


@pytest.mark.slow
def test_ddp_two_ranks_keep_identical_weights(corpus, tmp_path):
    d, cfg = corpus
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(d), cfg, str(tmp_path)), nprocs=2, join=True)
    for epoch in (1, 2):
        a = torch.load(tmp_path / f"rank0-epoch{epoch}.pt")
        b = torch.load(tmp_path / f"rank1-epoch{epoch}.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
    first = torch.load(tmp_path / "rank0-epoch1.pt")
    last = torch.load(tmp_path / "rank0-epoch2.pt")
    assert any(not torch.equal(first[k], last[k]) for k in first)          # training did change the weights
    assert (tmp_path / "exp" / "model.pt").is_file()                       # rank 0 wrote the model


def test_cli_errors(tmp_path):
    r = CliRunner().invoke(main, ["train", "--config", "tiny", "--train", str(tmp_path / "nope.jsonl"),
                                  "--out", str(tmp_path / "exp")])
    assert r.exit_code != 0 and "nope.jsonl" in r.output and "Traceback" not in r.output
    (tmp_path / "t.jsonl").write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi"}\n')
    r = CliRunner().invoke(main, ["train", "--config", "huge", "--train", str(tmp_path / "t.jsonl"),
                                  "--out", str(tmp_path / "exp")])
    assert r.exit_code != 0 and "huge" in r.output
    wav = tmp_path / "speech.wav"                       # an audio file given as --dev: refused, not trained without
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    r = CliRunner().invoke(main, ["train", "--config", "tiny", "--train", str(tmp_path / "t.jsonl"), "--dev",
                                  str(wav), "--out", str(tmp_path / "exp2")])
    assert r.exit_code == 1 and r.output.startswith(f"Error: manifest {wav} has no utterances ("), r.output
    assert "malformed rows skipped" in r.output and len(r.output.splitlines()) == 1, r.output
    assert not (tmp_path / "exp2" / "model.pt").exists()
    r = CliRunner().invoke(main, ["train", "--help"])
    assert "Example:" in r.output


def test_training_options_have_one_default_across_commands():
    """train, distill and prune iterative build their training options from TrainConfig: same names, same help,
    the field's default shown (and nothing given means the saved run's or the default value)."""
    import dataclasses

    import click

    from slimasr.cli import main as group
    from slimasr.cli.options import given

    ctx = click.Context(group)
    commands = {"train": group.get_command(ctx, "train"), "distill": group.get_command(ctx, "distill"),
                "prune iterative": group.get_command(ctx, "prune").get_command(ctx, "iterative")}
    fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli")]
    assert {"lr", "warmup_steps", "epochs", "train_fraction", "seed"} <= {f.name for f in fields}
    for f in fields:
        helps = set()
        for name, cmd in commands.items():
            opt = next((p for p in cmd.params if p.name == f.name), None)
            assert opt is not None, f"{name} lacks --{f.name}"
            assert opt.default is None                      # not given: the saved or the dataclass value
            if opt.required:                                # prune iterative: --epochs has no default
                assert name == "prune iterative" and f.name == "epochs"
                continue
            helps.add(opt.help)
        assert len(helps) == 1, (f.name, helps)
        if f.default is not None and not isinstance(f.default, bool):
            assert f"[default: {f.default}]" in helps.pop()
    assert given(TrainConfig, {"lr": 1e-4, "seed": None, "device": "cpu"}) == {"lr": 1e-4}


@pytest.mark.slow
def test_a_malformed_manifest_line_is_named_and_skipped(corpus, tmp_path, caplog):
    """One bad line among the training rows: named in the log, the others trained on."""
    d, cfg = corpus
    lines = (d / "train.jsonl").read_text().splitlines()
    bad = d / "train_with_a_bad_line.jsonl"                  # beside the audio: its relative paths resolve
    bad.write_text("\n".join(lines[:2] + ['{"audio_filepath": "u00.wav"'] + lines[2:]) + "\n")
    with caplog.at_level("WARNING", logger="slimasr.train"):
        res = train_model(cfg, str(bad), None, tmp_path / "exp", _cfg(epochs=1), tokenizer=str(d / "tok"),
                          progress=False)
    assert res.epochs_done == 1 and res.steps > 0
    assert f"skipped {bad}:3: not valid JSON" in caplog.text, caplog.text


def test_an_epoch_with_no_readable_audio_fails_instead_of_saving_an_untrained_model(corpus, tmp_path):
    """Every training file unreadable (the manifest moved away from its audio): the run stops with an error that
    names the problem, rather than reporting 'done' after 0 steps and writing model.pt."""
    d, cfg = corpus
    rows = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    for r in rows:
        r["audio_filepath"] = str(tmp_path / "gone" / os.path.basename(r["audio_filepath"]))
    (tmp_path / "moved.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _train_cli(d, cfg, tmp_path / "first", "--epochs", "1").exit_code == 0
    r = CliRunner().invoke(main, ["train", "--init", str(tmp_path / "first" / "model.pt"), "--train",     # no CMVN pass
                                  str(tmp_path / "moved.jsonl"), "--out", str(tmp_path / "out"), "--epochs", "1",
                                  "--max-frames-per-batch", "400", "--num-workers", "0", "--device", "cpu"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "no training batch" in r.output and "unreadable" in r.output, r.output
    assert not (tmp_path / "out" / "model.pt").exists()
