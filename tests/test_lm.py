"""`slimasr lm build`: KenLM's lmplz / build_binary wrapped, with clear errors when they are missing."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimasr import lm as lm_mod
from slimasr.cli import main


def _have(tool):
    try:
        lm_mod.find_kenlm_tool(tool)
        return True
    except lm_mod.KenLMToolMissing:
        return False


needs_lmplz = pytest.mark.skipif(not _have("lmplz"), reason="KenLM's lmplz is not installed (run `make setup`)")
needs_build_binary = pytest.mark.skipif(not _have("build_binary"),
                                        reason="KenLM's build_binary is not installed (run `make setup`)")

CORPUS = """The cat sat on the mat.
The dog sat on the log!
A cat and a dog, on a mat.

she sells sea shells by the sea shore
"""


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(CORPUS)
    return p


@needs_lmplz
def test_build_arpa_via_cli(corpus, tmp_path):
    out = tmp_path / "lm" / "lm.arpa"
    r = CliRunner().invoke(main, ["lm", "build", "--text", str(corpus), "--order", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    arpa = out.read_text()
    assert "\\4-grams:" in arpa and "\\end\\" in arpa
    words = lm_mod.load_unigrams(out)
    assert {"the", "cat", "sat", "mat", "shells"} <= set(words)          # normalised: lowercase, no punctuation
    assert "The" not in words and "mat." not in words and "<s>" not in words
    import kenlm

    m = kenlm.Model(str(out))
    assert m.order == 4
    assert m.score("the cat sat on the mat") > m.score("mat the on sat cat the")


@needs_lmplz
def test_numbers_are_words_in_the_lm(tmp_path):
    """LM text is normalised like references and tokenizer text: numbers become the words a speaker says."""
    text = tmp_path / "t.txt"
    text.write_text("I woke at 5 o'clock in 1984.\nThe 2nd train left at 6.\n")
    out = tmp_path / "lm.arpa"
    r = CliRunner().invoke(main, ["lm", "build", "--text", str(text), "--order", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    words = set(lm_mod.load_unigrams(out))
    assert {"five", "o'clock", "nineteen", "eighty", "four", "second", "six"} <= words, words
    assert not any(c.isdigit() for w in words for c in w), words


@needs_lmplz
@needs_build_binary
def test_build_binary_and_decode_with_it(corpus, tmp_path):
    import numpy as np

    from slimasr.runtime.decoders import BeamSearchDecoder, DecodingConfig, Vocabulary

    out = lm_mod.build_lm(corpus, tmp_path / "lm.bin", order=3)
    assert out.is_file() and lm_mod.unigrams_path(out).is_file()
    assert "cat" in lm_mod.load_unigrams(out)
    v = Vocabulary(["<blank>", "<unk>", "\u2581the", "\u2581cat", "\u2581cot", "\u2581sat", "<sos/eos>"])
    p = np.full((5, 7), 1e-4)
    for t, cols in enumerate([{2: 1}, {0: 1}, {4: 0.6, 3: 0.4}, {0: 1}, {5: 1}]):
        for c, val in cols.items():
            p[t, c] = val
    lp = np.log(p / p.sum(1, keepdims=True))
    h = BeamSearchDecoder(v, DecodingConfig(method="beam", beam_size=10, lm=str(out))).decode(lp)
    assert h.text == "the cat sat"


def test_missing_lmplz_is_a_clear_error(corpus, tmp_path, monkeypatch):
    def missing(name):
        raise lm_mod.KenLMToolMissing(f"KenLM's {name} is not installed; run `make setup` to build it")

    monkeypatch.setattr(lm_mod, "find_kenlm_tool", missing)
    r = CliRunner().invoke(main, ["lm", "build", "--text", str(corpus), "--out", str(tmp_path / "lm.arpa")])
    assert r.exit_code != 0 and "run `make setup`" in r.output and "Traceback" not in r.output


def test_find_tool_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path))
    monkeypatch.setattr(lm_mod.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(lm_mod.KenLMToolMissing, match="make setup"):
        lm_mod.find_kenlm_tool("lmplz")


def test_bad_inputs(corpus, tmp_path):
    with pytest.raises(ValueError, match=".arpa or .bin"):
        lm_mod.build_lm(corpus, tmp_path / "lm.txt")
    with pytest.raises(ValueError, match="does not exist"):
        lm_mod.build_lm(tmp_path / "missing.txt", tmp_path / "lm.arpa")
    with pytest.raises(ValueError, match="order"):
        lm_mod.build_lm(corpus, tmp_path / "lm.arpa", order=0)
    wav = tmp_path / "speech.wav"                         # a binary file is not taken for text
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(64))
    with pytest.raises(ValueError, match=r"^text file .*speech\.wav is binary"):
        lm_mod.build_lm(wav, tmp_path / "lm.arpa")
    assert not (tmp_path / "lm.arpa").exists()
    if _have("lmplz"):
        empty = tmp_path / "empty.txt"
        empty.write_text("\n ... \n")
        with pytest.raises(ValueError, match="no usable sentences"):
            lm_mod.build_lm(empty, tmp_path / "lm.arpa")


def test_a_file_that_is_no_kenlm_model_is_refused_before_kenlm_reads_it(corpus, tmp_path):
    from slimasr.runtime.decoders import DecodingConfig

    with pytest.raises(ValueError, match=r"^language model .*corpus.* is not a KenLM model \(an ARPA file starts"):
        lm_mod.check_lm_file(corpus)                                   # the training text, not its model
    arpa = tmp_path / "tiny.arpa"
    arpa.write_text("\n\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t<s>\n-1.0\t</s>\n-1.0\thello\n\n\\end\\\n")
    lm_mod.check_lm_file(arpa)                                         # no error
    if _have("lmplz") and _have("build_binary"):
        lm_mod.check_lm_file(lm_mod.build_lm(corpus, tmp_path / "lm.bin", order=2))
    # the beam-search decoder checks it first (KenLM would print a progress bar, then fail)
    from slimasr.runtime.decoders import BeamSearchDecoder, Vocabulary

    vocab = Vocabulary(["<blank>", "\u2581a", "b", "<sos/eos>"])
    with pytest.raises(ValueError, match="is not a KenLM model"):
        BeamSearchDecoder(vocab, DecodingConfig(method="beam", lm=str(corpus)), 0.04)


def test_cli_refuses_an_output_that_is_its_text(corpus, tmp_path):
    text = tmp_path / "lm.arpa"                           # a corpus unluckily named like a model
    text.write_bytes(Path(corpus).read_bytes())
    r = CliRunner().invoke(main, ["lm", "build", "--text", str(text), "--out", str(text)])
    assert r.exit_code == 1 and r.output.startswith(f"Error: --out {text} is also an input"), r.output
    assert text.read_bytes() == Path(corpus).read_bytes()


def test_help_has_example():
    r = CliRunner().invoke(main, ["lm", "build", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "slimasr lm build" in r.output


def _arpa(path, words):
    """A bigram ARPA file (KenLM needs order 2 or more): uniform unigrams over ``words``, one bigram."""
    n = len(words) + 3
    lines = ["\\data\\", f"ngram 1={n}", "ngram 2=1", "", "\\1-grams:"]
    lines += [f"-{1 + 0.1 * k:.4f}\t{w}\t-0.1" for k, w in enumerate(["<unk>", "<s>", "</s>", *words])]
    lines += ["", "\\2-grams:", f"-0.5\t<s> {words[0]}"]
    path.write_text("\n".join(lines + ["", "\\end\\", ""]), encoding="utf-8")
    return path


PIECES = ["<blank>", "<unk>", "\u2581the", "\u2581qu", "ick", "\u2581b", "row", "n", "\u2581fox", "\u2581j", "ump",
          "s", "\u2581c", "af", "e", "\u2581d", "o", "g", "\u2581", "<sos/eos>"]


def test_check_lm_vocabulary_counts_case_and_characters():
    words = ["THE", "QUICK", "BROWN", "FOX", "the", "dog", "caf\u00e9", "<s>", "</s>", "<unk>"]
    r = lm_mod.check_lm_vocabulary(words, PIECES, "lm.arpa")
    assert (r.words, r.unspellable, r.upper_case) == (7, 5, 4)
    assert r.oov_rate == pytest.approx(5 / 7) and not r.unusable
    assert set(r.missing_chars) == {"T", "H", "E", "Q", "U", "I", "C", "K", "B", "R", "O", "W", "N", "F", "X",
                                    "\u00e9"}
    msg = r.message()
    assert "5 of its 7 words (71.4%)" in msg and "4 of them are upper-case" in msg and "--no-normalize" in msg
    assert lm_mod.check_lm_vocabulary(["the", "fox"], PIECES).unspellable == 0
    assert lm_mod.check_lm_vocabulary(["THE", "FOX"], PIECES).unusable


def test_upper_case_lm_is_refused_by_beam_search(tmp_path):
    """An LM built from upper-case text with --no-normalize can never match a lower-case model: an error at load,
    not "the quickbrown foxjumps" in silence."""
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    from slimasr.runtime.decoders import BeamSearchDecoder, DecodingConfig, Vocabulary

    arpa = _arpa(tmp_path / "upper.arpa", ["THE", "QUICK", "BROWN", "FOX", "JUMPS"])
    with pytest.raises(ValueError, match=r"upper.arpa: 5 of its 5 words \(100.0%\) cannot be spelled.*upper-case"):
        BeamSearchDecoder(Vocabulary(PIECES), DecodingConfig(method="beam", beam_size=4, lm=str(arpa)))


def test_partial_mismatch_warns_with_numbers_and_library_warnings_pass(tmp_path, caplog):
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    import logging

    from slimasr.runtime.decoders import BeamSearchDecoder, DecodingConfig, Vocabulary

    arpa = _arpa(tmp_path / "mixed.arpa", ["the", "quick", "brown", "fox", "jumps", "caf\u00e9", "na\u00efve"])
    levels = {n: logging.getLogger(n).level for n in ("pyctcdecode", "pyctcdecode.alphabet",
                                                      "pyctcdecode.language_model")}
    with caplog.at_level(logging.INFO):
        dec = BeamSearchDecoder(Vocabulary(PIECES), DecodingConfig(method="beam", beam_size=4, lm=str(arpa)))
    assert dec.lm_report.unspellable == 2 and dec.lm_report.words == 7
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "mixed.arpa" in r.getMessage()]
    assert len(warned) == 1 and "2 of its 7 words (28.6%)" in warned[0].getMessage()
    # pyctcdecode's own warning (a tiny vocabulary) reaches the log: nothing lowers its logger's level
    assert any(r.name.startswith("pyctcdecode") and "unigrams" in r.getMessage() for r in caplog.records)
    assert {n: logging.getLogger(n).level for n in levels} == levels


@needs_lmplz
def test_no_normalize_lm_from_upper_case_text_is_refused(tmp_path):
    pytest.importorskip("kenlm", reason="the kenlm module is not installed")
    from slimasr.runtime.decoders import BeamSearchDecoder, DecodingConfig, Vocabulary

    text = tmp_path / "upper.txt"
    text.write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG\nTHE DOG JUMPS\n")
    r = CliRunner().invoke(main, ["lm", "build", "--text", str(text), "--no-normalize", "--order", "2",
                                  "--out", str(tmp_path / "upper.arpa")])
    assert r.exit_code == 0, r.output
    with pytest.raises(ValueError, match="upper-case words the model writes in lower case"):
        BeamSearchDecoder(Vocabulary(PIECES), DecodingConfig(method="beam", beam_size=4,
                                                             lm=str(tmp_path / "upper.arpa")))
