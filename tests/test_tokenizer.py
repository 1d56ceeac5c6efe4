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
    ("Don't PANIC -- it's 'only' 42 km", "don't panic it's only forty two km"),
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


@pytest.mark.parametrize("raw,norm", [
    # numbers are spelled out before the letters-only filter (num2words), never dropped
    ("5 o'clock", "five o'clock"),
    ("in 1984", "in nineteen eighty four"),                 # four digits 1100-2099: a year
    ("in 1984.", "in nineteen eighty four"),                # a full stop is not a decimal point
    ("2005 and 1905", "two thousand and five and nineteen oh five"),
    ("1500 people", "fifteen hundred people"),              # also read as a year (documented ambiguity)
    ("the 1st, 2nd, 3rd and 21ST", "the first second third and twenty first"),
    ("3.14 and 0.05", "three point one four and zero point zero five"),
    ("50% or 3.5 %", "fifty percent or three point five percent"),
    ("$5, $1 and $5.50", "five dollars one dollar and five dollars fifty cents"),
    ("$0.99 and \u00a33.01 and \u20ac2", "ninety nine cents and three pounds one penny and two euros"),
    ("$1,000,000 and 12,345", "one million dollars and twelve thousand three hundred and forty five"),
    ("1,2,3 go", "one two three go"),                        # not a thousands grouping
    ("the 1990s and 80s", "the nineteen nineties and eighties"),
    ("room 101", "room one hundred and one"),
    ("agent 007", "agent zero zero seven"),                 # a leading zero: digit by digit
    ("1234567890123456", "one two three four five six seven eight nine zero one two three four five six"),
    ("mp3 at 5:30", "mp three at five thirty"),
    ("x\u00bdy x\u00b2", "x y x"),                          # numeric symbols that are not decimal digits
    # signs: a minus or plus right before a number, unless it follows a letter, digit, "." or ","
    ("-3 and (-0.5) and \u22127", "minus three and minus zero point five and minus seven"),
    ("it is -3 degrees, 5 -3 or +4", "it is minus three degrees five minus three or plus four"),
    ("pages 10-20 and covid-19", "pages ten twenty and covid nineteen"),   # a hyphen, not a sign
    ("-$5 and -50%", "minus five dollars and minus fifty percent"),
    # decimals
    ("1.5 and .5 and 0.25", "one point five and point five and zero point two five"),
    ("version 1.2.3", "version one point two point three"),
    ("1,000.5", "one thousand point five"),
    # currency, with scale words after the number
    ("$1.5 million", "one point five million dollars"),
    ("$1 million and \u20ac2 Billion", "one million dollars and two billion euros"),
    ("$1.25 million", "one point two five million dollars"),   # with a scale word, decimals are not cents
    ("\u00a33bn, $5k and $4M", "three billion pounds five thousand dollars and four million dollars"),
    ("$.50", "fifty cents"),
    ("1.5 million people", "one point five million people"),
    ("5m away", "five m away"),                              # "m" is a scale only after a currency
    # clock times
    ("12:00", "twelve o'clock"),
    ("3:45 and 10:05", "three forty five and ten oh five"),
    ("13:00 and 0:30", "thirteen hundred and zero thirty"),
    ("at 9:00 pm", "at nine pm"),
    ("2:5 and 12:60", "two five and twelve sixty"),          # not times
    # ordinals, percentages, years, grouping
    ("22nd and 101st", "twenty second and one hundred and first"),
    ("50% of 1999", "fifty percent of nineteen ninety nine"),
    ("1,000 and 10,000,000", "one thousand and ten million"),
    # decimal digits of other scripts
    ("\u0663 and \u0664\u0662", "three and forty two"),       # Arabic-Indic
    ("\uff13 and \u0969", "three and three"),                     # fullwidth, Devanagari
    ("\u0663.\u0665%", "three point five percent"),
])
def test_normalize_text_spells_numbers(raw, norm):
    assert normalize_text(raw) == norm
    assert normalize_text(norm) == norm


def test_too_small_vocab_message(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        train_tokenizer(TEXTS, 5, tmp_path)


def test_normalize_text_is_idempotent():
    for raw in ("Straße Ørsted Łódź", "Don't PANIC -- it's 'only' 42 km", "北京 \U0001F600 ¿Qué?", "£3.50, 1990s 2nd"):
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
    # numbers: a training target holds the words a speaker says, as the reference does
    assert tok.encode("at 5 in 1984") == tok.encode("at five in nineteen eighty four")
    assert normalize_for_scoring("at 5 in 1984") == "at five in nineteen eighty four"


@pytest.mark.parametrize("written,spoken", [
    ("3", "three"), ("-3", "minus three"), ("$1.5 million", "one point five million dollars"),
    ("3:45", "three forty five"), ("22nd", "twenty second"), ("\u0663", "three"), (".5", "point five"),
])
def test_written_and_spoken_numbers_score_the_same(written, spoken):
    """A reference with digits and a hypothesis with words (or the reverse) are no error."""
    from slimasr.scoring import error_rates

    assert error_rates([f"it was {written}"], [f"it was {spoken}"])["wer"] == 0.0
    assert error_rates([f"it was {spoken}"], [f"it was {written}"])["wer"] == 0.0
    # and a different number is one
    assert error_rates([f"it was {written}"], ["it was seven"])["wer"] > 0.0
