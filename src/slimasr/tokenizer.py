"""Subword tokenizer (SentencePiece) with the CTC id convention, and the text normaliser.

Torch-free: the runtime and the scorer import this module.

Id convention (the same as WeNet's units file and sherpa-onnx's ``tokens.txt``)::

    0          <blank>                 CTC blank
    1 .. N     SentencePiece ids 0..N-1  (so <unk> is 1)
    N + 1      <sos/eos>

``Tokenizer.vocab_size`` is therefore ``N + 2``, where ``N`` is the SentencePiece vocabulary size that
:func:`train_tokenizer` was asked for.

Models imported from other toolkits keep their source's token order instead: a *token table* (WeNet
``units.txt``, ESPnet ``token_list``, NeMo's SentencePiece pieces with blank moved to 0) names every id, text is
split into pieces by the source's SentencePiece model (or into characters for character units) and each piece is
looked up in the table. :meth:`Tokenizer.to_bytes` then serialises the table with the SentencePiece model.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["BLANK", "SOS_EOS", "TokenTable", "Tokenizer", "normalize_text", "spell_numbers", "train_tokenizer"]

log = logging.getLogger(__name__)

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
MODEL_TYPES = ("unigram", "bpe", "char")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_NOT_LETTER = re.compile(r"[^a-z']+")
_LOOSE_APOSTROPHE = re.compile(r"(?<![a-z])'+|'+(?![a-z])")
_TABLE_MAGIC = b"slimasr-token-table\x00"      # to_bytes() of a tokenizer with a token table starts with this
DETOKENIZE = ("sentencepiece", "join_space", "join")


def _fold(m: re.Match) -> str:
    """Letters (and combining marks) -> their ASCII transliteration (anyascii); any other character -> a space."""
    from anyascii import anyascii

    return "".join(anyascii(c) if unicodedata.category(c)[0] in "LM" else " " for c in m.group())


# A number as written. Either a clock time (``H:MM``, hours 0-24) or: an optional sign (only where it cannot be a
# hyphen: not after a letter, digit, "." or ","), an optional currency sign, the integer part (plain, grouped by
# commas in threes, or empty before a decimal point: ".5"), optional decimal part(s) ("1.2.3" has two), and an
# optional suffix (percent, ordinal, plural; after a currency also a scale word or its short form: "$1.5 million",
# "$3bn"). Only ASCII digits: spell_numbers maps other scripts' decimal digits to them first.
_NUMBER = re.compile(
    r"(?<![0-9:.])(?P<hour>[01]?[0-9]|2[0-4]):(?P<min>[0-5][0-9])(?![0-9]|:[0-9])"
    r"|(?:(?<![\w.,])(?P<sign>[-+\u2212]))?(?:(?P<cur>[$\u00a3\u20ac])\s?)?"
    r"(?<![0-9])(?P<int>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+|(?<![\w.])(?=\.[0-9]))"
    r"(?:\.(?P<frac>[0-9]+(?:\.[0-9]+)*))?"
    r"(?:\s?(?P<pct>%)|(?P<ord>st|nd|rd|th)(?![a-z])|(?P<plural>s)(?![a-z])"
    r"|(?(cur)(?:\s?(?P<scale>thousand|million|billion|trillion)|(?P<abbr>k|mn?|bn|tn))(?![a-z])|(?!)))?",
    re.IGNORECASE)
# Spoken forms. num2words' to="currency" does not fit here: in 0.5.14 it reads an int as cents (5 -> "zero
# dollars, five cents") and names "pounds sterling" and an invariant "euro".
_CURRENCIES = {"$": ("dollar", "dollars"), "\u00a3": ("pound", "pounds"), "\u20ac": ("euro", "euros")}
_CENTS = {"$": ("cent", "cents"), "\u00a3": ("penny", "pence"), "\u20ac": ("cent", "cents")}
_SCALES = {"k": "thousand", "m": "million", "mn": "million", "bn": "billion", "tn": "trillion"}
_SIGNS = {"-": "minus", "\u2212": "minus", "+": "plus"}
_AM_PM = re.compile(r"\s?[ap]\.?m\b", re.IGNORECASE)
_DIGIT = re.compile(r"(?![0-9])\d")   # a decimal digit of another script (Unicode category Nd): "٣", "３"
_YEARS = range(1100, 2100)       # four plain digits in this range are read as a year ("in 1984")
_MAX_CARDINAL_DIGITS = 15        # longer digit runs (phone or serial numbers) are read digit by digit


def _cardinal(digits: str) -> str:
    """A run of ASCII digits -> words: num2words' cardinal, or digit by digit with a leading zero ("007") or
    over :data:`_MAX_CARDINAL_DIGITS` digits."""
    from num2words import num2words

    if len(digits) > 1 and (digits[0] == "0" or len(digits) > _MAX_CARDINAL_DIGITS):
        return " ".join(num2words(int(d)) for d in digits)
    return num2words(int(digits))


def _say_time(hour: str, minute: str, after: str) -> str:
    """``H:MM`` -> "three forty five", "ten oh five"; a full hour is "o'clock" (1-12), "hundred" (0, 13-24) or just
    the hour before "am"/"pm"."""
    h, words = int(hour), _cardinal(str(int(hour)))
    if minute != "00":
        return f"{words} {'oh ' if minute[0] == '0' else ''}{_cardinal(minute.lstrip('0'))}"
    if _AM_PM.match(after):
        return words
    return f"{words} o'clock" if 1 <= h <= 12 else f"{words} hundred"


def _say_number(m: re.Match) -> str:
    """One :data:`_NUMBER` match -> English words (num2words), surrounded by spaces."""
    from num2words import num2words

    if m.group("hour") is not None:
        return f" {_say_time(m.group('hour'), m.group('min'), m.string[m.end():])} "
    grouped, frac, cur = m.group("int"), m.group("frac"), m.group("cur")
    digits = grouped.replace(",", "")
    scale = (m.group("scale") or _SCALES.get((m.group("abbr") or "").lower(), "")).lower()
    sign = _SIGNS[m.group("sign")] + " " if m.group("sign") else ""
    if cur and not scale and frac is not None and len(frac) == 2:        # "$5.50" -> five dollars fifty cents
        words = [] if int(digits or 0) == 0 and int(frac) else [_cardinal(digits or "0"),
                                                                 _CURRENCIES[cur][int(digits or 0) != 1]]
        if int(frac):
            words += [_cardinal(frac.lstrip("0")), _CENTS[cur][int(frac) != 1]]
        return f" {sign}{' '.join(words)} "
    if frac is not None:                                                 # "3.14" -> three point one four
        parts = [" ".join(num2words(int(d)) for d in part) for part in frac.split(".")]
        words = (_cardinal(digits) if digits else "") + " point " + " point ".join(parts)    # ".5" -> point five
    elif m.group("ord"):
        words = num2words(int(digits), to="ordinal") if len(digits) <= _MAX_CARDINAL_DIGITS else _cardinal(digits)
    elif grouped == digits and len(digits) == 4 and int(digits) in _YEARS and not (cur or sign or m.group("pct")):
        words = num2words(int(digits), to="year")
    else:
        words = _cardinal(digits)
    if m.group("plural") and frac is None:                               # "1990s" -> nineteen nineties
        words = words[:-1] + "ies" if words.endswith("y") else words + ("es" if words.endswith("x") else "s")
    if scale:
        words += " " + scale
    if cur:
        words += " " + _CURRENCIES[cur][bool(scale) or not (digits == "1" and frac is None)]
    if m.group("pct"):
        words += " percent"
    return f" {sign}{words} "


def _ascii_digit(m: re.Match) -> str:
    return str(unicodedata.decimal(m.group()))


def spell_numbers(s: str) -> str:
    """Numbers -> English words (num2words), the rest of ``s`` unchanged.

    Rules, in order:

    * Decimal digits of any script are read as their ASCII value first (``unicodedata.decimal``: Arabic-Indic
      ``٣`` and fullwidth ``３`` are 3); other numeric characters (``½``, ``²``) are not numbers.
    * ``H:MM`` with hours 0-24 is a clock time: ``3:45`` -> "three forty five", ``10:05`` -> "ten oh five",
      ``12:00`` -> "twelve o'clock", ``13:00`` -> "thirteen hundred", ``9:00 pm`` -> "nine pm".
    * ``-``/``−`` and ``+`` right before a number are a sign ("minus", "plus") unless a letter, digit, ``.`` or
      ``,`` comes before them, where they are a hyphen or an operator: ``-3`` -> "minus three", ``10-20`` -> "ten
      twenty".
    * An amount after ``$``, ``£`` or ``€`` names its currency after the number and its scale word
      (``$1.5 million`` -> "one point five million dollars"; ``k``, ``m``/``mn``, ``bn``, ``tn`` right after the
      number are scale words there: ``£3bn`` -> "three billion pounds"); without a scale word two decimals are
      cents or pence (``$5.50`` -> "five dollars fifty cents").
    * Decimals are read digit by digit after "point" (``3.14`` -> "three point one four", ``.5`` -> "point five",
      ``1.2.3`` -> "one point two point three").
    * ``st``/``nd``/``rd``/``th`` make an ordinal (num2words ``to="ordinal"``: ``22nd`` -> "twenty-second").
    * Years: four plain digits from 1100 to 2099, without sign, currency, comma or ``%``, are a year (num2words
      ``to="year"``: ``1984`` -> "nineteen eighty-four", ``2005`` -> "two thousand and five"), whatever their
      context, so "1500 people" is also read "fifteen hundred people".
    * Commas group thousands (``1,000,000``); a trailing ``s`` makes a plural (``1990s``, ``80s``); ``%`` adds
      "percent"; a run with a leading zero or over 15 digits is read digit by digit (``007``).

    Cardinals keep num2words' British "and" (``101`` -> "one hundred and one") and its hyphens (``42`` ->
    "forty-two"; :func:`normalize_text` turns them into spaces).

    >>> " ".join(spell_numbers("5 o'clock in 1984, $5.50 or 50%").split())
    "five o'clock in nineteen eighty-four , five dollars fifty cents or fifty percent"
    >>> " ".join(spell_numbers("-3 at 3:45, $1.5 million").split())
    'minus three at three forty-five , one point five million dollars'
    """
    if not s.isascii():
        s = _DIGIT.sub(_ascii_digit, s)
    return _NUMBER.sub(_say_number, s)


def normalize_text(s: str) -> str:
    """Lowercase ASCII words separated by single spaces; apostrophes kept only inside words.

    Numbers are spelled out first (:func:`spell_numbers`: ``5 o'clock`` -> ``five o'clock``, ``in 1984`` ->
    ``in nineteen eighty four``, ``2nd`` -> ``second``, ``3.5%`` -> ``three point five percent``, ``$5`` ->
    ``five dollars``). Letters outside a-z are then transliterated with anyascii (``Straße`` -> ``strasse``,
    ``Ørsted`` -> ``orsted``, ``Łódź`` -> ``lodz``, ``café`` -> ``cafe``, ``Привет`` -> ``privet``); punctuation,
    emoji and other symbols become word breaks. Tokenizer training, language-model text and WER scoring
    (:mod:`slimasr.scoring`) all use this one function, and it is idempotent.

    >>> normalize_text("  Don't PANIC -- it's 'only' 42 km!")
    "don't panic it's only forty two km"
    """
    s = unicodedata.normalize("NFC", s.translate(_APOSTROPHES))
    s = spell_numbers(s)
    if not s.isascii():
        s = _NON_ASCII.sub(_fold, s)
    s = _NOT_LETTER.sub(" ", s.lower())
    s = _LOOSE_APOSTROPHE.sub(" ", s)
    return " ".join(s.split())


class Tokenizer:
    """A SentencePiece model seen through the CTC id convention (see the module docstring).

    Args:
        model_path: a SentencePiece ``.model`` file.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, model_proto: bytes | None = None,
                 table: "TokenTable | None" = None) -> None:
        import sentencepiece as spm

        if model_path is not None and model_proto is not None:
            raise ValueError("give at most one of model_path or model_proto")
        if model_path is not None:
            path = Path(model_path)
            if not path.is_file():
                raise ValueError(f"tokenizer model {path} does not exist (expected a SentencePiece .model file)")
            model_proto, what = path.read_bytes(), str(path)
        else:
            what = "bytes"
        if model_proto is not None and model_proto.startswith(_TABLE_MAGIC):
            table, model_proto = TokenTable.unpack(model_proto, what)
        if model_proto is None and table is None:
            raise ValueError("give a SentencePiece model (model_path or model_proto) or a token table")
        self._table = table
        self._sp = None
        if model_proto:
            self._sp = spm.SentencePieceProcessor()
            try:
                self._sp.load_from_serialized_proto(model_proto)
            except (OSError, RuntimeError) as e:
                raise ValueError(f"{what} is not a serialized SentencePiece model: {e}") from None
        elif table is None or table.detokenize == "sentencepiece":
            raise ValueError(f"{what}: a SentencePiece model is needed")
        self._n = self._sp.get_piece_size() if self._sp is not None else 0
        if table is not None:
            self._index = {p: i for i, p in enumerate(table.tokens)}

    # ---- sizes and special ids ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Model output size: blank + SentencePiece pieces + sos/eos (or the token table's length)."""
        return len(self._table.tokens) if self._table is not None else self._n + 2

    @property
    def table(self) -> "TokenTable | None":
        """The source token table of an imported model, or None (slimasr's own id convention)."""
        return self._table

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        if self._table is not None:
            return self._table.unk_id if self._table.unk_id is not None else -1
        return self._sp.unk_id() + 1

    @property
    def sos_eos_id(self) -> int | None:
        """Id of ``<sos/eos>`` (the last id for slimasr's own vocabularies); None when a token table has none."""
        if self._table is not None:
            return self._table.sos_eos_id
        return self.vocab_size - 1

    # ---- conversion -----------------------------------------------------------------------------
    def encode(self, text: str, normalize: bool = True) -> list[int]:
        """Text -> token ids (1..N); ``normalize`` applies :func:`normalize_text` first."""
        if normalize:
            text = normalize_text(text)
        if self._table is not None:
            return self._table_encode(text)
        return [i + 1 for i in self._sp.encode(text)]

    def _table_encode(self, text: str) -> list[int]:
        t = self._table
        if t.upper_case:
            text = text.upper()
        if self._sp is not None:
            pieces = self._sp.encode_as_pieces(text)
        else:                                   # character units, spaces as "▁" (WeNet's char tokenizer)
            pieces = [("\u2581" if c == " " else c) for c in " ".join(text.split())]
        unk = t.unk_id
        ids = [self._index.get(p, unk) for p in pieces]
        return [i for i in ids if i is not None]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text. Blank and sos/eos are ignored (no CTC collapsing is done here)."""
        if self._table is not None:
            return self._table_decode(ids)
        pieces = []
        for i in ids:
            i = int(i)
            if i == 0 or i == self.sos_eos_id:
                continue
            if not 0 < i < self.sos_eos_id:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            pieces.append(i - 1)
        return self._sp.decode(pieces)

    def _table_decode(self, ids: Sequence[int]) -> str:
        t, pieces = self._table, []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(t.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(t.tokens)})")
            if i == 0 or i == t.sos_eos_id:
                continue
            pieces.append(t.tokens[i])
        if t.detokenize == "sentencepiece":
            return self._sp.decode_pieces(pieces)
        text = "".join(pieces)
        return text.replace("\u2581", " ").strip() if t.detokenize == "join_space" else text

    def id_to_piece(self, i: int) -> str:
        if self._table is not None:
            if not 0 <= i < len(self._table.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self._table.tokens)})")
            return self._table.tokens[i]
        if i == 0:
            return BLANK
        if i == self.sos_eos_id:
            return SOS_EOS
        if not 0 < i < self.sos_eos_id:
            raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return self._sp.id_to_piece(i - 1)

    def pieces(self) -> list[str]:
        """All symbols, indexed by token id."""
        return [self.id_to_piece(i) for i in range(self.vocab_size)]

    def write_tokens_txt(self, path: str | os.PathLike) -> Path:
        """Write ``symbol id`` per line (sherpa-onnx's tokens.txt): ``<blank> 0`` first, ``<sos/eos>`` last."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{p} {i}\n" for i, p in enumerate(self.pieces())), encoding="utf-8")
        return path

    # ---- serialisation (so checkpoints and exported models can embed the tokenizer) --------------
    def to_bytes(self) -> bytes:
        proto = self._sp.serialized_model_proto() if self._sp is not None else b""
        return self._table.pack(proto) if self._table is not None else proto

    @classmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer":
        return cls(model_proto=bytes(data))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


@dataclass(frozen=True)
class TokenTable:
    """An imported model's vocabulary in its source order (see the module docstring).

    Attributes:
        tokens: the symbol of every id; ``tokens[0]`` is the CTC blank.
        unk_id / sos_eos_id: ids of ``<unk>`` and ``<sos/eos>``, None where the source has none.
        upper_case: text is upper-cased before splitting (the units are upper case, e.g. LibriSpeech recipes).
        detokenize: ``sentencepiece`` (decode pieces with the model), ``join_space`` (join, ``▁`` -> space,
            strip: WeNet's BPE), ``join`` (join as they are: WeNet's char units).
    """

    tokens: tuple[str, ...]
    unk_id: int | None = None
    sos_eos_id: int | None = None
    upper_case: bool = False
    detokenize: str = "join_space"

    def __post_init__(self) -> None:
        if len(self.tokens) < 2:
            raise ValueError(f"a token table needs at least blank and one token, got {len(self.tokens)}")
        if self.detokenize not in DETOKENIZE:
            raise ValueError(f"detokenize must be one of {', '.join(DETOKENIZE)}, got {self.detokenize!r}")

    def pack(self, sp_proto: bytes) -> bytes:
        head = json.dumps({"tokens": list(self.tokens), "unk_id": self.unk_id, "sos_eos_id": self.sos_eos_id,
                           "upper_case": self.upper_case, "detokenize": self.detokenize}).encode("utf-8")
        return _TABLE_MAGIC + len(head).to_bytes(4, "little") + head + sp_proto

    @classmethod
    def unpack(cls, data: bytes, what: str = "bytes") -> "tuple[TokenTable, bytes | None]":
        try:
            n = int.from_bytes(data[len(_TABLE_MAGIC):len(_TABLE_MAGIC) + 4], "little")
            start = len(_TABLE_MAGIC) + 4
            d = json.loads(data[start:start + n].decode("utf-8"))
            table = cls(tokens=tuple(d["tokens"]), unk_id=d["unk_id"], sos_eos_id=d["sos_eos_id"],
                        upper_case=bool(d["upper_case"]), detokenize=d["detokenize"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{what}: damaged token table ({e})") from None
        return table, (data[start + n:] or None)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike,
    model_type: str = "unigram",
    *,
    normalize: bool = True,
    input_sentence_size: int = 2_000_000,
    seed: int = 0,
) -> Tokenizer:
    """Train a SentencePiece model on ``texts`` and write ``tokenizer.model`` and ``tokens.txt`` to ``out_dir``.

    Args:
        texts: one utterance per item.
        vocab_size: exact SentencePiece vocabulary size N (including ``<unk>``); the model's output size
            is N + 2 (blank and sos/eos added, see the module docstring).
        out_dir: created if needed.
        model_type: ``unigram``, ``bpe`` or ``char``.
        normalize: apply :func:`normalize_text` to each text first.
        input_sentence_size: at most this many (randomly sampled) sentences are used.

    Raises:
        ValueError: unknown model type, an empty corpus, or a corpus too small for ``vocab_size``
            (the message says the largest size it supports).
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "tokenizer"

    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=out, delete=False, encoding="utf-8") as f:
        corpus = Path(f.name)
        n = 0
        for t in texts:
            t = normalize_text(t) if normalize else " ".join(t.split())
            if t:
                f.write(t + "\n")
                n += 1
    try:
        if n == 0:
            raise ValueError("cannot train a tokenizer on an empty corpus (no non-empty texts)")
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                unk_id=0,
                hard_vocab_limit=True,
                num_threads=max(1, os.cpu_count() or 1),
                minloglevel=2,  # errors only
            )
        except RuntimeError as e:
            msg = str(e)
            hi = re.search(r"value <= (\d+)", msg)
            lo = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
            if lo:
                hint = (f"; the corpus has more distinct characters than that: use at least {lo.group(1)} "
                        "(--vocab-size)")
            else:
                hint = (f"; the largest size this corpus supports is {hi.group(1)}" if hi else "") + \
                    " (use a smaller --vocab-size or more text)"
            raise ValueError(
                f"cannot train a {model_type} tokenizer with vocab_size={vocab_size} on {n} sentences{hint}. "
                f"SentencePiece said: {msg.strip()}"
            ) from None
    finally:
        corpus.unlink(missing_ok=True)
    tok = Tokenizer(prefix.with_suffix(".model"))
    if tok.vocab_size - 2 != vocab_size:  # the char model stops at the number of distinct characters
        raise ValueError(f"the {model_type} tokenizer has {tok.vocab_size - 2} pieces for this corpus, not the "
                         f"requested vocab_size={vocab_size}; use vocab_size={tok.vocab_size - 2}")
    tok.write_tokens_txt(out / "tokens.txt")
    log.info("trained %s tokenizer: %d pieces (+ blank, sos/eos) from %d sentences -> %s",
             model_type, vocab_size, n, out)
    return tok
