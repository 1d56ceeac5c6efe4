"""``slimasr lm``: build the word n-gram language model used by CTC beam search."""
from __future__ import annotations

import click


@click.group()
def lm() -> None:
    """Build a KenLM word n-gram language model for beam search decoding.

    \b
    Example:
      slimasr lm build --text data/synth8/lm_text.txt --order 4 --out exp/lm/lm.bin
    """


@lm.command()
@click.option("--text", "text", required=True, type=click.Path(dir_okay=False),
              help="UTF-8 text, one sentence a line (normalised like the tokenizer's training text).")
@click.option("--order", default=4, show_default=True, type=click.IntRange(min=1), help="N-gram order.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="lm.arpa (text) or lm.bin (KenLM binary, plus lm.unigrams.txt for the decoder).")
@click.option("--memory", default="10%", show_default=True,
              help="lmplz sorting memory (GNU sort syntax: 10%, 1G, ...).")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Normalise each line (lowercase words, no punctuation) before counting.")
def build(text: str, order: int, out: str, memory: str, normalize: bool) -> None:
    """Estimate an n-gram LM with KenLM's lmplz (modified Kneser-Ney, --discount_fallback for small corpora).

    \b
    Example:
      slimasr lm build --text data/synth8/lm_text.txt --order 4 --out exp/lm/lm.arpa    # from `slimasr data synth`
      slimasr decode --data data/synth8/test.jsonl --decoder beam --lm exp/lm/lm.arpa
    """
    from slimasr.fileutil import writable_output
    from slimasr.lm import KenLMToolMissing, build_lm

    try:
        writable_output(out, "--out", inputs=[text])
        path = build_lm(text, out, order, normalize=normalize, memory=memory)
    except (ValueError, KenLMToolMissing, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{order}-gram language model -> {path}")
