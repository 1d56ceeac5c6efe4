"""Tokenizer: id convention, round trip, tokens.txt, serialisation, text normalisation."""
import pytest

from slimasr.tokenizer import Tokenizer, normalize_text, train_tokenizer

pytest.importorskip("sentencepiece", reason="sentencepiece is not installed")

TEXTS = [
    "the cat sat on the mat", "a dog barked at the moon all night", "she sells sea shells by the sea shore",
    "peter piper picked a peck of pickled peppers", "how much wood would a woodchuck chuck",
    "don't count your chickens before they hatch", "the early bird catches the worm",
    "it's a long way to the top if you want to rock and roll", "every cloud has a silver lining",
] * 20


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="module")
def tok(tok_dir):
    return train_tokenizer(TEXTS, 60, tok_dir)


def test_id_convention(tok):
    assert tok.vocab_size == 62
    assert tok.blank_id == 0 and tok.id_to_piece(0) == "<blank>"
    assert tok.unk_id == 1 and tok.id_to_piece(1) == "<unk>"
    assert tok.sos_eos_id == 61 and tok.id_to_piece(61) == "<sos/eos>"
    ids = tok.encode("the cat sat")
    assert ids and all(1 < i < tok.sos_eos_id for i in ids)


def test_round_trip(tok):
    for t in ["the early bird catches the worm", "don't count your chickens"]:
        assert tok.decode(tok.encode(t)) == t
    ids = tok.encode("the mat")
    assert tok.decode([0, *ids, 0, tok.sos_eos_id]) == "the mat"
    assert tok.encode("The MAT!") == ids  # normalised before encoding
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])


def test_tokens_txt(tok, tmp_path):
    lines = tok.write_tokens_txt(tmp_path / "tokens.txt").read_text().splitlines()
    assert len(lines) == tok.vocab_size
    assert lines[0] == "<blank> 0" and lines[1] == "<unk> 1" and lines[-1] == f"<sos/eos> {tok.vocab_size - 1}"
    for i, line in enumerate(lines):
        sym, idx = line.rsplit(" ", 1)
        assert int(idx) == i and sym == tok.id_to_piece(i) and " " not in sym


def test_bytes_and_file(tok, tok_dir, tmp_path):
    t2 = Tokenizer.from_bytes(tok.to_bytes())
    assert t2.vocab_size == tok.vocab_size and t2.encode("a dog") == tok.encode("a dog")
    # train_tokenizer wrote the model and tokens.txt
    assert (tok_dir / "tokens.txt").is_file()
    assert Tokenizer(tok_dir / "tokenizer.model").pieces() == tok.pieces()
    with pytest.raises(ValueError, match="does not exist"):
        Tokenizer(tmp_path / "missing.model")


def test_bpe_and_char(tmp_path):
    assert train_tokenizer(TEXTS, 50, tmp_path / "bpe", model_type="bpe").vocab_size == 52
    chars = len(set("".join(TEXTS))) + 1  # + <unk>; the space becomes the word-boundary piece
    assert train_tokenizer(TEXTS, chars, tmp_path / "char", model_type="char").vocab_size == chars + 2


def test_too_small_corpus(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=5000.*largest size"):
        train_tokenizer(TEXTS[:9], 5000, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer(["", "  "], 10, tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer(TEXTS, 10, tmp_path, model_type="wordpiece")


@pytest.mark.parametrize("raw,norm", [
    ("Hello,   World!", "hello world"),
    ("Don't PANIC -- it's 'only' 42 km", "don't panic it's only km"),
    ("Café naïve", "cafe naive"),
    ("Straße", "strasse"),                          # letters outside a-z are transliterated, not deleted
    ("Ørsted", "orsted"),
    ("Łódź", "lodz"),
    ("ÆSIR œuvre ﬁne", "aesir oeuvre fine"),
    ("e\u0301te\u0301", "ete"),                     # decomposed accents
    ("Привет, мир", "privet mir"),
    ("x\u00bdy \U0001F600 ok", "x y ok"),             # symbols and emoji are word breaks, not words

    ("rock\u2019n\u2019roll", "rock'n'roll"),
    ("'quoted' words'", "quoted words"),
    ("", ""),
])
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_too_small_vocab_message(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        train_tokenizer(TEXTS, 5, tmp_path)


def test_normalize_text_is_idempotent():
    for raw in ("Straße Ørsted Łódź", "Don't PANIC -- it's 'only' 42 km", "北京 \U0001F600 ¿Qué?"):
        once = normalize_text(raw)
        assert normalize_text(once) == once and once.isascii()


def test_folding_is_the_same_for_tokenizer_lm_and_scoring(tok):
    """Tokenizer training and encoding, LM text (slimasr.lm.build_lm normalises with normalize_text) and WER
    references (slimasr.scoring) all see "Straße" as "strasse"."""
    from slimasr.scoring import error_rates, normalize_for_scoring

    assert tok.encode("Straße Ørsted") == tok.encode("strasse orsted")
    assert 1 not in tok.encode("Straße")                     # no <unk>: every letter is in the alphabet
    assert normalize_for_scoring("Straße Ørsted") == "strasse orsted"
    assert error_rates(["Straße"], ["strasse"])["wer"] == 0.0
