"""benchmarks/default_model_eval.py: leak check, OOV shares, where the errors fall, the report, and one small run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slimasr.scoring import error_counts


@pytest.fixture(scope="module")
def ev(load_benchmark):
    return load_benchmark("default_model_eval")


def _have_lmplz() -> bool:
    from slimasr import lm

    try:
        lm.find_kenlm_tool("lmplz")
        return True
    except lm.KenLMToolMissing:
        return False


def test_leak_check_counts_normalised_verbatim_transcripts_only(ev):
    lm = ev.KnownText.from_texts("lm_text", ["Hello, World!", "", "--", "the cat sat on the mat",
                                             "I was born in 1984."])
    train = ev.KnownText.from_texts("train", ["the dog sat", "a cat"])
    refs = ["hello world",                 # = an LM sentence after normalisation (case, punctuation): a leak
            "the cat sat",                 # a prefix of an LM sentence, not the sentence: no leak
            "i was born in nineteen eighty four",   # numbers are spelled out on both sides: a leak
            "The dog sat.",                # = a training transcript
            ""]                            # an empty transcript never counts as a leak
    d = ev.text_diagnostics(refs, [lm, train])
    assert d["transcripts"] == 5 and d["lm_text"]["transcripts_verbatim"] == 2
    assert d["train"]["transcripts_verbatim"] == 1
    assert ev.text_diagnostics(["the cat sat"], [lm, train])["lm_text"]["transcripts_verbatim"] == 0


def test_oov_share_counts_word_tokens_against_each_text(ev):
    lm = ev.KnownText.from_texts("lm_text", ["The cat sat on the mat.", "forty two zebras"])
    train = ev.KnownText.from_texts("train", ["the cat", "a dog sat"])
    refs = ["the zebra sat on the zebra", "42 cats"]   # tokens: the zebra sat on the zebra forty two cats (9)
    d = ev.text_diagnostics(refs, [lm, train])
    assert d["ref_words"] == 9
    assert d["lm_text"]["oov_words"] == 3               # zebra twice (tokens, not types; zebras is another word), cats
    assert d["train"]["oov_words"] == 6                 # zebra twice, on, forty, two, cats; every "the" is known
    assert ev.text_diagnostics(refs, []) == {"transcripts": 2, "ref_words": 9}


def test_errors_are_put_on_oov_or_known_reference_words(ev):
    vocab = frozenset({"the", "sat", "down", "cat"})
    refs = ["the zebra sat down", "the cat", ""]
    hyps = ["the zebras", "uh the cat", "oops"]
    o = ev.oov_errors(refs, hyps, vocab)
    # zebra -> zebras: an OOV word substituted; sat and down deleted (known); "uh" and "oops" (empty reference)
    # inserted
    assert o == {"ref_words": 6, "oov_words": 1, "oov_word_errors": 1, "iv_word_errors": 2, "insertions": 2}
    errors = o["oov_word_errors"] + o["iv_word_errors"] + o["insertions"]
    assert errors == error_counts(refs, hyps).word_errors
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        ev.oov_errors(["a", "b"], ["a"], vocab)


@pytest.mark.parametrize("seed", range(3))
def test_error_attribution_adds_up_to_the_scored_word_errors(ev, seed):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    refs = [" ".join(rng.choice(words, rng.integers(0, 7))) for _ in range(20)]
    hyps = [" ".join(rng.choice(words, rng.integers(0, 7))) for _ in range(20)]
    vocab = frozenset(words[:3])
    o = ev.oov_errors(refs, hyps, vocab)
    c = error_counts(refs, hyps)
    assert o["ref_words"] == c.ref_words
    assert o["oov_word_errors"] + o["iv_word_errors"] + o["insertions"] == c.word_errors
    assert o["oov_words"] == sum(w not in vocab for r in refs for w in r.split())
    assert 0 < o["oov_word_errors"] <= o["oov_words"]


def _result(ev, diag, rows):
    return {"name": "t", "model": "m.pt", "command": "`x`", "rows": rows, "targets": ev.target_lines(rows),
            "lm": None, "known_texts": {"lm_text": "lm.txt", "train": "train.jsonl"}, "text_diagnostics": diag,
            "leaks": ev.leak_lines(diag), "oov_vocabulary": "training transcripts", "threads": 2, "seconds": 1.0}


def test_report_prints_the_leak_check_and_shouts_a_leak(ev):
    clean = {"espeak-ng held-out voices": {"transcripts": 4, "ref_words": 20,
                                           "lm_text": {"transcripts_verbatim": 0, "oov_words": 1},
                                           "train": {"transcripts_verbatim": 0, "oov_words": 2}}}
    md = ev.markdown(_result(ev, clean, []))
    assert "LEAK" not in md
    assert ("| espeak-ng held-out voices | 4 | 20 | 0 of 4 (0.0%) | 0 of 4 (0.0%) | 2 of 20 (10.0%) | "
            "1 of 20 (5.0%) |") in md
    leaky = {"festival": {"transcripts": 4, "ref_words": 20, "lm_text": {"transcripts_verbatim": 1, "oov_words": 0}}}
    lines = ev.leak_lines(leaky)
    assert lines == ["LEAK: 1 of 4 transcripts of festival occur verbatim in the LM text; its figures are not "
                     "held-out figures"]
    assert ev.leak_lines({"piper": {"transcripts": 9, "ref_words": 50,
                                    "train": {"transcripts_verbatim": 3, "oov_words": 0}}}) == [
        "LEAK: 3 of 9 transcripts of piper occur verbatim in the training manifests; its figures are not held-out "
        "figures"]
    md = ev.markdown(_result(ev, leaky, []))
    assert f"**{lines[0]}**" in md and "| festival | 4 | 20 | **1 of 4 (25.0%)** | – | – | 0 of 20 (0.0%) |" in md


def test_targets_judge_greedy_and_state_the_lm_figure_beside(ev):
    lab = "espeak-ng held-out voices"
    oov = {"ref_words": 100, "oov_words": 10, "oov_word_errors": 6, "iv_word_errors": 9, "insertions": 5}
    rows = [{"set": lab, "decoder": "greedy", "utterances": 9, "wer_offline": 0.20, "cer_offline": 0.1,
             "wer_chunked": 0.21, "cer_chunked": 0.1, "oov_offline": oov},
            {"set": lab, "decoder": "beam 100 + 4-gram LM (weight 0.6)", "utterances": 9, "wer_offline": 0.05,
             "cer_offline": 0.1, "wer_chunked": 0.06, "cer_chunked": 0.1, "oov_offline": oov}]
    t = ev.target_lines(rows)
    assert t[0] == (f"{lab}: greedy WER 20.0% offline, target ≤ 10%: MISSED (beam 100 + 4-gram LM (weight 0.6): "
                    "5.0% offline; no target on it)")      # an LM figure under the target does not meet it
    assert t[1].startswith(f"{lab}: greedy chunked +5% relative") and len(t) == 2
    md = ev.markdown(_result(ev, {}, rows))
    assert (f"| {lab} | greedy | 20.0% | 10 of 100 (10.0%) | 6 of 10 (60.0%) | 9 of 90 (10.0%) | 5 | "
            "6 of 20 (30.0%) |") in md


def test_bad_inputs_are_one_line_errors_before_any_decoding(ev, tmp_path):
    d = tmp_path / "synth"
    d.mkdir()
    (d / "test_espeak.jsonl").write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": "a"}) + "\n")
    with pytest.raises(SystemExit) as e:                  # it writes into the results folder: no default name
        ev.main(["--test-dir", str(d)])
    assert e.value.code == 2
    with pytest.raises(SystemExit, match="--test-dir .*: not a directory"):
        ev.main(["--name", "t", "--test-dir", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="--train: manifest .* does not exist"):
        ev.main(["--name", "t", "--test-dir", str(d), "--train", str(tmp_path / "none.jsonl")])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SystemExit, match="--train .*: no rows"):
        ev.main(["--name", "t", "--test-dir", str(d), "--train", str(tmp_path / "empty.jsonl")])
    with pytest.raises(SystemExit, match="--lm-text .*: no such file"):
        ev.main(["--name", "t", "--test-dir", str(d), "--lm-text", str(tmp_path / "none.txt")])
    with pytest.raises(SystemExit, match="--real .*: no real.jsonl"):
        ev.main(["--name", "t", "--test-dir", str(d), "--real", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--name 'a/b': expected a file-name part"):
        ev.main(["--test-dir", str(d), "--name", "a/b", "--out", str(tmp_path / "out")])   # was: after decoding
    with pytest.raises(SystemExit, match="--threads 0: expected a positive integer"):
        ev.main(["--name", "t", "--test-dir", str(d), "--threads", "0", "--out", str(tmp_path / "out")])
    (tmp_path / "notes.txt").write_text("not a model\n")
    for model, what in ((tmp_path / "none.pt", "not found"), (tmp_path / "notes.txt", "not a readable slimasr")):
        with pytest.raises(SystemExit, match=f"^--model: .*{what}"):                       # was: a traceback
            ev.main(["--name", "t", "--test-dir", str(d), "--model", str(model), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_report_says_when_no_text_was_given_to_measure_oov_against(ev):
    md = ev.markdown({**_result(ev, {"festival": {"transcripts": 4, "ref_words": 20}}, []), "known_texts": {}})
    assert "never occur in that text: none given (--lm-text, --train), so not measured." in md


@pytest.mark.skipif(not _have_lmplz(), reason="KenLM's lmplz is not installed (run `make setup`)")
def test_an_lm_text_without_a_sentence_is_a_one_line_error(ev, tmp_path, tiny_emitting_model, one_torch_thread):
    model, _ = tiny_emitting_model(["the cat sat on the mat", "a dog ran far away", "she sells sea shells"] * 20,
                                   tmp_path / "tok", vocab_size=24)
    d = tmp_path / "synth"
    d.mkdir()
    (d / "test_espeak.jsonl").write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": "a"}) + "\n")
    (tmp_path / "lm.txt").write_text("--\n\n")
    with pytest.raises(SystemExit, match="^--lm-text: .*no usable sentences"):                 # was: a traceback
        ev.main(["--name", "t", "--test-dir", str(d), "--model", str(model.save(tmp_path / "m.pt")), "--lm-text",
                 str(tmp_path / "lm.txt"), "--out", str(tmp_path / "out")])


@pytest.mark.skipif(not _have_lmplz(), reason="KenLM's lmplz is not installed (run `make setup`)")
def test_a_small_run_reports_every_decoder_and_the_diagnostics(ev, tmp_path, tiny_emitting_model, one_torch_thread):
    import soundfile as sf

    texts = ["the cat sat on the mat", "a dog ran far away", "she sells sea shells"]
    model, _ = tiny_emitting_model(texts * 20, tmp_path / "tok", vocab_size=24)
    model_file = model.save(tmp_path / "model.pt")
    test = tmp_path / "synth"
    (test / "wavs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, (t, spk) in enumerate([("the cat sat", "espeak-ng/a"), ("a zebra ran", "espeak-ng/b")]):
        sf.write(test / "wavs" / f"{i}.wav", (0.1 * rng.standard_normal(16000)).astype("float32"), 16000)
        rows.append({"audio_filepath": f"wavs/{i}.wav", "duration": 1.0, "text": t, "speaker": spk})
    (test / "test_espeak.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "lm.txt").write_text("the cat sat\nthe dog ran far\n")          # "the cat sat" leaks on purpose
    for name, text in (("train1.jsonl", "A cat ran."), ("train2.jsonl", "The dog.")):      # two training stages
        (tmp_path / name).write_text(json.dumps({"audio_filepath": "x.wav", "duration": 1.0, "text": text}) + "\n")
    out = tmp_path / "out"
    ev.main(["--model", str(model_file), "--test-dir", str(test), "--lm-text", str(tmp_path / "lm.txt"),
             "--train", str(tmp_path / "train1.jsonl"), "--train", str(tmp_path / "train2.jsonl"), "--name", "t", "--out", str(out), "--threads", "1"])
    r = json.loads((out / "eval_t.json").read_text())
    d = r["text_diagnostics"]["espeak-ng held-out voices"]
    assert d == {"transcripts": 2, "ref_words": 6, "lm_text": {"transcripts_verbatim": 1, "oov_words": 2},
                 "train": {"transcripts_verbatim": 0, "oov_words": 2}}    # a, zebra; sat, zebra
    assert r["leaks"] and "1 of 2 transcripts of espeak-ng held-out voices" in r["leaks"][0]
    sets = [(x["set"], x["decoder"]) for x in r["rows"] if ":" not in x["set"]]
    assert sets == [("espeak-ng held-out voices", "greedy"),
                    ("espeak-ng held-out voices", "beam 100 + 4-gram LM (weight 0.6)")]
    assert r["lm"]["weight"] == 0.6 and r["oov_vocabulary"] == "training transcripts"
    for x in r["rows"]:
        o = x["oov_offline"]
        errors = o["oov_word_errors"] + o["iv_word_errors"] + o["insertions"]
        assert math.isclose(errors / o["ref_words"], x["wer_offline"])
    md = (out / "eval_t.md").read_text()
    assert "**LEAK: 1 of 2" in md and "no target on it" in md
    assert f"--train {tmp_path / 'train1.jsonl'} --train {tmp_path / 'train2.jsonl'}" in r["command"]


def test_a_set_that_cannot_be_decoded_is_named_and_the_others_are_scored(ev, tmp_path, tiny_emitting_model,
                                                                         one_torch_thread):
    """One bad test set used to end the whole evaluation with a traceback, the sets decoded before it lost."""
    import soundfile as sf

    model, _ = tiny_emitting_model(["the cat sat on the mat", "a dog ran far away", "she sells sea shells"] * 20,
                                   tmp_path / "tok", vocab_size=24)
    test = tmp_path / "synth"
    (test / "wavs").mkdir(parents=True)
    sf.write(test / "wavs" / "0.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("float32"), 16000)
    row = {"audio_filepath": "wavs/0.wav", "duration": 1.0, "text": "the cat", "speaker": "espeak-ng/a"}
    gone = {**row, "audio_filepath": "wavs/gone.wav"}
    (test / "test_espeak.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(gone) + "\n")   # one of two lost
    (test / "test_flite.jsonl").write_text(json.dumps({**gone, "speaker": "flite/slt"}) + "\n")  # all lost
    out = tmp_path / "out"
    ev.main(["--model", str(model.save(tmp_path / "m.pt")), "--test-dir", str(test), "--name", "t", "--out", str(out),
             "--threads", "1"])
    r = json.loads((out / "eval_t.json").read_text())
    espeak = [x for x in r["rows"] if x["set"] == "espeak-ng held-out voices"]
    assert [x["set"] for x in r["rows"] if ":" not in x["set"]] == ["espeak-ng held-out voices"]
    assert espeak[0]["utterances"] == 1 and espeak[0]["skipped"] == 1
    assert len(r["unscored"]) == 1 and r["unscored"][0].startswith("flite slt (held-out voice), greedy: no utterance")
    assert "gone.wav does not exist" in r["unscored"][0]
    md = (out / "eval_t.md").read_text()
    assert ("Utterances skipped (unreadable or too short; not in the figures): espeak-ng held-out voices "
            "(greedy): 1.") in md
    assert f"- {r['unscored'][0]}" in md
