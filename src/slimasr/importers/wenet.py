"""Import a WeNet Conformer CTC model (``wenet/transformer/encoder.py`` ``ConformerEncoder``, U2 / U2++).

The deployable model folder holds ``train.yaml``, ``final.pt`` (a plain state_dict), ``global_cmvn`` (JSON or
Kaldi text), ``units.txt`` (``symbol id``) and, for BPE units, the SentencePiece model named in ``train.yaml``
(looked up in the folder by file name when the recorded path does not exist, as it usually does not).

What maps onto what (one slimasr layer, :class:`slimasr.model.ModelConfig` fields):
``rel_pos`` attention -> ``pos_enc="abs_key"`` (WeNet has no rel_shift); ``causal: true`` -> ``causal_conv``;
``cnn_module_norm: batch_norm`` -> folded into the depthwise convolution; ``norm_eps`` -> ``layer_norm_eps``;
``input_layer: conv2d / conv2d6 / conv2d8`` -> ``subsampling``; global CMVN -> the encoder's CMVN buffers; the
fbank settings of ``dataset_conf.fbank_conf`` with Kaldi's ``snip_edges``, Nyquist high frequency, no dither and
samples x 32768 (``wenet/dataset/processor.py`` ``compute_fbank``). The attention decoder is not imported
(CTC inference; fine-tuning then trains with CTC only).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..features import FbankConfig, FrontendConfig
from ..model import ModelConfig
from ..tokenizer import TokenTable
from .common import (LAYER_NAMES_ESPNET, ImportFailed, WeightMap, build_model, check_options, check_vocab,
                     conformer_layers, conv2d_subsampling, load_sentencepiece, read_state_dict, read_yaml,
                     require_file, sha256, unsupported)

__all__ = ["import_wenet", "read_units", "read_global_cmvn", "wenet_model_config", "wenet_token_table",
           "wenet_frontend"]

# encoder_conf options and the only values slimasr represents (None: any value; training-only settings)
_FIXED = {
    "pos_enc_layer_type": ("rel_pos",), "selfattention_layer_type": ("rel_selfattn",),
    "activation_type": ("swish",), "normalize_before": (True,), "macaron_style": (True,),
    "use_cnn_module": (True,), "layer_norm_type": ("layer_norm",), "concat_after": (False,),
    "query_bias": (True,), "key_bias": (True,), "value_bias": (True,), "conv_bias": (True,),
    "mlp_type": ("position_wise_feed_forward",), "final_norm": (True,), "n_kv_head": (None,),
    "head_dim": (None,), "mlp_bias": (True,), "use_sdpa": (False, True), "conv_inner_factor": (2,),
}
_FREE = {"output_size", "attention_heads", "linear_units", "num_blocks", "dropout_rate", "positional_dropout_rate",
         "attention_dropout_rate", "input_layer", "cnn_module_kernel", "causal", "cnn_module_norm", "norm_eps",
         "conv_norm_eps", "use_dynamic_chunk", "use_dynamic_left_chunk", "static_chunk_size", "global_cmvn",
         "gradient_checkpointing", "cnn_module_activation", "stochastic_depth_rate"}


def read_units(path: Path) -> list[str]:
    """``units.txt`` (``symbol id`` per line, ids 0..V-1) -> symbols by id."""
    require_file(path, "WeNet token table units.txt")
    entries = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ImportFailed(f"{path}:{n}: expected 'symbol id', got {line!r}")
        entries[int(parts[1])] = parts[0]
    if sorted(entries) != list(range(len(entries))):
        raise ImportFailed(f"{path}: token ids must be 0..{len(entries) - 1} without gaps")
    return [entries[i] for i in range(len(entries))]


def read_global_cmvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """WeNet ``global_cmvn`` (JSON ``mean_stat``/``var_stat``/``frame_num``, or Kaldi text stats) -> (mean, istd),
    ``istd = 1 / sqrt(max(var / N - mean^2, 1e-20))`` in float64 (``wenet/utils/cmvn.py``)."""
    require_file(path, "WeNet CMVN file (global_cmvn)")
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        if text.lstrip().startswith("{"):
            d = json.loads(text)
            mean_stat, var_stat, n = (np.asarray(d["mean_stat"], np.float64), np.asarray(d["var_stat"], np.float64),
                                      float(d["frame_num"]))
        else:
            rows = [r.split() for r in text.replace("[", " ").replace("]", "\n").splitlines() if r.split()]
            if len(rows) != 2 or len(rows[0]) != len(rows[1]):
                raise ValueError("expected two rows of accumulated statistics")
            stats = np.asarray(rows, np.float64)
            mean_stat, var_stat, n = stats[0, :-1], stats[1, :-1], stats[0, -1]
    except (ValueError, KeyError, TypeError) as e:
        raise ImportFailed(f"{path}: not a WeNet global_cmvn (JSON or Kaldi text statistics): {e}") from None
    if n <= 0:
        raise ImportFailed(f"{path}: CMVN frame count must be positive, got {n}")
    mean = mean_stat / n
    var = np.maximum(var_stat / n - mean * mean, 1e-20)
    return mean.astype(np.float32), (1.0 / np.sqrt(var)).astype(np.float32)


def _in_dir(model_dir: Path, recorded, fallback: str | None) -> Path | None:
    """A file train.yaml names: the recorded path if it exists, else the same file name inside the model dir."""
    if recorded:
        p = Path(recorded)
        if p.is_file():
            return p
        if (model_dir / p.name).is_file():
            return model_dir / p.name
    if fallback and (model_dir / fallback).is_file():
        return model_dir / fallback
    return None


def _encoder_conf(conf: dict, path: Path) -> tuple[dict, str, str, float]:
    """``encoder_conf`` checked (ImportFailed for what slimasr cannot represent), with its subsampling, conv
    norm (``batch_norm`` / ``layer_norm``) and LayerNorm eps."""
    encoder = conf.get("encoder")
    if encoder != "conformer":
        raise unsupported(path, "encoder", encoder, ["conformer"])
    enc = dict(conf.get("encoder_conf") or {})
    check_options(path, "encoder_conf", enc, _FIXED, _FREE)
    subsampling = conv2d_subsampling(path, enc)
    conv_norm = enc.get("cnn_module_norm", "batch_norm")
    if conv_norm not in ("batch_norm", "layer_norm"):
        raise unsupported(path, "encoder_conf.cnn_module_norm", conv_norm, ["batch_norm", "layer_norm"])
    eps = float(enc.get("norm_eps", 1e-5))
    conv_eps = float(enc.get("conv_norm_eps", 1e-5))
    if conv_norm == "layer_norm" and conv_eps != eps:
        raise unsupported(path, "encoder_conf.conv_norm_eps", conv_eps, [f"norm_eps ({eps})"])
    return enc, subsampling, conv_norm, eps


def wenet_model_config(conf: dict, path: Path, table: TokenTable, subsampling_channels: int | None = None
                       ) -> ModelConfig:
    """The :class:`slimasr.model.ModelConfig` of a WeNet ``train.yaml`` (what maps onto what: the module
    docstring; WeNet's ``ConformerEncoder`` arguments in ``encoder_conf``).

    Args:
        conf: the parsed ``train.yaml``.
        path: the ``train.yaml`` file, named in errors; its folder names the config (``wenet-<folder>``).
        table: the vocabulary (:func:`wenet_token_table`): the CTC head has ``len(table.tokens)`` outputs and
            ``table.sos_eos_id`` is the model's ``<sos/eos>``.
        subsampling_channels: the subsampling's channels as the weights have them; None: ``output_size`` (WeNet's
            ``Conv2dSubsampling*`` use the model dimension).
    Raises:
        ImportFailed: an encoder or ``encoder_conf`` option slimasr cannot represent.
    """
    enc, subsampling, conv_norm, eps = _encoder_conf(conf, path)
    d = int(enc.get("output_size", 256))
    fbank = (conf.get("dataset_conf") or {}).get("fbank_conf") or {}
    return ModelConfig(
        name=f"wenet-{Path(path).parent.name}", num_mel_bins=int(conf.get("input_dim", fbank.get("num_mel_bins", 80))),
        subsampling_channels=d if subsampling_channels is None else subsampling_channels, d_model=d,
        num_heads=int(enc.get("attention_heads", 4)), ffn_dim=int(enc.get("linear_units", 2048)),
        num_layers=int(enc.get("num_blocks", 6)), kernel_size=int(enc.get("cnn_module_kernel", 15)),
        dropout=float(enc.get("dropout_rate", 0.1)), attention_dropout=float(enc.get("attention_dropout_rate", 0.0)),
        vocab_size=len(table.tokens), decoder_layers=0, ctc_weight=1.0,
        dynamic_chunk=bool(enc.get("use_dynamic_chunk", False)),
        dynamic_left_chunks=bool(enc.get("use_dynamic_left_chunk", False)), subsampling=subsampling,
        layer_norm_eps=eps, conv_norm="layer_norm" if conv_norm == "layer_norm" else "none",
        causal_conv=bool(enc.get("causal", False)), pos_enc="abs_key", sos_eos_token=int(table.sos_eos_id),
    )


def wenet_token_table(tokens: list[str], conf: dict, path: Path, bpe: bool) -> TokenTable:
    """The token table of a WeNet model: ``tokens`` in ``units.txt`` order (:func:`read_units`; ``path`` names
    that file in errors), ``<sos/eos>`` where ``tokenizer_conf.special_tokens`` puts it (else the ``<sos/eos>``
    unit, else the last id), ``bpe``: units joined with ``▁`` as spaces (else joined as they are: char units).

    Raises:
        ImportFailed: the blank is not id 0.
    """
    if tokens[0] != "<blank>":
        raise unsupported(path, "blank symbol at id 0", tokens[0], ["<blank>"])
    specials = (conf.get("tokenizer_conf") or {}).get("special_tokens") or {}
    sos = specials.get("<sos>", tokens.index("<sos/eos>") if "<sos/eos>" in tokens else len(tokens) - 1)
    letters = "".join(c for t in tokens if not t.startswith("<") for c in t if c.isalpha())
    return TokenTable(tokens=tuple(tokens), unk_id=tokens.index("<unk>") if "<unk>" in tokens else None,
                      sos_eos_id=int(sos), upper_case=bool(letters) and letters == letters.upper()
                      and letters != letters.lower(), detokenize="join_space" if bpe else "join")


def wenet_frontend(conf: dict, path: Path) -> FrontendConfig:
    """The front-end of ``dataset_conf.fbank_conf``: Kaldi fbank with ``snip_edges``, Nyquist high frequency, no
    dither and samples x 32768 (``wenet/dataset/processor.py`` ``compute_fbank``); global CMVN (the encoder's
    buffers).

    Raises:
        ImportFailed: no ``fbank_conf`` (another front-end).
    """
    fbank = (conf.get("dataset_conf") or {}).get("fbank_conf")
    if not isinstance(fbank, dict):
        other = [k for k in (conf.get("dataset_conf") or {}) if k.endswith("_conf") and "fbank" not in k
                 and k in ("mfcc_conf", "log_mel_spectrogram_conf")]
        raise unsupported(path, "dataset_conf front-end", other[0] if other else None, ["fbank_conf"])
    return FrontendConfig(kind="kaldi_fbank", cmvn="global", fbank=FbankConfig(
        num_mel_bins=int(fbank.get("num_mel_bins", 80)), frame_length_ms=float(fbank.get("frame_length", 25)),
        frame_shift_ms=float(fbank.get("frame_shift", 10)), dither=0.0, snip_edges=True, high_freq=0.0,
        low_freq=20.0, sample_scale=32768.0))


def import_wenet(model_dir: str | Path, checkpoint: str | Path | None = None):
    """Import a WeNet Conformer model folder (module docstring) as an ASRModel.

    Raises:
        ImportFailed (a ValueError): a missing or unreadable file, an option slimasr cannot represent, a state_dict
            that does not match ``train.yaml``, or a token table whose size differs from the CTC head.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ImportFailed(f"{model_dir}: expected a WeNet model folder (train.yaml, final.pt, units.txt, ...)")
    yaml_path = model_dir / "train.yaml"
    conf = read_yaml(yaml_path, "WeNet config train.yaml")
    ckpt_path = Path(checkpoint) if checkpoint else model_dir / "final.pt"
    others = sorted(p.name for p in model_dir.glob("*.pt")) if checkpoint is None and not ckpt_path.exists() else []
    require_file(ckpt_path, "WeNet checkpoint (final.pt or --checkpoint)"
                 + (f"; the folder has {', '.join(others)}: name one with --checkpoint" if others else ""))

    enc, _, conv_norm, _ = _encoder_conf(conf, yaml_path)        # options checked before the weights are read
    frontend = wenet_frontend(conf, yaml_path)

    source = read_state_dict(ckpt_path, "WeNet checkpoint (state_dict)")
    if not any(k.startswith("encoder.encoders.") for k in source):
        raise ImportFailed(f"{ckpt_path}: not a WeNet Conformer checkpoint (no encoder.encoders.* weights)")

    # --- vocabulary
    tok_conf = conf.get("tokenizer_conf") or {}
    units_path = _in_dir(model_dir, tok_conf.get("symbol_table_path"), "units.txt")
    if units_path is None:
        raise ImportFailed(f"{model_dir}: missing the token table units.txt (train.yaml names "
                           f"{tok_conf.get('symbol_table_path')!r})")
    tokens = read_units(units_path)
    ctc_rows = source["ctc.ctc_lo.weight"].shape[0] if "ctc.ctc_lo.weight" in source else None
    if ctc_rows is None:
        raise ImportFailed(f"{ckpt_path}: not a WeNet CTC model (no ctc.ctc_lo.weight)")
    check_vocab(units_path, len(tokens), ctc_rows, "units.txt")
    if "output_dim" in conf and int(conf["output_dim"]) != ctc_rows:
        raise ImportFailed(f"{yaml_path}: output_dim {conf['output_dim']} does not match the CTC head's {ctc_rows}")
    bpe_path = None
    kind = conf.get("tokenizer", "bpe" if tok_conf.get("bpe_path") else "char")
    if kind == "bpe" or tok_conf.get("bpe_path"):
        bpe_path = _in_dir(model_dir, tok_conf.get("bpe_path"), None)
        if bpe_path is None:
            raise ImportFailed(f"{model_dir}: missing the BPE model {Path(str(tok_conf.get('bpe_path'))).name} "
                               f"(train.yaml tokenizer_conf.bpe_path {tok_conf.get('bpe_path')!r})")
    elif kind != "char":
        raise unsupported(yaml_path, "tokenizer", kind, ["bpe", "char"])
    sp_proto = bpe_path.read_bytes() if bpe_path else None
    if sp_proto is not None:
        load_sentencepiece(sp_proto, str(bpe_path))
    table = wenet_token_table(tokens, conf, units_path, bpe=bpe_path is not None)

    # --- architecture
    sub_key = "encoder.embed.conv.0.weight"
    if sub_key not in source:
        raise ImportFailed(f"{ckpt_path}: state_dict does not match its config; missing keys: {sub_key}")
    cfg = wenet_model_config(conf, yaml_path, table, int(source[sub_key].shape[0]))

    # --- weights
    wm = WeightMap(source, ckpt_path)
    out_linear = "encoder.embed.out.0" if "encoder.embed.out.0.weight" in source else "encoder.embed.out"
    for j in range(0, 2 * len(cfg.subsampling_stages), 2):
        wm.module(f"encoder.subsampling.conv.{j}", f"encoder.embed.conv.{j}")
    wm.module("encoder.subsampling.out", out_linear)
    conformer_layers(wm, cfg, lambda i: f"encoder.encoders.{i}", LAYER_NAMES_ESPNET,
                     {"depthwise": "conv_module.depthwise_conv", "norm": "conv_module.norm"},
                     float(enc.get("conv_norm_eps", 1e-5)) if conv_norm == "batch_norm" else None)
    wm.module("encoder.after_norm", "encoder.after_norm")
    wm.module("ctc", "ctc.ctc_lo")
    cmvn_note = "encoder.global_cmvn buffers of the checkpoint"
    if wm.has("encoder.global_cmvn.mean"):
        wm.put("encoder.cmvn_mean", "encoder.global_cmvn.mean")
        wm.put("encoder.cmvn_istd", "encoder.global_cmvn.istd")
    elif conf.get("cmvn") or (conf.get("cmvn_conf") or {}).get("cmvn_file") or enc.get("global_cmvn"):
        cmvn_path = _in_dir(model_dir, (conf.get("cmvn_conf") or {}).get("cmvn_file") or enc.get("cmvn_file"),
                            "global_cmvn")
        if cmvn_path is None:
            raise ImportFailed(f"{model_dir}: missing the CMVN file global_cmvn (train.yaml cmvn_conf.cmvn_file "
                               f"{(conf.get('cmvn_conf') or {}).get('cmvn_file')!r})")
        import torch

        mean, istd = read_global_cmvn(cmvn_path)
        wm.out["encoder.cmvn_mean"], wm.out["encoder.cmvn_istd"] = torch.from_numpy(mean), torch.from_numpy(istd)
        cmvn_note = f"{cmvn_path.name}"
    else:
        import torch

        wm.out["encoder.cmvn_mean"] = torch.zeros(cfg.num_mel_bins)
        wm.out["encoder.cmvn_istd"] = torch.ones(cfg.num_mel_bins)
        cmvn_note = "none"
    wm.check(ignore=[r"^decoder\.", r".*\.pos_enc\.pe$", r".*num_batches_tracked$"])

    files = {"config": (yaml_path, sha256(yaml_path)), "checkpoint": (ckpt_path, sha256(ckpt_path)),
             "units": (units_path, sha256(units_path))}
    if bpe_path:
        files["bpe"] = (bpe_path, sha256(bpe_path))
    record = {"toolkit": "wenet", "version": None, "model": f"{conf.get('model', 'asr_model')} / conformer",
              "files": {k: {"name": p.name, "sha256": h} for k, (p, h) in files.items()},
              "token_order": "source (units.txt)", "blank_id": 0, "sos_eos_id": table.sos_eos_id, "cmvn": cmvn_note,
              "not_imported": ["attention decoder"] if conf.get("decoder") else []}
    return build_model(cfg, wm.out, ckpt_path, table, sp_proto, record, frontend)
