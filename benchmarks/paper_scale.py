"""Speed and memory at the paper's scale: the 20-layer d=512 ``paper`` config and its pruned versions, on CPU.

The models have random weights (seed 0) and the default model's tokenizer, front-end and CMVN, so WER is not
meaningful for them (marked n/a): these runs measure speed and memory only. The ``paper`` config's 2048-unit
CTC head is replaced by the default tokenizer's 258 units (0.4% of the 20-layer model's FLOPs at 2048 units).

Parts (``--part``, repeatable; each writes its own JSON under ``--out`` and ``report`` renders them all):

* ``models``: ``p20`` (the ``paper`` config), ``p16`` and ``p12`` (layers removed with
  :func:`slimasr.prune.surgery.remove_layers`) and ``p12-dw`` (``p12`` with the ``dw_striding4`` front-end,
  :func:`slimasr.prune.surgery.switch_subsampling`), saved under ``--work``; with ``--models``, also imported
  architectures at their published sizes, random weights (seed 0): ``nemo-fc-l`` (NeMo FastConformer-CTC Large,
  :func:`nemo_fastconformer_large_yaml`; offline only: NeMo normalises features per utterance) and ``wenet-u2pp``
  (WeNet's LibriSpeech U2++ Conformer, :func:`wenet_u2pp_conformer_yaml`; offline and chunked). Their configs,
  vocabularies and front-ends come from the importers' own YAML mapping (:func:`slimasr.importers.nemo.
  nemo_model_config` and :func:`slimasr.importers.wenet.wenet_model_config` with their token-table and front-end
  functions), applied to the toolkit's YAML with the published hyperparameters.
* ``table``: :func:`slimasr.bench.run_benchmark` (what ``slimasr bench`` runs) of every model x torch / onnx /
  onnx-int8 x offline / chunked (chunk 16, 4 left chunks) and the paper's streaming setting (chunk 64, hop 32,
  128 left feature frames = chunk 16, hop 8, 2 left chunks of 40 ms encoder frames; onnx backends, the torch
  backend has no hop), ``--rounds`` interleaved rounds, x the physical floor (:mod:`slimasr.bench.flops`) and
  the front-end's FLOP share. -> ``table.json``.
* ``int8``: dynamic int8 with one scale per weight tensor (the export's default) against one per output channel
  (:mod:`slimasr.export.quantize`): speed on ``p20`` offline and chunked, offline WER of the default model on the
  ``--wer-data`` manifest. -> ``int8.json``.
* ``growth``: RTF and peak memory against utterance length (``--small-offline``, ``--small-stream``,
  ``--paper-offline``, ``--paper-stream``, seconds), one utterance made by repeating the ``--data`` clips, one
  process per point (torch offline, onnx offline up to ``--onnx-offline-max`` s, onnx chunked 16/4).
  -> ``growth.json``.
* ``report``: ``paper_scale.md`` and ``paper_scale.png`` from the JSON files present.

Every JSON records the machine (CPU flags, load average at start and end of each run).

Example (the settings of the committed results; see ``paper_scale.md`` for the exact settings and the load during
each part). ``--data`` and ``--wer-data`` are the README's corpus (``data/synth8``; its test split is held out from
the default model's training); the committed results were measured on an earlier corpus, ``data/synth/test.jsonl``
and ``data/synth_eval/train.jsonl`` (147 utterances), that the current ``data synth`` recipe no longer makes::

    slimasr data synth --out data/synth8 --hours 8 --seed 0 --piper-fraction 0
    python benchmarks/paper_scale.py --part models --part table --part int8 --part growth --part report \\
        --data data/synth8/test.jsonl --wer-data data/synth8/test.jsonl --limit 4 --rounds 2 \\
        --out benchmarks/results/paper_scale --work exp/paper_scale

The imported architectures beside p20 (``benchmarks/results/paper_scale_imported``)::

    python benchmarks/paper_scale.py --part table --models p20,nemo-fc-l,wenet-u2pp --groups 0 \
        --data data/synth8/test.jsonl --limit 4 --rounds 2 \
        --out benchmarks/results/paper_scale_imported --work exp/paper_scale_imported
    python benchmarks/paper_scale.py --part report --out benchmarks/results/paper_scale_imported
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

PARTS = ("models", "table", "int8", "growth", "report")
DATA = "data/synth8/test.jsonl"            # the test split of the README's corpus, made by DATA_COMMAND
DATA_COMMAND = "slimasr data synth --out data/synth8 --hours 8 --seed 0 --piper-fraction 0"
MODELS = ("p20", "p16", "p12", "p12-dw")
# imported architectures at their published sizes (random weights): label -> what it is
IMPORTED = {"nemo-fc-l": "NeMo FastConformer-CTC Large", "wenet-u2pp": "WeNet U2++ Conformer (LibriSpeech)"}
BACKENDS = ("torch", "onnx", "onnx-int8")
# the paper's streaming setting (Bekal et al., 2023, Section 4) in 40 ms encoder frames
PAPER_CHUNKING = {"chunk_size": 16, "hop": 8, "left_chunks": 2}


# ---------------------------------------------------------------------------------------------- models
def _remove_spread(n: int, keep: int) -> list[int]:
    """Indices of ``n - keep`` layers spread evenly over the stack (which layers goes not matter for speed)."""
    kept = {round(i * (n - 1) / (keep - 1)) for i in range(keep)}
    return [i for i in range(n) if i not in kept]


def build_models(work: Path, labels=MODELS) -> dict[str, str]:
    """Model files under ``work`` for ``labels`` (built where missing): the ``paper`` models together, each
    imported architecture on its own."""
    work.mkdir(parents=True, exist_ok=True)
    for label in labels:
        if label in IMPORTED and not (work / f"{label}.pt").is_file():
            build_imported(label).save(work / f"{label}.pt")
    paths = {m: work / f"{m}.pt" for m in MODELS}
    if any(m in MODELS for m in labels) and not all(p.is_file() for p in paths.values()):
        _build_paper_models(paths)
    return {m: str(work / f"{m}.pt") for m in (*MODELS, *IMPORTED) if (work / f"{m}.pt").is_file()}


def _build_paper_models(paths: dict[str, Path]) -> None:
    import torch

    from slimasr.model import load_model
    from slimasr.model.asr import ASRModel
    from slimasr.model.config import PAPER
    from slimasr.prune.surgery import remove_layers, switch_subsampling

    default = load_model(None)
    torch.manual_seed(0)
    p20 = ASRModel(PAPER.replace(vocab_size=default.config.vocab_size)).eval()
    p20.attach_tokenizer(default.tokenizer_bytes)
    p20.set_frontend(default.frontend)
    p20.set_cmvn(default.encoder.cmvn_mean, default.encoder.cmvn_istd)
    p16 = remove_layers(p20, _remove_spread(20, 16))
    p12 = remove_layers(p20, _remove_spread(20, 12))
    for label, m in (("p20", p20), ("p16", p16), ("p12", p12), ("p12-dw", switch_subsampling(p12, "dw_striding4"))):
        m.save(paths[label])


# ---------------------------------------------------------------------------------------------- imported models
# Toolkit configurations at their published sizes, as the toolkits' own YAML (the keys and values of the files
# named below; training-only sections left out). They go through the importers' own YAML mapping
# (slimasr.importers.nemo / .wenet); the weights are random.
def nemo_fastconformer_large_yaml() -> dict:
    """``model_config.yaml`` of NeMo's FastConformer-CTC Large (``stt_en_fastconformer_ctc_large``, "around 115M
    parameters"): the encoder of ``examples/asr/conf/fastconformer/fast-conformer_ctc_bpe.yaml`` (d_model 512,
    8 heads, FFN 4 x 512, 18 layers, conv kernel 9, xscaling, dw_striding x8 with 256 channels; the file's size
    table says 17 layers for "Large", but 17 layers make 109M parameters and 18 make 115.6M, which is what the
    released 463 MB checkpoint holds in fp32), 80 mel bins (n_fft 512, 25 ms / 10 ms), per-feature
    normalisation, and the 1024-unit vocabulary the file recommends for 10k+ hours. The SentencePiece model is
    replaced by 1024 placeholder units in ``decoder.vocabulary`` (NeMo's character-model form): only the head's
    size matters for speed."""
    return {
        "target": "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE", "sample_rate": 16000,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025,
                         "window_stride": 0.01, "window": "hann", "features": 80, "n_fft": 512, "log": True,
                         "frame_splicing": 1, "dither": 1e-5, "pad_to": 0, "pad_value": 0.0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
                    "n_layers": 18, "d_model": 512, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": 256, "causal_downsampling": False, "ff_expansion_factor": 4,
                    "self_attention_model": "rel_pos", "n_heads": 8, "att_context_size": [-1, -1],
                    "att_context_style": "regular", "xscaling": True, "untie_biases": True, "pos_emb_max_len": 5000,
                    "conv_kernel_size": 9, "conv_norm_type": "batch_norm", "conv_context_size": None,
                    "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 512, "num_classes": 1024,
                    "vocabulary": [f"u{i:04d}" for i in range(1024)]},
    }


def wenet_u2pp_conformer_yaml() -> dict:
    """``train.yaml`` of WeNet's LibriSpeech U2++ Conformer: ``examples/librispeech/s0/conf/
    train_u2++_conformer.yaml`` (12 blocks, d 256, 4 heads, FFN 2048, conv2d x4, kernel 15, causal convolution,
    LayerNorm conv norm, dynamic chunk training), 80-bin fbank, global CMVN, with what ``wenet/bin/train.py``
    adds (``input_dim``, ``output_dim``) for the recipe's 5000-unit unigram SentencePiece model (``run.sh``
    ``nbpe=5000``; see :func:`wenet_u2pp_units`)."""
    return {
        "encoder": "conformer",
        "encoder_conf": {"output_size": 256, "attention_heads": 4, "linear_units": 2048, "num_blocks": 12,
                         "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                         "input_layer": "conv2d", "normalize_before": True, "cnn_module_kernel": 15,
                         "use_cnn_module": True, "activation_type": "swish", "pos_enc_layer_type": "rel_pos",
                         "selfattention_layer_type": "rel_selfattn", "causal": True, "use_dynamic_chunk": True,
                         "cnn_module_norm": "layer_norm", "use_dynamic_left_chunk": False},
        "decoder": "bitransformer", "input_dim": 80, "output_dim": len(wenet_u2pp_units()),
        "cmvn_file": "global_cmvn", "is_json_cmvn": True,
        "dataset_conf": {"fbank_conf": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0}},
    }


def wenet_u2pp_units() -> list[str]:
    """The recipe's ``units.txt`` layout (``run.sh`` stage 2): ``<blank>`` 0, ``<unk>`` 1, the pieces of a
    5000-unit unigram model other than its own ``<unk>``, ``<s>``, ``</s>`` (placeholders here), ``<sos/eos>``
    last."""
    return ["<blank>", "<unk>", *(f"\u2581u{i:04d}" for i in range(5000 - 3)), "<sos/eos>"]


def _nemo_filterbank(conf: dict):
    """(1, features, n_fft // 2 + 1) mel filterbank as NeMo's preprocessor computes it (``librosa.filters.mel``,
    Slaney scale and norm, 0 Hz to Nyquist), which a ``.nemo`` stores as ``preprocessor.featurizer.fb``."""
    import torchaudio

    p = conf["preprocessor"]
    fb = torchaudio.functional.melscale_fbanks(p["n_fft"] // 2 + 1, 0.0, p["sample_rate"] / 2, p["features"],
                                               p["sample_rate"], norm="slaney", mel_scale="slaney")
    return fb.T[None].contiguous()


def imported_config(label: str):
    """``(ModelConfig, FrontendConfig, TokenTable, source YAML)`` of an imported-architecture model, made by the
    importer's own mapping from the toolkit YAML (no weights)."""
    from slimasr.importers.nemo import nemo_frontend, nemo_model_config, nemo_token_table
    from slimasr.importers.wenet import wenet_frontend, wenet_model_config, wenet_token_table

    if label == "nemo-fc-l":
        conf, path = nemo_fastconformer_large_yaml(), Path("stt_en_fastconformer_ctc_large.nemo")
        table, _ = nemo_token_table(conf, path, {})
        return nemo_model_config(conf, path, table), nemo_frontend(conf, path, _nemo_filterbank(conf)), table, conf
    if label == "wenet-u2pp":
        conf, path = wenet_u2pp_conformer_yaml(), Path("librispeech_u2pp_conformer/train.yaml")
        table = wenet_token_table(wenet_u2pp_units(), conf, path, bpe=True)
        return wenet_model_config(conf, path, table), wenet_frontend(conf, path), table, conf
    raise ValueError(f"unknown imported model {label!r}; expected one of {', '.join(IMPORTED)}")


def build_imported(label: str):
    """The imported-architecture model ``label`` with random weights (seed 0), assembled as the importer assembles
    an import (:func:`slimasr.importers.common.build_model`: tokenizer, front-end, provenance)."""
    import torch

    from slimasr.importers.common import build_model
    from slimasr.model.asr import ASRModel

    cfg, frontend, table, _ = imported_config(label)
    torch.manual_seed(0)
    weights = ASRModel(cfg).state_dict()
    source = {"toolkit": IMPORTED[label].split(" ")[0].lower(), "model": IMPORTED[label],
              "weights": "random (seed 0): published hyperparameters, speed and memory only"}
    return build_model(cfg, weights, Path(label), table, None, source, frontend)


# ---------------------------------------------------------------------------------------------- table
def _frontend_share(cfg_dict: dict, mode: str, durations, chunking: dict) -> float:
    from slimasr.bench.flops import flops_per_audio_second
    from slimasr.model.config import ModelConfig

    cfg = ModelConfig.from_dict(cfg_dict)
    return flops_per_audio_second(cfg, mode, durations, chunking["chunk_size"], chunking["left_chunks"],
                                  hop=chunking.get("hop"))["frontend_share"]


def run_table(paths: dict, args) -> dict:
    from slimasr.bench import ModelSpec, plan_runs, run_benchmark
    from slimasr.bench.runner import load_rows
    from slimasr.model import load_model

    models = [ModelSpec(label, paths[label]) for label in args.models]
    common = dict(data=args.data, threads=args.threads, limit=args.limit, warmup=args.warmup, feed_ms=100)
    groups = {
        "offline + chunked 16/4": lambda: plan_runs(models, BACKENDS, ("offline", "chunked"), chunk_size=16,
                                                    left_chunks=4, **common),
        "paper chunking (chunk 16, hop 8, 2 left chunks)": lambda: plan_runs(
            [m for m in models if m.label in args.paper_chunking_models], ("onnx", "onnx-int8"), ("chunked",),
            **PAPER_CHUNKING, **common),
    }
    groups = {name: plan() for i, (name, plan) in enumerate(groups.items()) if i in args.groups}
    groups = {name: specs for name, specs in groups.items() if specs}      # e.g. no model for the paper chunking
    durations = [r["duration"] for r in load_rows(args.data, args.limit)]
    configs = {label: load_model(paths[label]).config.to_dict() for label in args.models}
    out = {"uptime_start": _uptime(), "groups": {}}
    for name, specs in groups.items():
        t0 = time.time()
        res = run_benchmark(specs, work_dir=args.work / "exports", rounds=args.rounds, timeout=args.timeout)
        res["wall_s"] = time.time() - t0
        chunking = {k: getattr(specs[0], k) for k in ("chunk_size", "left_chunks", "hop")}
        for row in res["runs"]:
            if "skipped" not in row:        # e.g. chunked rows of a model that cannot stream
                row["frontend_flops_share"] = _frontend_share(configs[row["model"]], row["mode"], durations,
                                                              chunking)
            row["subsampling"] = configs[row["model"]]["subsampling"]
            row["wer"] = row["cer"] = None          # random weights: not meaningful
        out["groups"][name] = res
        (args.out / f"{args.table_name}.partial.json").write_text(json.dumps(out, indent=1) + "\n")
    out["uptime_end"] = _uptime()
    return out


# ---------------------------------------------------------------------------------------------- int8
def _per_channel_copy(src_dir: Path, dst_dir: Path) -> Path:
    """``dst_dir``: the export ``src_dir`` (hard links) with its model.int8.onnx re-quantized with one scale per
    output channel."""
    from slimasr.export.quantize import QuantizeConfig, quantize

    dst_dir.mkdir(parents=True, exist_ok=True)
    for f in src_dir.iterdir():
        if f.name != "model.int8.onnx" and f.is_file() and not (dst_dir / f.name).exists():
            os.link(f, dst_dir / f.name)
    if not (dst_dir / "model.int8.onnx").is_file():
        quantize(src_dir / "model.onnx", dst_dir / "model.int8.onnx", QuantizeConfig(per_channel=True))
    return dst_dir


def _int8_runs(label: str, path: str | None, modes, data: str, args, limit) -> dict:
    """fp32, per-tensor int8 and per-channel int8 runs of one model, ``args.rounds`` interleaved rounds (the
    loop of :func:`slimasr.bench.run_benchmark`, with the per-channel file in its own export directory)."""
    from slimasr.bench import ModelSpec, plan_runs
    from slimasr.bench.runner import _Models, aggregate, run_subprocess

    models = _Models(args.work / "exports")
    specs = []
    for spec in plan_runs([ModelSpec(label, path)], ("onnx", "onnx-int8"), modes, data=data, threads=args.threads,
                          limit=limit, warmup=args.warmup, chunk_size=16, left_chunks=4):
        d = models.export(spec)
        specs.append((f"{label}", dataclasses.replace(spec, export_dir=str(d))))
        if spec.backend == "onnx-int8":
            pc = _per_channel_copy(d, args.work / "perchannel" / _safe_name(label) / d.name)
            specs.append((f"{label}-perchannel", dataclasses.replace(spec, model=f"{label}-perchannel",
                                                                      export_dir=str(pc))))
    parts: dict = {i: [] for i in range(len(specs))}
    for r in range(args.rounds):
        for i, (_, spec) in enumerate(specs):
            parts[i].append(run_subprocess(dataclasses.replace(spec, shard=r, shards=args.rounds), args.timeout))
    rows = []
    for i, (name, spec) in enumerate(specs):
        res = aggregate(spec, parts[i])
        res.pop("hypotheses", None)
        rows.append({"model": name, "backend": spec.backend, "mode": spec.mode, "layers": None, **res,
                     **({"chunk_size": spec.chunk_size, "left_chunks": spec.left_chunks, "hop": spec.chunk_size}
                        if spec.mode == "chunked" else {})})
    return {"runs": rows, "rounds": args.rounds, "data": data, "limit": limit}


def _safe_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def run_int8(paths: dict, args) -> dict:
    out = {"uptime_start": _uptime()}
    res = _int8_runs("p20", paths["p20"], ("offline", "chunked"), args.data, args, args.limit)
    for row in res["runs"]:
        row["wer"] = row["cer"] = None                  # random weights
    out["paper_speed"] = res
    if args.wer_data:
        out["default_wer"] = _int8_runs("default", None, ("offline",), args.wer_data, args, None)
    out["uptime_end"] = _uptime()
    return out


# ---------------------------------------------------------------------------------------------- growth
def _long_manifest(data: str, seconds: float, out_dir: Path) -> str:
    """A manifest of one utterance of ``seconds`` (the ``data`` clips repeated) after a 1 s warm-up clip whose
    name sorts first (the benchmark's warm-up decodes it; its measurement is dropped)."""
    import numpy as np
    import soundfile as sf

    from slimasr.audio import load_audio
    from slimasr.bench.runner import SAMPLE_RATE, load_rows

    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    long_wav, warm_wav = out_dir / f"b_{seconds:g}s.wav", out_dir / "a_warmup_1s.wav"
    rows = load_rows(data)
    if not long_wav.is_file() or not warm_wav.is_file():
        clips = [load_audio(r["audio_filepath"]) for r in rows]
        n = int(seconds * SAMPLE_RATE)
        reps = np.concatenate(clips)
        wave = np.tile(reps, n // len(reps) + 1)[:n]
        sf.write(long_wav, wave, SAMPLE_RATE, subtype="PCM_16")
        sf.write(warm_wav, reps[:SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    manifest = out_dir / f"growth_{seconds:g}s.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(p), "duration": d, "text": "n/a"}) + "\n"
                                for p, d in ((warm_wav, 1.0), (long_wav, float(seconds)))))
    return str(manifest)


def _growth_point(model_label: str, model_path: str | None, backend: str, mode: str, seconds: float, args) -> dict:
    from slimasr.bench import ModelSpec, plan_runs
    from slimasr.bench.runner import _Models, run_subprocess

    manifest = _long_manifest(args.data, seconds, args.work / "growth")
    spec = plan_runs([ModelSpec(model_label, model_path)], (backend,), (mode,), data=manifest, threads=args.threads,
                     chunk_size=16, left_chunks=4, warmup=1)[0]
    if backend != "torch":
        spec = dataclasses.replace(spec, export_dir=str(_Models(args.work / "exports").export(spec)))
    load = _uptime()
    t0 = time.time()
    try:
        res = run_subprocess(spec, timeout=args.timeout)
    except Exception as e:  # noqa: BLE001 - recorded, the curve goes on
        return {"model": model_label, "backend": backend, "mode": mode, "seconds": seconds, "error": str(e)[-400:],
                "uptime": load}
    utt = res["utts"][-1]                    # the long utterance (the 1 s clip was also timed: dropped)
    return {"model": model_label, "backend": backend, "mode": mode, "seconds": seconds, "audio_s": utt["audio_s"],
            "compute_s": utt["compute"], "rtf": utt["compute"] / utt["audio_s"], "peak_rss_mb": res["peak_rss_mb"],
            "model_file_mb": res.get("model_file_mb"),
            "peak_rss_before_model_mb": res["peak_rss_before_model_mb"], "wall_s": time.time() - t0,
            "uptime": load, "uptime_end": _uptime()}


# The ONNX offline graph holds whole (heads, T', T') attention score matrices; the measured peaks of both models
# grew from 10 s to 60 s by 6.6-7 score matrices of one layer (scores, masked scores, softmax, and what the memory
# planner keeps alive), so a point is predicted at this many.
ONNX_SCORE_COPIES = 7


def _config(label: str, path: str | None):
    from slimasr.model import load_model

    return load_model(path).config


def predict_point(cfg, backend: str, mode: str, seconds: float, model_file_mb: float, done: list[dict]) -> dict:
    """What a growth point is expected to cost before it runs: encoder frames T' (after subsampling), the attention
    scores of one layer (heads x T'^2 x 4 bytes), predicted peak memory (onnx offline: the model twice, as
    onnxruntime loads it, plus ``ONNX_SCORE_COPIES`` score matrices; torch offline computes attention in query
    blocks and chunked decoding a fixed window, so their memory does not grow with T) and compute seconds (the
    point's FLOPs, :mod:`slimasr.bench.flops`, at the FLOP rate of the longest point of the same series already
    measured; None before any)."""
    from slimasr.bench.flops import FRAMES_PER_SECOND, flops_per_audio_second
    from slimasr.chunking import output_frames

    t_enc = output_frames(round(seconds * FRAMES_PER_SECOND), cfg.subsampling_factor, cfg.right_context)
    scores = cfg.num_heads * t_enc ** 2 * 4 if mode == "offline" else None     # chunked: a fixed window
    peak = None
    if backend == "onnx" and mode == "offline":
        peak = 2 * model_file_mb + ONNX_SCORE_COPIES * scores / 2 ** 20
    kw = dict(chunk_size=16, left_chunks=4)
    flops = flops_per_audio_second(cfg, mode, [seconds], **kw)["total"] * seconds
    ref = max((p for p in done if (p["backend"], p["mode"]) == (backend, mode) and "rtf" in p),
              key=lambda p: p["audio_s"], default=None)
    est = None
    if ref:
        rate = flops_per_audio_second(cfg, mode, [ref["audio_s"]], **kw)["total"] * ref["audio_s"] / ref["compute_s"]
        est = flops / rate
    return {"encoder_frames": t_enc, "scores_per_layer_mb": scores and scores / 2 ** 20, "predicted_peak_mb": peak,
            "predicted_compute_s": est, "flops": flops}


def _memory_mb() -> float:
    """Memory available to a new process now (MiB, ``MemAvailable``: other processes' memory excluded)."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 1024


def run_growth(paths: dict, args) -> dict:
    out_file = args.out / "growth.json"
    done = json.loads(out_file.read_text()) if out_file.is_file() else {"points": []}
    budget_mb = args.memory_fraction * _memory_mb()
    done["limits"] = {"memory_mb": budget_mb, "point_s": args.point_limit}
    plan = []
    for label, path, offline, stream in (("small (default)", None, args.small_offline, args.small_stream),
                                         ("p20", paths["p20"], args.paper_offline, args.paper_stream)):
        for s in offline:
            plan += [(label, path, "torch", "offline", s), (label, path, "onnx", "offline", s)]
        for s in stream:
            plan.append((label, path, "onnx", "chunked", s))
    have = {(p["model"], p["backend"], p["mode"], p["seconds"]) for p in done["points"] if "rtf" in p}
    planned = {(label, backend, mode, s) for label, _, backend, mode, s in plan}
    done["points"] = [p for p in done["points"]                          # this plan's skips and failures run again
                      if "rtf" in p or (p["model"], p["backend"], p["mode"], p["seconds"]) not in planned]
    configs = {}
    for label, path, backend, mode, s in sorted(plan, key=lambda p: p[4]):
        if (label, backend, mode, s) in have:
            continue
        cfg = configs.setdefault(label, _config(label, path))
        series = [p for p in done["points"] if p["model"] == label and "rtf" in p]
        file_mb = max((p.get("model_file_mb") or 0 for p in series if p["backend"] == backend), default=0) or \
            (Path(path).stat().st_size / 2 ** 20 if path else 30.0)
        pred = predict_point(cfg, backend, mode, s, file_mb, series)
        why = None
        if pred["predicted_peak_mb"] and pred["predicted_peak_mb"] > budget_mb:
            why = (f"predicted peak {pred['predicted_peak_mb'] / 1024:.1f} GiB ({cfg.num_heads} heads x "
                   f"{pred['encoder_frames']}^2 x 4 B = {pred['scores_per_layer_mb'] / 1024:.2f} GiB of scores per "
                   f"layer, {ONNX_SCORE_COPIES} alive) > {budget_mb / 1024:.1f} GiB")
        elif pred["predicted_compute_s"] and pred["predicted_compute_s"] > args.point_limit:
            why = (f"predicted {pred['predicted_compute_s']:.0f} s of compute ({pred['flops'] / 1e12:.1f} TFLOP at "
                   f"the rate of the series' longest point) > {args.point_limit:.0f} s")
        if why:
            point = {"model": label, "backend": backend, "mode": mode, "seconds": s, "skipped": why, **pred}
        else:
            point = {**_growth_point(label, path, backend, mode, s, args), **pred}
        print(json.dumps(point), flush=True)
        done["points"].append(point)
        out_file.write_text(json.dumps(done, indent=1) + "\n")       # after every point: long runs may be cut
    return done


# ---------------------------------------------------------------------------------------------- report
def _uptime() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def _f(x, fmt="{:.3f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _table_md(res: dict) -> list[str]:
    lines = ["| model | layers | front-end | backend | mode | RTF | x floor | front-end FLOP share | GFLOP/audio s | "
             "peak RSS MiB | file MB | chunk p95 ms | WER |", "|" + "---|" * 13]
    for r in res["runs"]:
        if "rtf" not in r:
            lines.append(f"| {r['model']} | {r['layers']} | | {r['backend']} | {r['mode']} | "
                         f"{r.get('skipped') or r.get('error', '')[:60]} ||||||||")
            continue
        mode = r["mode"] if r["mode"] == "offline" else f"chunked {r['chunk_size']}/{r.get('hop') or r['chunk_size']}" \
                                                          f"/{r['left_chunks']}"
        fe = r.get("subsampling") or ("dw_striding4" if r["model"].endswith("-dw") else "conv2d4")
        lines.append(f"| {r['model']} | {r['layers']} | {fe} | {r['backend']} | {mode} | {_f(r['rtf'])} | "
                     f"{_f(r.get('x_floor'), '{:.2f}')} | {_f(r.get('frontend_flops_share'), '{:.0%}')} | "
                     f"{_f((r.get('flops_per_audio_s') or 0) / 1e9 or None, '{:.2f}')} | "
                     f"{_f(r['peak_rss_mb'], '{:.0f}')} | {_f(r['model_file_mb'], '{:.0f}')} | "
                     f"{_f(r.get('chunk_p95_ms'), '{:.0f}')} | n/a |")
    return lines


def _ratios_md(res: dict) -> list[str]:
    rtf = {(r["model"], r["backend"], r["mode"]): r["rtf"] for r in res["runs"] if "rtf" in r}
    models = list(dict.fromkeys(r["model"] for r in res["runs"]))
    lines = []
    for mode in ("offline", "chunked"):
        for backend in BACKENDS:
            base = rtf.get(("p20", backend, mode))
            if base is None:
                continue
            parts = [f"{m} {base / rtf[(m, backend, mode)]:.2f}x" for m in models if m != "p20"
                     and (m, backend, mode) in rtf]
            if parts:
                lines.append(f"- {backend} {mode}: speed-up over p20: {', '.join(parts)}")
        for m in models:
            t, o, q = (rtf.get((m, b, mode)) for b in BACKENDS)
            if t and o:
                lines.append(f"- {m} {mode}: onnx {t / o:.2f}x PyTorch eager" + (f"; int8 {o / q:.2f}x fp32" if q
                                                                                   else ""))
    return lines


def _models_line(table: dict) -> str:
    labels = list(dict.fromkeys(r["model"] for res in table["groups"].values() for r in res["runs"]))
    parts = []
    for m in labels:
        r = next(r for res in table["groups"].values() for r in res["runs"] if r["model"] == m)
        what = IMPORTED.get(m, "the `paper` config" if m == "p20" else "pruned `paper`")
        parts.append(f"`{m}` ({what}, {r.get('layers')} layers, d {r.get('d_model')}, "
                     f"{(r.get('params') or 0) / 1e6:.1f}M parameters)")
    return ", ".join(parts)


def render(out: Path) -> None:
    md = ["# Speed at the paper's scale (`benchmarks/paper_scale.py`)", ""]
    table = None
    for f in sorted(out.glob("table*.json")):
        t = json.loads(f.read_text())
        if table is None:
            table = t
        else:
            table["groups"].update(t["groups"])
            table["uptime_end"] = t.get("uptime_end", table.get("uptime_end"))
    if table:
        first = next(iter(table["groups"].values()))
        m, st = first["machine"], first["settings"]
        md += [f"Machine: {m['cpu_model']} ({m['cpu_detail']}), {m['usable_cores']} usable cores, "
               f"{m['memory_gib']} GiB; onnxruntime "
               f"{m['versions']['onnxruntime'] or m['versions']['onnxruntime-gpu']}, torch {m['versions']['torch']}.",
               f"Models with random weights (WER n/a): {_models_line(table)}; {st['threads'][0]} threads, the first "
               f"{st['limit']} utterances of {st['data']}, {st['rounds']} interleaved rounds, warm-up {st['warmup']}.",
               f"Load during the table: {table['uptime_start']} at start, {table.get('uptime_end', 'n/a')} at the end "
               "(the machine was shared with other work: figures are noisy, ratios within one group are fairer "
               "than absolute RTFs).",
               "Columns: mode `chunked C/hop/L` in 40 ms encoder frames (16/8/2 is the paper's chunk 64, hop 32, 128 "
               "left feature frames); x floor = RTF over the physical floor (the model's matrix products timed alone "
               "on this machine, `slimasr.bench.flops`; measured under the same load, so below 1 where the load "
               "slowed the floor measurement more than the run); front-end FLOP share = the subsampling's share of "
               "the model's FLOPs in that mode; file MB = the file the backend loads.", ""]
        for name, res in table["groups"].items():
            md += [f"## {name}", "", f"wall {res['wall_s']:.0f} s; load {res['machine']['load_average']} -> "
                   f"{res['machine']['load_average_end']}", ""] + _table_md(res) + [""] + _ratios_md(res) + [""]
    int8 = json.loads((out / "int8.json").read_text()) if (out / "int8.json").is_file() else None
    if int8:
        md += ["## int8: one scale per tensor vs per output channel (dynamic quantization)", "",
               f"Load: {int8['uptime_start']} -> {int8['uptime_end']}", ""]
        md += _table_md(int8["paper_speed"]) + [""]
        if "default_wer" in int8:
            md += ["WER of the default model (`-perchannel`: per-channel int8 weights):", "",
                   "| model | backend | mode | WER | CER | RTF |", "|---|---|---|---|---|---|"]
            for r in int8["default_wer"]["runs"]:
                if "rtf" in r:
                    md.append(f"| {r['model']} | {r['backend']} | {r['mode']} | {r['wer']:.2%} | {r['cer']:.2%} | "
                              f"{r['rtf']:.4f} |")
            md.append("")
    growth = json.loads((out / "growth.json").read_text()) if (out / "growth.json").is_file() else None
    if growth:
        md += ["## How cost grows with the utterance length", "",
               "Expected: chunked decoding is linear in T (a fixed cache per chunk): constant RTF and memory. "
               "Offline full-context attention is quadratic in T (T x T scores per layer): RTF grows linearly "
               "with T once attention dominates (at d=512 from a few minutes on; the feed-forward and convolution "
               "products are linear), and memory grows with T (the torch backend computes attention in query "
               "blocks, so its scores stay at one block; the ONNX graph holds whole T x T score matrices). The "
               "peak includes the utterance's audio, read whole before the model (the column before the model: "
               "an hour of 16 kHz audio is several hundred MiB).", "",
               "Predicted before each point (`predict_point`): T' encoder frames after subsampling, one layer's "
               "attention scores (heads x T'^2 x 4 bytes), the ONNX offline peak (the model twice plus "
               f"{ONNX_SCORE_COPIES} score matrices) and the compute time (the point's FLOPs at the FLOP rate of the "
               "series' longest measured point). Points predicted not to fit in "
               f"{_f((growth.get('limits') or {}).get('memory_mb', 0) / 1024, '{:.1f}')} GiB or "
               f"{_f((growth.get('limits') or {}).get('point_s'), '{:.0f}')} s are skipped with that reason.", "",
               "| model | backend | mode | audio s | T' | scores/layer MiB | predicted peak MiB | predicted s | RTF | "
               "compute s | peak RSS MiB | RSS before the model MiB | load at start |", "|" + "---|" * 13]
        for p in growth["points"]:
            pred = (f"{p.get('encoder_frames', '')} | {_f(p.get('scores_per_layer_mb'), '{:.0f}')} | "
                    f"{_f(p.get('predicted_peak_mb'), '{:.0f}')} | {_f(p.get('predicted_compute_s'), '{:.0f}')}")
            head = f"| {p['model']} | {p['backend']} | {p['mode']} | {p['seconds']:g} | {pred} |"
            if "skipped" in p:
                md.append(f"{head} skipped: {p['skipped']} ||||")
            elif "error" in p:
                md.append(f"{head} failed: {p['error'][-80:]} ||| {p['uptime']} |")
            else:
                md.append(f"{head} {p['rtf']:.4f} | {p['compute_s']:.1f} | {p['peak_rss_mb']:.0f} | "
                          f"{_f(p.get('peak_rss_before_model_mb'), '{:.0f}')} | {p['uptime']} |")
        md.append("")
    (out / "paper_scale.md").write_text("\n".join(md) + "\n")
    _plot(out, table, growth)


def _plot(out: Path, table: dict | None, growth: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 3 if growth else 1                  # the growth panels only where there are growth points
    fig, axes = plt.subplots(1, n, figsize=(16 if growth else 7, 4.5), squeeze=False)
    axes = axes[0]
    if table:
        res = next(iter(table["groups"].values()))
        labels = list(dict.fromkeys(r["model"] for r in res["runs"]))
        ax = axes[0]
        for mode, hatch in (("offline", ""), ("chunked", "//")):
            for j, backend in enumerate(BACKENDS):
                xs, ys = [], []
                for i, m in enumerate(labels):
                    r = next((r for r in res["runs"] if r["model"] == m and r["backend"] == backend
                              and r["mode"] == mode and "rtf" in r), None)
                    if r:
                        xs.append(i + (j - 1) * 0.13 + (0.4 if mode == "chunked" else 0) - 0.2)
                        ys.append(r["rtf"])
                ax.bar(xs, ys, width=0.12, hatch=hatch, color=f"C{j}", label=f"{backend} {mode}")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel("RTF (2 threads)")
        ax.set_title("paper scale: RTF by model (hatched: chunked 16/4)")
        ax.legend(fontsize=7)
    if growth:
        for ax, key, label in ((axes[1], "rtf", "RTF"), (axes[2], "peak_rss_mb", "peak RSS (MiB)")):
            series: dict = {}
            for p in growth["points"]:
                if "rtf" in p:
                    series.setdefault(f"{p['model']} {p['backend']} {p['mode']}", []).append(p)
            for i, (name, pts) in enumerate(sorted(series.items())):
                pts.sort(key=lambda p: p["audio_s"])
                ax.plot([p["audio_s"] for p in pts], [p[key] for p in pts], marker="o", color=f"C{i}", label=name)
                ref = next((p for p in pts if p["audio_s"] >= 10 and p.get("flops")), None)
                if key == "rtf" and ref:       # expected: the FLOPs per audio second, scaled to the 10 s point
                    rate = ref["rtf"] / (ref["flops"] / ref["audio_s"])
                    xs = [p["audio_s"] for p in pts if p.get("flops")]
                    ax.plot(xs, [rate * p["flops"] / p["audio_s"] for p in pts if p.get("flops")], ls="--",
                            color=f"C{i}", alpha=0.6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("utterance length (s)")
            ax.set_ylabel(label)
            ax.set_title(f"{label} against length" + (" (dashed: expected from FLOPs)" if key == "rtf" else ""))
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "paper_scale.png", dpi=110)


# ---------------------------------------------------------------------------------------------- main
def _labels(text: str) -> list[str]:
    labels = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in labels if x not in (*MODELS, *IMPORTED)]
    if bad or not labels:
        raise argparse.ArgumentTypeError(f"unknown model {', '.join(bad) or '(none)'}; expected a comma-separated "
                                         f"subset of {','.join((*MODELS, *IMPORTED))}")
    return labels


def _seconds(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Speed and memory at the paper's scale (see the module docstring).",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--part", action="append", choices=PARTS, help="Parts to run [default: all].")
    ap.add_argument("--data", default=DATA, help=f"Test manifest (speed runs, growth clips) [default: {DATA}].")
    ap.add_argument("--wer-data", default=None, help="int8: manifest for the default model's WER.")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600.0, help="Seconds one benchmark process may run.")
    ap.add_argument("--small-offline", type=_seconds, default=_seconds("1,10,60,600,1200"))
    ap.add_argument("--small-stream", type=_seconds, default=_seconds("1,10,60,600,3600"))
    ap.add_argument("--paper-offline", type=_seconds, default=_seconds("1,10,60,600,1200"))
    ap.add_argument("--paper-stream", type=_seconds, default=_seconds("1,10,60,600,3600"))
    ap.add_argument("--memory-fraction", type=float, default=0.8,
                    help="growth: skip a point whose predicted peak exceeds this fraction of the memory available.")
    ap.add_argument("--point-limit", type=float, default=600.0,
                    help="growth: skip a point whose predicted compute exceeds this many seconds.")
    ap.add_argument("--models", type=_labels, default=list(MODELS),
                    help=f"table: comma-separated subset of {','.join((*MODELS, *IMPORTED))} (the last "
                         f"{len(IMPORTED)}: imported architectures at their published sizes).")
    ap.add_argument("--groups", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1],
                    help="table: the run groups (0: offline + chunked 16/4, 1: the paper's chunking).")
    ap.add_argument("--paper-chunking-models", type=lambda t: t.split(","), default=["p20", "p12", "p12-dw"],
                    help="table: the models run with the paper's chunking.")
    ap.add_argument("--table-name", default="table", help="table: output name (several table runs are merged).")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_scale"))
    ap.add_argument("--work", type=Path, default=Path("exp/paper_scale"))
    args = ap.parse_args(argv)
    parts = args.part or list(PARTS)
    manifests = {"--data": args.data} if {"table", "int8", "growth"} & set(parts) else {}
    if "int8" in parts and args.wer_data:
        manifests["--wer-data"] = args.wer_data
    for opt, path in manifests.items():                     # before the models are built: no work lost
        if not Path(path).is_file():
            raise SystemExit(f"{opt} {path}: no such file; expected a JSON-lines test manifest (the default is the "
                             f"README's corpus: {DATA_COMMAND})")
    args.out.mkdir(parents=True, exist_ok=True)
    if any(p in parts for p in ("models", "table", "int8", "growth")):
        paths = build_models(args.work, list(dict.fromkeys(
            [*args.models, *(["p20"] if any(p in parts for p in ("int8", "growth")) else [])])))
    for part, fn in (("table", run_table), ("int8", run_int8)):
        if part in parts:
            res = fn(paths, args)
            (args.out / f"{args.table_name if part == 'table' else part}.json").write_text(
                json.dumps(res, indent=1) + "\n")
    if "growth" in parts:
        run_growth(paths, args)
    if "report" in parts:
        render(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
