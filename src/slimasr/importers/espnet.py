"""Import an espnet2 ASR model with a Conformer encoder (``espnet2/asr/encoder/conformer_encoder.py``).

Files: the training ``config.yaml`` (every argument, ``token_list`` inline), the checkpoint ``*.pth`` (a plain
state_dict), the feature statistics ``feats_stats.npz`` (only needed when the checkpoint lacks ``normalize.mean`` /
``normalize.std``) and the SentencePiece model (``bpemodel``). Paths in the config are relative to the recipe
directory; they are looked up as given, relative to the config's parent directories, and by file name beside it.

What maps onto what: ``rel_pos_type: latest`` -> ``pos_enc="rel"``; ``legacy`` (ESPnet's default) ->
``pos_enc="legacy"`` (whole utterances only); BatchNorm conv norm -> folded into the depthwise convolution;
LayerNorm eps 1e-12; ``interctc_layer_idx`` -> ``intermediate_ctc_layers`` (the shared CTC head and after_norm, as
ESPnet computes them); ``input_layer: conv2d / conv2d6 / conv2d8``; the ``default`` front-end (STFT log-mel with
the checkpoint's mel matrix, :class:`slimasr.frontends.StftMelConfig`); ``global_mvn`` -> the encoder's CMVN
buffers, ``utterance_mvn`` -> per-utterance mean normalisation in the front-end. The attention decoder is not
imported.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..features import FrontendConfig
from ..frontends import StftMelConfig, encode_matrix
from ..model import ModelConfig
from ..tokenizer import TokenTable
from .common import (LAYER_NAMES_ESPNET, ImportFailed, WeightMap, build_model, check_options, check_vocab,
                     conformer_layers, conv2d_subsampling, load_sentencepiece, read_state_dict, read_yaml,
                     require_file, sha256, unsupported)

__all__ = ["import_espnet"]

_FIXED = {
    "activation_type": ("swish",), "normalize_before": (True,), "macaron_style": (True,),
    "use_cnn_module": (True,), "concat_after": (False,), "interctc_use_conditioning": (False,),
    "positionwise_layer_type": ("linear",), "zero_triu": (False,), "cnn_module_norm": ("batch_norm",),
    "padding_idx": (-1,), "stochastic_depth_rate": (0.0,), "layer_drop_rate": (0.0,), "ctc_trim": (False,),
    "qk_norm": (False,), "use_flash_attn": (False, True), "max_pos_emb_len": (5000,),
}
_FREE = {"output_size", "attention_heads", "linear_units", "num_blocks", "dropout_rate", "positional_dropout_rate",
         "attention_dropout_rate", "input_layer", "cnn_module_kernel", "pos_enc_layer_type", "rel_pos_type",
         "selfattention_layer_type", "interctc_layer_idx", "positionwise_conv_kernel_size"}
_FRONTEND_KEYS = {"fs", "n_fft", "win_length", "hop_length", "window", "center", "normalized", "onesided",
                  "n_mels", "fmin", "fmax", "htk", "apply_stft", "frontend_conf"}


def _resolve(recorded, config_path: Path, explicit, what: str) -> Path:
    """The file a config path names (see the module docstring); ImportFailed naming ``what`` if absent."""
    if explicit is not None:
        return require_file(Path(explicit), what)
    if not recorded:
        raise ImportFailed(f"{config_path}: names no {what}; pass it explicitly")
    p = Path(str(recorded))
    candidates = [p] + [d / p for d in config_path.resolve().parents] + [config_path.parent / p.name]
    for c in candidates:
        if c.is_file():
            return c
    raise ImportFailed(f"{config_path}: missing {what} {str(recorded)!r} (not found as given, relative to the "
                       "config's directories, or beside it)")


def import_espnet(config: str | Path, checkpoint: str | Path, stats: str | Path | None = None,
                  bpe: str | Path | None = None):
    """Import an espnet2 Conformer CTC model (module docstring) as an ASRModel.

    Raises:
        ImportFailed (a ValueError): missing or unreadable files, options slimasr cannot represent (named, with
            what is supported), a state_dict that does not match the config, a token list whose size differs from
            the CTC head, or a checkpoint of another model family.
    """
    config_path, ckpt_path = Path(config), Path(checkpoint)
    conf = read_yaml(config_path, "ESPnet config (config.yaml)")
    require_file(ckpt_path, "ESPnet checkpoint (.pth)")
    if conf.get("encoder") != "conformer":
        raise unsupported(config_path, "encoder", conf.get("encoder"), ["conformer"])
    for key in ("preencoder", "postencoder"):
        if conf.get(key):
            raise unsupported(config_path, key, conf.get(key), [None])
    enc = dict(conf.get("encoder_conf") or {})
    check_options(config_path, "encoder_conf", enc, _FIXED, _FREE)
    subsampling = conv2d_subsampling(config_path, enc)
    rel_pos_type = enc.get("rel_pos_type", "legacy")
    pos_type, att_type = enc.get("pos_enc_layer_type", "rel_pos"), enc.get("selfattention_layer_type", "rel_selfattn")
    if rel_pos_type == "legacy":
        pos_type = {"rel_pos": "legacy_rel_pos"}.get(pos_type, pos_type)
        att_type = {"rel_selfattn": "legacy_rel_selfattn"}.get(att_type, att_type)
    pos_enc = {("rel_pos", "rel_selfattn"): "rel", ("legacy_rel_pos", "legacy_rel_selfattn"): "legacy"}.get(
        (pos_type, att_type))
    if pos_enc is None:
        raise unsupported(config_path, "encoder_conf.pos_enc_layer_type / selfattention_layer_type",
                          f"{pos_type} / {att_type}", ["rel_pos / rel_selfattn (rel_pos_type latest or legacy)"])
    if conf.get("frontend", "default") != "default":
        raise unsupported(config_path, "frontend", conf.get("frontend"), ["default"])
    fconf = dict(conf.get("frontend_conf") or {})
    bad = sorted(set(fconf) - _FRONTEND_KEYS)
    if bad:
        raise unsupported(config_path, f"frontend_conf.{bad[0]}", fconf[bad[0]], sorted(_FRONTEND_KEYS))
    for key, want in (("window", "hann"), ("center", True), ("normalized", False), ("onesided", True),
                      ("apply_stft", True)):
        if fconf.get(key, want) != want:
            raise unsupported(config_path, f"frontend_conf.{key}", fconf[key], [want])
    normalize = conf.get("normalize")
    if normalize not in (None, "global_mvn", "utterance_mvn"):
        raise unsupported(config_path, "normalize", normalize, ["global_mvn", "utterance_mvn", None])

    source = read_state_dict(ckpt_path, "ESPnet checkpoint (state_dict)")
    if not any(k.startswith("encoder.encoders.") for k in source) or "ctc.ctc_lo.weight" not in source:
        raise ImportFailed(f"{ckpt_path}: not an ESPnet Conformer CTC checkpoint (no encoder.encoders.* / "
                           "ctc.ctc_lo weights)")

    # --- vocabulary
    tokens = conf.get("token_list")
    if isinstance(tokens, str):
        tokens = [line.strip() for line in _resolve(tokens, config_path, None, "token list").read_text(
            encoding="utf-8").splitlines() if line.strip()]
    if not isinstance(tokens, list) or not tokens:
        raise ImportFailed(f"{config_path}: missing the token table token_list")
    ctc_rows = int(source["ctc.ctc_lo.weight"].shape[0])
    check_vocab(config_path, len(tokens), ctc_rows, "token_list")
    if tokens[0] != "<blank>":
        raise unsupported(config_path, "token_list[0]", tokens[0], ["<blank>"])
    sos = tokens.index("<sos/eos>") if "<sos/eos>" in tokens else None
    token_type = conf.get("token_type", "bpe")
    bpe_path = None
    if token_type == "bpe":
        bpe_path = _resolve(conf.get("bpemodel"), config_path, bpe, "BPE model (bpemodel)")
    elif token_type != "char":
        raise unsupported(config_path, "token_type", token_type, ["bpe", "char"])
    sp_proto = bpe_path.read_bytes() if bpe_path else None
    if sp_proto is not None:
        load_sentencepiece(sp_proto, str(bpe_path))
    letters = "".join(c for t in tokens if not t.startswith("<") for c in t if c.isalpha())
    table = TokenTable(tokens=tuple(tokens), unk_id=tokens.index("<unk>") if "<unk>" in tokens else None,
                       sos_eos_id=sos, upper_case=bool(letters) and letters == letters.upper()
                       and letters != letters.lower(), detokenize="sentencepiece" if bpe_path else "join")

    # --- architecture
    inter = tuple(int(i) for i in (enc.get("interctc_layer_idx") or ()))
    n_layers = int(enc.get("num_blocks", 6))
    if any(not 1 <= i < n_layers for i in inter):
        raise unsupported(config_path, "encoder_conf.interctc_layer_idx", list(inter),
                          [f"layers 1..{n_layers - 1}"])
    if "frontend.logmel.melmat" not in source:
        raise ImportFailed(f"{ckpt_path}: state_dict does not match its config; missing keys: frontend.logmel.melmat")
    melmat = source["frontend.logmel.melmat"].float().numpy()
    n_mels = melmat.shape[1]
    sos_token = sos if sos is not None and sos != ctc_rows - 1 else None
    mc = conf.get("model_conf") or {}
    cfg = ModelConfig(
        name=f"espnet-{config_path.parent.name}", num_mel_bins=n_mels,
        subsampling_channels=int(source["encoder.embed.conv.0.weight"].shape[0])
        if "encoder.embed.conv.0.weight" in source else int(enc.get("output_size", 256)),
        d_model=int(enc.get("output_size", 256)), num_heads=int(enc.get("attention_heads", 4)),
        ffn_dim=int(enc.get("linear_units", 2048)), num_layers=n_layers,
        kernel_size=int(enc.get("cnn_module_kernel", 31)), dropout=float(enc.get("dropout_rate", 0.1)),
        attention_dropout=float(enc.get("attention_dropout_rate", 0.0)), vocab_size=ctc_rows, decoder_layers=0,
        intermediate_ctc_layers=inter, ctc_weight=1.0, intermediate_ctc_weight=float(mc.get("interctc_weight", 0.3)
                                                                                    or 0.3),
        dynamic_chunk=False, subsampling=subsampling, layer_norm_eps=1e-12, conv_norm="none",
        pos_enc=pos_enc, sos_eos_token=sos_token,
    )

    # --- weights
    wm = WeightMap(source, ckpt_path)
    wm.used.add("frontend.logmel.melmat")
    for j in range(0, 2 * len(cfg.subsampling_stages), 2):
        wm.module(f"encoder.subsampling.conv.{j}", f"encoder.embed.conv.{j}")
    wm.module("encoder.subsampling.out", "encoder.embed.out.0")
    conformer_layers(wm, cfg, lambda i: f"encoder.encoders.{i}", LAYER_NAMES_ESPNET,
                     {"depthwise": "conv_module.depthwise_conv", "norm": "conv_module.norm"}, 1e-5)
    wm.module("encoder.after_norm", "encoder.after_norm")
    wm.module("ctc", "ctc.ctc_lo")
    cmvn, cmvn_note, stats_path = "global", "none", None
    if normalize == "global_mvn":
        if wm.has("normalize.mean") and wm.has("normalize.std"):
            mean, std = wm.get("normalize.mean").double(), wm.get("normalize.std").double()
            cmvn_note = "normalize.mean / normalize.std of the checkpoint"
        else:
            stats_path = _resolve((conf.get("normalize_conf") or {}).get("stats_file"), config_path, stats,
                                  "CMVN statistics (normalize_conf.stats_file, feats_stats.npz)")
            try:
                st = np.load(stats_path)
                count, s1, s2 = float(st["count"]), st["sum"].astype(np.float64), st["sum_square"].astype(np.float64)
            except (OSError, ValueError, KeyError) as e:
                raise ImportFailed(f"{stats_path}: not an ESPnet feats_stats.npz (count, sum, sum_square): {e}") \
                    from None
            m = s1 / count
            mean, std = torch.from_numpy(m), torch.from_numpy(np.sqrt(np.maximum(s2 / count - m * m, 1e-20)))
            cmvn_note = stats_path.name
        wm.out["encoder.cmvn_mean"], wm.out["encoder.cmvn_istd"] = mean.float(), (1.0 / std).float()
    else:
        wm.out["encoder.cmvn_mean"], wm.out["encoder.cmvn_istd"] = torch.zeros(n_mels), torch.ones(n_mels)
        if normalize == "utterance_mvn":
            nc = conf.get("normalize_conf") or {}
            cmvn = "utterance" if nc.get("norm_vars", False) else "utterance_mean"
            if not nc.get("norm_means", True):
                raise unsupported(config_path, "normalize_conf.norm_means", False, [True])
            cmvn_note = f"per utterance ({cmvn})"
    wm.check(ignore=[r"^decoder\.", r".*num_batches_tracked$", r"^criterion_att\.", r"^normalize\.",
                     r".*\.pos_enc\.pe$"])

    n_fft = int(fconf.get("n_fft", 512))
    stft = StftMelConfig(num_mel_bins=n_mels, mel_matrix=encode_matrix(melmat), sample_rate=int(fconf.get("fs", 16000)),
                         n_fft=n_fft, win_length=int(fconf.get("win_length") or n_fft),
                         hop_length=int(fconf.get("hop_length", 128)), window="hann", center=True, pad_mode="reflect",
                         log_guard="clamp", log_guard_value=1e-10)
    files = {"config": (config_path, sha256(config_path)), "checkpoint": (ckpt_path, sha256(ckpt_path))}
    for key, p in (("bpe", bpe_path), ("stats", stats_path)):
        if p is not None:
            files[key] = (p, sha256(p))
    record = {"toolkit": "espnet", "version": conf.get("version"), "model": "espnet2 ASR / conformer",
              "files": {k: {"name": p.name, "sha256": h} for k, (p, h) in files.items()},
              "token_order": "source (token_list)", "blank_id": 0, "sos_eos_id": sos, "cmvn": cmvn_note,
              "rel_pos_type": rel_pos_type, "not_imported": ["attention decoder"] if conf.get("decoder") else []}
    return build_model(cfg, wm.out, ckpt_path, table, sp_proto, record,
                       FrontendConfig(kind="stft_mel", stft=stft, cmvn=cmvn))
