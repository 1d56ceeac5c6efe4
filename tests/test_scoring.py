"""slimasr.scoring: one WER/CER with one normalisation, one empty-reference rule and one unknown-token rule."""
import math
import random

import jiwer
import pytest

from slimasr.scoring import UNK_WORD, ErrorCounts, error_counts, error_rates, normalize_for_scoring


def test_equals_jiwer_on_random_corpora():
    rng = random.Random(0)
    words = ["a", "b", "cat", "dog", "the", "sat", "on", "mat", "don't"]
    for _ in range(30):
        refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(rng.randint(1, 6))]
        hyps = [" ".join(rng.choices(words, k=rng.randint(0, 8))) for _ in refs]
        r = error_rates(refs, hyps)
        assert r["wer"] == pytest.approx(jiwer.wer(refs, hyps))
        assert r["cer"] == pytest.approx(jiwer.cer(refs, hyps))
        assert r["utterances"] == len(refs) and r["empty_references"] == 0


def test_both_sides_normalised_the_same_way():
    # case, punctuation, digits written as numerals and letters outside a-z do not count as errors
    r = error_rates(["Straße, Ørsted -- Łódź!", "It's 42 km."], ["strasse orsted lodz", "its forty-two km"])
    assert r["word_errors"] == 1 and r["ref_words"] == 7         # only "it's" vs "its"


def test_numbers_are_words_not_dropped():
    # a hypothesis that leaves out the spoken number is wrong; one that spells it is right
    assert error_rates(["5 o'clock in 1984"], ["o'clock in"])["word_errors"] == 4
    r = error_rates(["5 o'clock in 1984"], ["five o'clock in nineteen eighty four"])
    assert r["word_errors"] == 0 and r["ref_words"] == 6


def test_empty_references_count_insertions():
    # one rule: an utterance whose reference is empty (after normalisation) is kept, its words are insertions
    r = error_rates(["a b", "", "!!"], ["a b", "x y", ""])
    assert (r["utterances"], r["empty_references"], r["ref_words"], r["word_errors"]) == (3, 2, 2, 2)
    assert r["wer"] == 1.0 and r["char_errors"] == 3               # "x y": three characters inserted
    silent = error_rates(["", ""], ["", ""])
    assert math.isnan(silent["wer"]) and silent["word_errors"] == 0 and silent["utterances"] == 2


@pytest.mark.parametrize("hyp", ["hello \u2047 world", "hello <unk> world", "hello\u2047world", "Hello <unk> World"])
def test_unknown_token_is_one_wrong_word(hyp):
    # SentencePiece decodes <unk> as U+2047, the runtime's tokens.txt vocabulary as "<unk>": both score the same
    assert normalize_for_scoring(hyp) == f"hello {UNK_WORD} world"
    r = error_rates(["hello there world"], [hyp])
    assert r["word_errors"] == 1 and r["ref_words"] == 3
    assert error_rates(["hello unk world"], [hyp])["word_errors"] == 1      # never matches a real word


def test_counts_accumulate_over_batches():
    refs, hyps = ["a b c", "d e", "", "f"], ["a c", "d e f", "g", ""]
    total = error_counts(refs[:2], hyps[:2]) + error_counts(refs[2:], hyps[2:])
    assert total == error_counts(refs, hyps) and total.wer == error_rates(refs, hyps)["wer"]
    assert isinstance(total, ErrorCounts) and total.wer == pytest.approx(4 / 6)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])
