"""IncrementalHypothesis: the partial result kept chunk by chunk equals GreedyDecoder.hypothesis of every token so
far (text, tokens, timestamps, words) for each kind of vocabulary, and its work per chunk does not grow with the
stream's length."""
import random

import pytest

from slimasr.runtime.decoders import GreedyDecoder, IncrementalHypothesis, Vocabulary
from slimasr.tokenizer import Tokenizer, TokenTable

TEXTS = ["the cat sat on the mat", "a dog barked at the moon all night", "she sells sea shells by the sea shore",
         "peter piper picked a peck of pickled peppers", "naïve café owners serve crème brûlée"] * 20
PIECES = ("\u2581", "\u2581the", "\u2581a", "\u2581cat", "t", "s", "\u2581\u2581x", "ed", "\u2581on", "ing")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """A SentencePiece model with byte fallback (byte pieces, <unk>, a lone ▁)."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    (d / "corpus.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "m"), vocab_size=300,
                                   model_type="bpe", byte_fallback=True, bos_id=-1, eos_id=-1, pad_id=-1,
                                   unk_id=0, minloglevel=2)
    return (d / "m.model").read_bytes()


def _vocabularies(spm_model, tmp_path):
    from slimasr.tokenizer import train_tokenizer

    own = train_tokenizer(TEXTS, 40, tmp_path / "own")
    byte = Tokenizer(model_proto=spm_model)
    table = ("<blank>", "<unk>") + PIECES + ("<sos/eos>",)
    sp_table = ("<blank>",) + tuple(byte.pieces()[1:-1])
    return {
        "sentencepiece": Vocabulary.from_tokenizer(own),
        "sentencepiece-byte-fallback": Vocabulary.from_tokenizer(byte),
        "symbols": Vocabulary(("<blank>",) + PIECES + ("<sos/eos>",)),
        "table-join-space": Vocabulary.from_tokenizer(Tokenizer(table=TokenTable(table, 1, len(table) - 1))),
        "table-join": Vocabulary.from_tokenizer(Tokenizer(table=TokenTable(table, 1, len(table) - 1,
                                                                           detokenize="join"))),
        "table-sentencepiece": Vocabulary.from_tokenizer(Tokenizer(model_proto=spm_model, table=TokenTable(
            sp_table, 1, None, detokenize="sentencepiece"))),
    }


def test_incremental_equals_whole_hypothesis_after_every_chunk(spm_model, tmp_path):
    rng = random.Random(0)
    for name, vocab in _vocabularies(spm_model, tmp_path).items():
        dec = GreedyDecoder(vocab, frame_seconds=0.04)
        starts = [i for i, p in enumerate(vocab.symbols) if p.startswith("\u2581")]
        for _ in range(30):
            # word starts often, so that words finish, open and stay empty (a lone ▁) within one run
            n = rng.randint(0, 60)
            tokens = [rng.choice(starts) if rng.random() < 0.4 else rng.randrange(1, len(vocab)) for _ in range(n)]
            frames = sorted(rng.sample(range(5 * n + 1), n))
            inc = IncrementalHypothesis(dec)
            assert inc.hypothesis() == dec.hypothesis([], []), name
            k = 0
            while k < n:
                step = rng.randint(0, 6)
                inc.extend(tokens[k:k + step], frames[k:k + step])
                k += step
                assert inc.hypothesis() == dec.hypothesis(tokens[:k], frames[:k]), (name, tokens[:k])
            assert inc.received == n


def test_work_per_chunk_does_not_grow_with_the_stream():
    """Count the token ids detokenised per chunk: the same early and late in a 6,000-token stream, whereas
    rebuilding from every token detokenises them all."""
    vocab = Vocabulary(("<blank>",) + PIECES + ("<sos/eos>",))
    seen: list[int] = []
    text = vocab.text

    def counting_text(ids):
        seen.append(len(ids))
        return text(ids)

    vocab.text = counting_text
    vocab.words = None                      # never called per chunk
    dec = GreedyDecoder(vocab)
    rng = random.Random(1)
    words = [[1 + rng.choice([1, 2, 3, 8])] + [1 + rng.choice([4, 5, 7, 9]) for _ in range(rng.randint(0, 3))]
             for _ in range(2400)]          # ▁-pieces with text, up to 3 continuation pieces: words of <= 4 tokens
    tokens = [t for w in words for t in w]
    inc = IncrementalHypothesis(dec)
    per_chunk = []
    for k in range(0, len(tokens), 8):
        seen.clear()
        inc.extend(tokens[k:k + 8], range(k, k + 8))
        h = inc.hypothesis()
        per_chunk.append(sum(seen))
    assert len(tokens) > 5000 and len(h.tokens) == len(tokens)
    # each chunk: its 8 tokens (closing up to 8 words of <= 4 tokens, each joined with the previous word) and the
    # open word: at most 8 * 3 * 4 + 3 * 4 ids whatever came before
    assert max(per_chunk) <= 8 * 3 * 4 + 3 * 4
    assert max(per_chunk[-50:]) <= max(per_chunk[:50]) + 12
    seen.clear()
    vocab.words = Vocabulary.words.__get__(vocab)
    dec.hypothesis(tokens, range(len(tokens)))
    assert sum(seen) >= len(tokens)         # the whole rebuild: every token, every chunk
