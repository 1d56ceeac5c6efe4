"""``slimasr export``: ONNX (sherpa-onnx compatible, optional int8) and TensorRT engines."""
from __future__ import annotations

import click


@click.group()
def export() -> None:
    """Export a model to ONNX (offline or streaming, sherpa-onnx's WeNet CTC interface) or TensorRT.

    \b
    Example:
      slimasr export onnx --out exp/onnx-streaming --streaming --chunk-size 16 --left-chunks 4    # the default model
      slimasr export tensorrt --onnx exp/onnx-streaming --out exp/trt-streaming --fp16
    """


def _load(model_path: str | None):
    from slimasr.model import load_model

    try:
        return load_model(model_path)
    except FileNotFoundError as e:
        if model_path is None:
            raise click.ClickException(f"no --model given and no default model to fall back on: {e}") from None
        raise click.ClickException(f"--model {model_path}: {e}") from None
    except ValueError as e:
        raise click.ClickException(f"--model {model_path}: {e}") from None


@export.command("onnx")
@click.option("--model", "model_path", type=click.Path(),
              help="slimasr model or training checkpoint (.pt), pruned or not. Default: the embedded model.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (must not exist, or be empty, unless --force).")
@click.option("--streaming", is_flag=True,
              help="Export the streaming (chunk-by-chunk) graph instead of the offline one.")
@click.option("--chunk-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Streaming: encoder frames per chunk (40 ms each).")
@click.option("--left-chunks", default=4, show_default=True, type=click.IntRange(min=1),
              help="Streaming: chunks of attention history (>= 1).")
@click.option("--batched", is_flag=True,
              help="Streaming: also write model.batched.onnx, the same graph with a stream axis, so a server "
                   "decodes the ready chunks of many streams in one call (sherpa-onnx uses model.onnx).")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (dynamic quantization, int8 weights).")
@click.option("--int8-ops", default="MatMul", show_default=True,
              help="Comma-separated op types to quantize with --int8 (MatMul, Conv, Gemm).")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset (14..20).")
@click.option("--force", is_flag=True, help="Overwrite an earlier export in --out.")
def onnx(model_path, out_dir, streaming, chunk_size, left_chunks, batched, int8, int8_ops, opset,
         force) -> None:
    """Export to ONNX: model.onnx, tokens.txt, slimasr_export.json (+ model.int8.onnx, tokenizer.model).

    The offline graph maps (x, x_lens) to (log_probs, log_probs_lens); the streaming graph is the six-input
    WeNet CTC interface that sherpa-onnx's OnlineRecognizer.from_wenet_ctc runs.

    \b
    Example:
      slimasr export onnx --out exp/onnx                     # the default model, offline graph
      slimasr export onnx --model exp/pruned.pt --out exp/onnx-streaming --streaming --chunk-size 16 --int8
      slimasr export onnx --out exp/onnx-serve --streaming --batched
    """
    import warnings
    from pathlib import Path

    from slimasr.export.onnx import export_onnx
    from slimasr.model.config import StreamingRefused

    if batched and not streaming:
        raise click.ClickException("--batched is a streaming graph: add --streaming")
    model = _load(model_path)
    ops = tuple(o.strip() for o in int8_ops.split(",") if o.strip())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            written = export_onnx(model, out_dir, streaming=streaming, chunk_size=chunk_size,
                                  left_chunks=left_chunks, int8=int8, opset=opset, force=force, int8_op_types=ops)
            if batched:
                from slimasr.export.batched import export_batched_streaming

                written.update(export_batched_streaming(model, out_dir))
        except StreamingRefused as e:
            raise click.ClickException(f"--model {model_path or 'default'}: {e}; export it offline (without "
                                       "--streaming)") from None
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:                                    # e.g. a read-only or missing parent folder
            raise click.ClickException(f"--out {out_dir}: cannot write the export ({e.strerror or e}"
                                       f"{f': {e.filename}' if e.filename else ''})") from None
    from slimasr.export.onnx import UntrainedChunkSizeWarning

    for w in caught:
        if issubclass(w.category, UntrainedChunkSizeWarning):
            click.echo(f"Warning: {w.message}", err=True)
    kind = "streaming" if streaming else "offline"
    cfg = model.config
    kept = f" (kept original layers {list(cfg.original_layers)})" if cfg.original_layers is not None else ""
    click.echo(f"{kind} ONNX export of a {cfg.num_layers}-layer model{kept} -> {Path(out_dir)}")
    for key, p in written.items():
        click.echo(f"  {p.name:24s} {p.stat().st_size / 1e6:9.3f} MB")
    if "model_int8" in written:
        f, q = written["model"].stat().st_size, written["model_int8"].stat().st_size
        click.echo(f"  int8 ({','.join(ops)}): {q / f:.1%} of the float model's size")
    if streaming:
        click.echo(sherpa_onnx_line(model.frontend, chunk_size, left_chunks))


def sherpa_onnx_line(frontend, chunk_size: int, left_chunks: int) -> str:
    """How sherpa-onnx runs a streaming export: its recognizer call, or why it cannot as is (the graph has
    sherpa-onnx's interface, but sherpa-onnx computes Kaldi fbank itself with fixed settings)."""
    from slimasr.decoding import sherpa_frontend_refusal

    why = sherpa_frontend_refusal(frontend)
    if why is not None:
        return f"  sherpa-onnx: not as is: {why}"
    return (f"  sherpa-onnx: OnlineRecognizer.from_wenet_ctc(model=..., tokens=..., chunk_size={chunk_size}, "
            f"num_left_chunks={left_chunks})")


@export.command("tensorrt")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(file_okay=False),
              help="A directory written by `slimasr export onnx` (its float model.onnx is used).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (must not exist, or be empty, unless --force).")
@click.option("--fp16", is_flag=True, help="Allow FP16 kernels (normalization stays FP32).")
@click.option("--min-shapes", default=None, help="Profile minimum, e.g. x:1x7x80,x_lens:1 (default from the export).")
@click.option("--opt-shapes", default=None, help="Profile optimum, e.g. x:1x1000x80,x_lens:1.")
@click.option("--max-shapes", default=None, help="Profile maximum, e.g. x:8x6000x80,x_lens:8.")
@click.option("--workspace-gib", default=4.0, show_default=True, type=float, help="Builder workspace limit.")
@click.option("--force", is_flag=True, help="Overwrite an earlier build in --out.")
def tensorrt(onnx_dir, out_dir, fp16, min_shapes, opt_shapes, max_shapes, workspace_gib, force) -> None:
    """Build a TensorRT engine (model.engine) from an ONNX export; needs a CUDA GPU and TensorRT.

    Dynamic axes get one optimization profile: offline defaults cover 1..8 utterances of up to 60 s; streaming
    shapes are fixed by the export's chunk size and left chunks. Install TensorRT with
    pip install 'slimasr[tensorrt]'.

    \b
    Example:
      slimasr export tensorrt --onnx exp/onnx --out exp/trt --fp16 --max-shapes x:4x3000x80,x_lens:4
      slimasr export tensorrt --onnx exp/onnx-streaming --out exp/trt-streaming
    """
    from slimasr.export.tensorrt import TensorRTUnavailableError, build_engines

    try:
        written = build_engines(onnx_dir, out_dir, fp16=fp16, min_shapes=min_shapes, opt_shapes=opt_shapes,
                                max_shapes=max_shapes, workspace_gib=workspace_gib, force=force)
    except (TensorRTUnavailableError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"TensorRT engine ({'fp16' if fp16 else 'fp32'}) -> {written['engine']} "
               f"({written['engine'].stat().st_size / 1e6:.2f} MB)")
