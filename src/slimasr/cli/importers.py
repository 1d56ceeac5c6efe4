"""``slimasr import``: bring a Conformer CTC model trained with WeNet, ESPnet or NeMo into slimasr."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("import")
def import_() -> None:
    """Import a WeNet, ESPnet or NeMo Conformer CTC model as a slimasr model (.pt).

    The result is an ordinary slimasr model: decode, prune, train --init, export, bench and serve use it as they
    use a model slimasr trained. It keeps the source's token order and front-end, and records where it came from
    (`slimasr info --model MODEL.pt`).

    \b
    Example:
      slimasr import wenet exp/u2pp_conformer --out exp/imported.pt
      slimasr import espnet --config exp/asr_train/config.yaml --checkpoint exp/asr_train/valid.acc.ave.pth \\
          --out exp/imported.pt
      slimasr import nemo stt_en_fastconformer_ctc_small.nemo --out exp/imported.pt
      # a tiny WeNet model from slimasr's tests (run in a source checkout)
      slimasr import wenet tests/fixtures/import/wenet_u2pp_causal/model --out exp/imported.pt
    """


_DYNAMIC_CHUNK = click.option(
    "--dynamic-chunk", is_flag=True,
    help="Make `train --init` fine-tune the model with dynamic chunk training (WeNet U2: random chunk sizes and "
         "left contexts per batch), so that a model trained on whole utterances learns to stream. The imported "
         "weights are unchanged; stream it after that fine-tuning.")


def _check_out(out: str, *inputs) -> None:
    """Before the import: --out can be written and is none of the source files."""
    from slimasr.fileutil import writable_output

    try:
        writable_output(out, "--out", inputs=inputs)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _write(model, out: str, dynamic_chunk: bool = False) -> None:
    from slimasr.tokenizer import Tokenizer

    if dynamic_chunk and not model.config.dynamic_chunk:
        try:
            model.config = model.config.with_dynamic_chunk(True, model.frontend)
        except ValueError as e:
            raise click.ClickException(f"--dynamic-chunk: {e}") from None
        model.source = {**model.source, "dynamic_chunk": "enabled at import for fine-tuning"}
    path = model.save(out)
    src = model.source or {}
    cfg = model.config
    tok = Tokenizer.from_bytes(model.tokenizer_bytes)
    click.echo(f"imported {src.get('toolkit')} model: {cfg.num_layers} layers, d_model {cfg.d_model}, "
               f"{model.num_parameters(encoder_only=True) / 1e6:.2f}M encoder+CTC parameters, {cfg.vocab_size} "
               f"tokens, subsampling {cfg.subsampling} (x{cfg.subsampling_factor}), positions {cfg.pos_enc}"
               f"{', causal convolution' if cfg.causal_conv else ''}"
               f"{'' if cfg.streamable else ' (offline only)'}")
    click.echo(f"tokenizer: {tok.vocab_size} ids in source order; front-end: {model.frontend.kind} "
               f"(cmvn {model.frontend.cmvn}{'' if model.frontend.streamable else ', whole utterances only'})")
    click.echo(f"wrote {path}")


def _run(fn, *args) -> None:
    from slimasr.importers import ImportFailed

    try:
        return fn(*args)
    except (ImportFailed, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None


@import_.command("wenet")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Checkpoint to read instead of MODEL_DIR/final.pt (e.g. avg_10.pt).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output slimasr model (.pt).")
@_DYNAMIC_CHUNK
def wenet(model_dir, checkpoint, out, dynamic_chunk) -> None:
    """Import a WeNet Conformer (U2 / U2++) model folder: train.yaml, final.pt, global_cmvn, units.txt, BPE model.

    \b
    Example:
      slimasr import wenet exp/u2pp_conformer --out exp/imported.pt
      slimasr import wenet exp/u2pp_conformer --checkpoint exp/u2pp_conformer/avg_10.pt --out exp/imported.pt
      # a tiny WeNet model from slimasr's tests (run in a source checkout)
      slimasr import wenet tests/fixtures/import/wenet_u2pp_causal/model --out exp/imported.pt
    """
    from slimasr.importers import import_wenet

    _check_out(out, checkpoint)
    _write(_run(import_wenet, Path(model_dir), checkpoint), out, dynamic_chunk)


@import_.command("espnet")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="The training config.yaml of the espnet2 ASR model.")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Its model .pth.")
@click.option("--stats", type=click.Path(dir_okay=False),
              help="feats_stats.npz (default: normalize_conf.stats_file; only needed when the .pth lacks them).")
@click.option("--bpe", type=click.Path(dir_okay=False), help="bpe.model (default: the config's bpemodel).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output slimasr model (.pt).")
@_DYNAMIC_CHUNK
def espnet(config, checkpoint, stats, bpe, out, dynamic_chunk) -> None:
    """Import an espnet2 ASR model with a Conformer encoder (its CTC branch).

    \b
    Example:
      slimasr import espnet --config exp/asr_train/config.yaml --checkpoint exp/asr_train/valid.acc.ave.pth \\
          --out exp/imported.pt
      slimasr import espnet --config exp/asr_train/config.yaml --checkpoint exp/asr_train/valid.acc.ave.pth \\
          --dynamic-chunk --out exp/to-stream.pt     # then: slimasr train --init exp/to-stream.pt ...
      # a tiny ESPnet model from slimasr's tests (run in a source checkout)
      d=tests/fixtures/import/espnet_conformer/model/exp/asr_train_conformer_tiny_raw_en_bpe60
      slimasr import espnet --config $d/config.yaml --checkpoint $d/model.pth --out exp/imported-espnet.pt
    """
    from slimasr.importers import import_espnet

    _check_out(out, config, checkpoint, stats, bpe)
    _write(_run(import_espnet, config, checkpoint, stats, bpe), out, dynamic_chunk)


@import_.command("nemo")
@click.argument("nemo_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output slimasr model (.pt).")
def nemo(nemo_file, out) -> None:
    """Import a NeMo Conformer-CTC or FastConformer-CTC model (.nemo, plain or gzip tar).

    \b
    Example:
      slimasr import nemo stt_en_fastconformer_ctc_small.nemo --out exp/imported.pt
      # a tiny FastConformer from slimasr's tests (run in a source checkout)
      slimasr import nemo tests/fixtures/import/nemo_fastconformer_ctc/model/fastconformer_ctc_tiny.nemo \\
          --out exp/imported-nemo.pt
    """
    from slimasr.importers import import_nemo

    _check_out(out, nemo_file)
    _write(_run(import_nemo, nemo_file), out)
