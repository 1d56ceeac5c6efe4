"""``slimasr tokenizer``: train the subword tokenizer."""
from __future__ import annotations

import click


@click.group()
def tokenizer() -> None:
    """Train a SentencePiece tokenizer on manifest transcripts.

    \b
    Example:
      slimasr tokenizer train --data data/synth8/train.jsonl --vocab-size 256 --out exp/tokenizer
    """


@tokenizer.command()
@click.option("--data", "manifests", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Manifest(s) (JSON lines with a text field), or plain text files (.txt, one sentence a line).")
@click.option("--vocab-size", required=True, type=int,
              help="SentencePiece vocabulary size N; the model outputs N + 2 classes (blank, sos/eos added).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for tokenizer.model and tokens.txt.")
@click.option("--model-type", default="unigram", show_default=True, type=click.Choice(["unigram", "bpe", "char"]))
def train(manifests: tuple[str, ...], vocab_size: int, out_dir: str, model_type: str) -> None:
    """Train a tokenizer on the transcripts and write tokenizer.model and tokens.txt (sherpa-onnx format).

    \b
    Example:
      slimasr tokenizer train --data data/synth8/train.jsonl --vocab-size 256 --out exp/tokenizer
    """
    from pathlib import Path

    from slimasr.data.manifest import ManifestError, no_utterances, read_manifest
    from slimasr.tokenizer import train_tokenizer

    texts: list[str] = []
    for m in manifests:
        p = Path(m)
        if not p.is_file():
            raise click.ClickException(f"--data {m} does not exist (expected a JSON-lines manifest or a .txt file)")
        if p.suffix == ".txt":
            try:
                texts += p.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise click.ClickException(f"--data {m} is not UTF-8 text (byte {e.start}); expected one sentence "
                                           "a line") from None
            continue
        bad: list[ManifestError] = []
        try:
            rows = read_manifest(p, resolve=False, skipped=bad)
        except ManifestError as e:
            raise click.ClickException(str(e)) from None
        if bad and not rows:                         # not a manifest at all (e.g. an audio file): one line, not one
            raise click.ClickException(str(no_utterances(p, bad)))        # per malformed row
        texts += [r["text"] for r in rows]
        for e in bad:                                # named and skipped; the other texts are used
            click.echo(f"skipped {e}", err=True)
    try:
        tok = train_tokenizer(texts, vocab_size, out_dir, model_type=model_type)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{model_type} tokenizer, {vocab_size} pieces (model vocabulary {tok.vocab_size} with blank and "
               f"sos/eos), from {len(texts)} texts -> {Path(out_dir) / 'tokenizer.model'}, "
               f"{Path(out_dir) / 'tokens.txt'}")
