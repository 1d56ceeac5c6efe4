"""CTC decoders: greedy against hand-computed paths, pyctcdecode beam search (label mapping, round trip, LM)."""
import math

import numpy as np
import pytest

from slimasr.runtime.decoders import (BeamSearchDecoder, DecodingConfig, GreedyDecoder, Vocabulary, _pyctcdecode_labels,
                                      ctc_greedy)

pytest.importorskip("pyctcdecode", reason="pyctcdecode is not installed")

TEXTS = [
    "the cat sat on the mat", "a dog barked at the moon all night", "she sells sea shells by the sea shore",
    "peter piper picked a peck of pickled peppers", "how much wood would a woodchuck chuck",
] * 20

# A 2-gram ARPA in which "the cat sat" is likely and "cot" does not exist (log10 probabilities).
ARPA = """\\data\\
ngram 1=6
ngram 2=5

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-1.0\t</s>\t0
-0.6\tthe\t-0.3
-0.9\tcat\t-0.3
-0.9\tsat\t-0.3

\\2-grams:
-0.1\t<s> the
-0.1\tthe cat
-0.1\tcat sat
-0.1\tsat </s>
-1.5\tthe sat

\\end\\
"""


def peaky(ids, vocab_size, repeat=2, gap=1, p=0.98):
    """Log-probs whose best path is each id for ``repeat`` frames followed by ``gap`` blank frames."""
    rows = []
    for i in ids:
        rows += [i] * repeat + [0] * gap
    lp = np.full((len(rows), vocab_size), math.log((1 - p) / (vocab_size - 1)), np.float32)
    lp[np.arange(len(rows)), rows] = math.log(p)
    return lp


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from slimasr.tokenizer import train_tokenizer

    return train_tokenizer(TEXTS, 40, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    p = tmp_path_factory.mktemp("lm") / "lm.arpa"
    p.write_text(ARPA)
    return p


def test_ctc_greedy_hand_computed():
    lp = np.log(np.full((8, 6), 0.02, np.float32))
    best = [0, 3, 3, 0, 3, 5, 5, 0]            # -> 3 (frame 1), 3 (frame 4: blank in between), 5 (frame 5)
    lp[np.arange(8), best] = 0.0
    assert ctc_greedy(lp) == ([3, 3, 5], [1, 4, 5], 0)
    # the previous chunk ended in 5: a 5 at the start of this chunk is the same token
    assert ctc_greedy(lp[5:], prev=5) == ([], [], 0)
    assert ctc_greedy(lp[5:], prev=0) == ([5], [0], 0)
    assert ctc_greedy(np.zeros((0, 6))) == ([], [], 0)


def test_greedy_decoder_text_and_times(tok):
    v = Vocabulary.from_tokenizer(tok)
    text = "peter piper picked a peck"
    ids = tok.encode(text)
    lp = peaky(ids, tok.vocab_size, repeat=2, gap=1)
    h = GreedyDecoder(v, frame_seconds=0.04).decode(lp)
    assert h.text == text and h.tokens == tuple(ids)
    assert h.timestamps == pytest.approx([3 * k * 0.04 for k in range(len(ids))])
    assert [w for w, _, _ in h.words] == text.split()
    assert all(a < b for _, a, b in h.words)
    # frame_offset shifts every time; <sos/eos> is dropped like blank
    h2 = GreedyDecoder(v).decode(peaky(ids + [tok.sos_eos_id], tok.vocab_size), frame_offset=10)
    assert h2.tokens == tuple(ids) and h2.timestamps[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="frames"):
        GreedyDecoder(v).decode(lp[:, :-1])


def test_labels_for_pyctcdecode(tok):
    labels = _pyctcdecode_labels(tok.pieces())
    assert len(labels) == tok.vocab_size - 1                  # <sos/eos> column dropped
    assert labels[0] == ""                                    # blank
    assert labels[tok.unk_id] == "\u2581\u2047"               # <unk>: an unknown word
    assert labels[1:] == ["\u2581\u2047"] + tok.pieces()[2:-1]
    from pyctcdecode.alphabet import Alphabet

    alphabet = Alphabet.build_alphabet(labels)
    assert alphabet.is_bpe and alphabet.labels[0] == ""


def test_beam_without_lm_equals_greedy_on_peaky(tok):
    v = Vocabulary.from_tokenizer(tok)
    beam = BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=8))
    greedy = GreedyDecoder(v)
    rng = np.random.default_rng(0)
    for text in ["the cat sat on the mat", "how much wood would a woodchuck chuck", "she sells sea shells"]:
        lp = peaky(tok.encode(text), tok.vocab_size, repeat=int(rng.integers(1, 4)), gap=int(rng.integers(0, 3)),
                   p=0.9)
        b, g = beam.decode(lp), greedy.decode(lp)
        assert b.text == g.text == text                      # round trip through pyctcdecode's BPE handling
        assert [w for w, _, _ in b.words] == [w for w, _, _ in g.words]
        assert [s for _, s, _ in b.words] == pytest.approx([s for _, s, _ in g.words])
        assert b.tokens == g.tokens                          # tokenizer encoding of the words
        assert b.score is not None and b.score < 0


def test_lone_word_boundary_piece_does_not_split_other_beams():
    # pyctcdecode alone decodes this as "c at": the "▁" candidate of frame 2 forces a break on the "a" beam
    v = Vocabulary(["<blank>", "<unk>", "\u2581", "\u2581c", "a", "t", "\u2581x", "<sos/eos>"])

    def frame(**p):
        x = np.full(8, 1e-6)
        for k, val in p.items():
            x[{"c": 3, "a": 4, "t": 5, "b": 2, "blank": 0}[k]] = val
        return np.log(x / x.sum())

    lp = np.stack([frame(c=1), frame(blank=1), frame(a=0.7, b=0.3), frame(t=1)]).astype(np.float32)
    assert BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=10)).decode(lp).text == "cat"
    assert GreedyDecoder(v).decode(lp).text == "cat"


CAT_SYMBOLS = ["<blank>", "<unk>", "\u2581the", "\u2581cat", "\u2581cot", "\u2581sat", "<sos/eos>"]


def _the_cot_sat() -> np.ndarray:
    """Log-probs over CAT_SYMBOLS where acoustically "cot" (0.6) beats "cat" (0.4); the ARPA LM knows only "cat"."""
    def frame(**p):
        x = np.full(7, 1e-4)
        for k, val in p.items():
            x[{"blank": 0, "the": 2, "cat": 3, "cot": 4, "sat": 5}[k]] = val
        return np.log(x / x.sum())

    return np.stack([frame(the=1), frame(blank=1), frame(cot=0.6, cat=0.4), frame(blank=1), frame(sat=1)])


def test_beam_with_lm_moves_scores_the_expected_way(arpa):
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    v = Vocabulary(CAT_SYMBOLS)
    lp = _the_cot_sat()
    no_lm = BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=10)).decode(lp)
    assert no_lm.text == "the cot sat"
    with_lm = BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=10, lm=str(arpa))).decode(lp)
    assert with_lm.text == "the cat sat"
    # the LM log-probability is negative: more LM weight, lower total score for the same words
    heavier = BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=10, lm=str(arpa), lm_weight=1.2)).decode(lp)
    assert heavier.text == "the cat sat" and heavier.score < with_lm.score < 0
    # a word bonus raises it
    bonus = BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=10, lm=str(arpa), word_score=1.0)).decode(lp)
    assert bonus.score == pytest.approx(with_lm.score + 3.0, abs=1e-3)


def test_upper_case_vocabulary_uses_a_normalised_lm(arpa):
    """An imported WeNet model's units are upper case (``▁THE``); every LM `slimasr lm build` writes is lower case
    (normalize_text). The search matches them (the LM is used, not refused as unspellable) and answers in the
    model's case, the same words as the lower-case vocabulary's search."""
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    lower = CAT_SYMBOLS
    upper = [s if s.startswith("<") else s.upper() for s in lower]
    lp = _the_cot_sat()
    cfg = DecodingConfig(method="beam", beam_size=10, lm=str(arpa))
    dec = BeamSearchDecoder(Vocabulary(upper), cfg)
    assert dec.lm_report.unspellable == 0
    got, want = dec.decode(lp), BeamSearchDecoder(Vocabulary(lower), cfg).decode(lp)
    assert want.text == "the cat sat" and got.text == "THE CAT SAT"           # the LM's choice, the model's case
    assert [w.upper() for w, *_ in want.words] == [w for w, *_ in got.words] and got.score == pytest.approx(want.score)
    no_lm = BeamSearchDecoder(Vocabulary(upper), DecodingConfig(method="beam", beam_size=10)).decode(lp)
    assert no_lm.text == "THE COT SAT"
    mixed = upper[:2] + ["\u2581The"] + upper[3:]                # a cased vocabulary is searched as it is
    assert BeamSearchDecoder(Vocabulary(mixed), DecodingConfig(method="beam", beam_size=10)).decode(lp).text == \
        "The COT SAT"
    # an upper-case LM (a toolkit's own) with the upper-case vocabulary: searched as it is, the LM still used
    upper_arpa = arpa.parent / "upper.arpa"
    upper_arpa.write_text(ARPA.replace("the", "THE").replace("cat", "CAT").replace("sat", "SAT"))
    dec = BeamSearchDecoder(Vocabulary(upper), DecodingConfig(method="beam", beam_size=10, lm=str(upper_arpa)))
    assert dec.lm_report.unspellable == 0 and dec.decode(lp).text == "THE CAT SAT"


def test_decoding_config_checks(tmp_path):
    assert DecodingConfig.paper("lm.bin") == DecodingConfig(method="beam", beam_size=100, lm="lm.bin", lm_weight=0.6)
    with pytest.raises(ValueError, match="greedy"):
        DecodingConfig(method="viterbi")
    with pytest.raises(ValueError, match="beam"):
        DecodingConfig(lm="lm.arpa")
    v = Vocabulary(["<blank>", "\u2581a", "<sos/eos>"])
    with pytest.raises(ValueError, match="does not exist"):
        BeamSearchDecoder(v, DecodingConfig(method="beam", lm=str(tmp_path / "missing.arpa")))
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    bad = tmp_path / "bad.arpa"
    bad.write_text("not an arpa file\n")
    with pytest.raises(ValueError, match="KenLM"):
        BeamSearchDecoder(v, DecodingConfig(method="beam", lm=str(bad)))


def test_loading_an_lm_prints_nothing_and_a_damaged_one_is_one_line(tok, arpa, tmp_path, capfd):
    """KenLM's progress bar and its "build a binary file" advice (C++ std::cerr) stay off standard error; a file
    with an ARPA header but a damaged body gives KenLM's reason in one line."""
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    v = Vocabulary.from_tokenizer(tok)
    capfd.readouterr()
    BeamSearchDecoder(v, DecodingConfig(method="beam", lm=str(arpa)))
    err = capfd.readouterr().err
    assert "binary file" not in err and "****" not in err and "Reading" not in err, err
    bad = tmp_path / "damaged.arpa"
    bad.write_text("\\data\\\nngram 1=zz\n")
    with pytest.raises(ValueError) as e:
        BeamSearchDecoder(v, DecodingConfig(method="beam", lm=str(bad)))
    assert str(e.value) == f"language model {bad} is not a readable KenLM model: Bad count zz Byte: 18"
    assert "binary file" not in capfd.readouterr().err


def test_decoding_summary_names_the_lm_and_its_weight():
    assert DecodingConfig().summary() == "greedy"
    assert DecodingConfig(method="beam", beam_size=8).summary() == "beam 8"
    assert DecodingConfig(method="beam", lm="exp/lm.bin", lm_weight=0.6).summary() == \
        "beam 100 + LM exp/lm.bin (weight 0.6)"
    assert DecodingConfig(method="beam", lm="lm.bin", lm_weight=0.5, word_score=1.5).summary() == \
        "beam 100 + LM lm.bin (weight 0.5, word score 1.5)"


def _noisy(tok, texts, seed):
    """Realistic-ish CTC posteriors: the tokens of ``texts`` with uncertain frames (several candidates above
    pyctcdecode's token_min_logp), so beams branch, merge and get pruned."""
    rng = np.random.default_rng(seed)
    ids = [i for t in texts for i in tok.encode(t)]
    lp = peaky(ids, tok.vocab_size, repeat=2, gap=1, p=0.6)
    lp = lp + rng.gumbel(size=lp.shape).astype(np.float32) * 1.5
    return (lp - np.log(np.exp(lp).sum(axis=1, keepdims=True))).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("lm_kind", ["none", "arpa", "built"])
def test_beam_search_equals_pyctcdecode(tok, arpa, tmp_path, lm_kind):
    """Our prefix beam search returns exactly pyctcdecode's best beam: text, word frames and score (without an
    LM, with the tiny ARPA in which most words are unknown, with a 3-gram of the texts)."""
    lm = None
    if lm_kind != "none":
        pytest.importorskip("kenlm", reason="the kenlm module is not installed")
        lm = arpa
    if lm_kind == "built":
        from slimasr.lm import build_lm

        (tmp_path / "text.txt").write_text("\n".join(TEXTS) + "\n")
        try:
            lm = build_lm(tmp_path / "text.txt", tmp_path / "lm.arpa", order=3)
        except Exception as e:  # lmplz not installed
            pytest.skip(f"cannot build an LM here: {e}")
    v = Vocabulary.from_tokenizer(tok)
    for beam_size, prune, min_logp in ((100, -10.0, -5.0), (16, -8.0, -5.0), (5, -4.0, -2.0)):
        cfg = DecodingConfig(method="beam", beam_size=beam_size, lm=None if lm is None else str(lm),
                             beam_prune_logp=prune, token_min_logp=min_logp)
        dec = BeamSearchDecoder(v, cfg)
        for seed in range(4):
            lp = _noisy(tok, TEXTS[seed: seed + 2], seed)[:, :-1]
            assert (lp >= min_logp).sum(axis=1).mean() > 1.5                    # the search branches
            ours = dec._search(lp, beam_width=beam_size, beam_prune_logp=prune, token_min_logp=min_logp)
            text, _, frames, _, score = dec._decoder.decode_beams(lp, beam_width=beam_size, beam_prune_logp=prune,
                                                                   token_min_logp=min_logp)[0]
            assert ours == (text, frames, score)
