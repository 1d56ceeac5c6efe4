"""Import a NeMo Conformer-CTC or FastConformer-CTC model (``.nemo``; ``EncDecCTCModelBPE`` / ``EncDecCTCModel``).

A ``.nemo`` file is a tar (plain or gzip) of ``model_config.yaml``, ``model_weights.ckpt`` (a state_dict) and the
tokenizer files the config names as ``nemo:<file>``. Nothing of NeMo is imported; the YAML is read with PyYAML and
the weights with ``torch.load(weights_only=True)``.

What maps onto what (``nemo/collections/asr/modules/conformer_encoder.py``, ``parts/submodules/subsampling.py``):
``subsampling: striding`` (x4, padding 1) -> ``subsampling="striding4"``; ``dw_striding`` (x8, FastConformer) ->
``"dw_striding8"``; ``self_attention_model: rel_pos`` -> ``pos_enc="rel"``; no final LayerNorm ->
``final_norm=False``; BatchNorm conv norm -> folded into the depthwise convolution; ``xscaling``; shared
(``untie_biases: false``) positional biases are copied into every layer. The CTC head (a 1x1 Conv1d with the blank
LAST) becomes a Linear with the blank moved to id 0: source id ``i`` -> ``i + 1``, recorded in ``model.source``.
The front-end is NeMo's mel (:class:`slimasr.frontends.StftMelConfig` with the checkpoint's filterbank
``preprocessor.featurizer.fb``), with per-feature normalisation over the utterance (offline).
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import torch

from ..features import FrontendConfig
from ..fileutil import exception_line
from ..frontends import StftMelConfig, encode_matrix
from ..model import ModelConfig
from ..tokenizer import TokenTable
from .common import (ImportFailed, WeightMap, build_model, check_vocab, conformer_layers, load_sentencepiece,
                     read_state_dict, require_file, sha256, unsupported)

__all__ = ["import_nemo", "read_nemo_archive", "nemo_model_config", "nemo_token_table", "nemo_frontend"]

SUBSAMPLING = {("striding", 4): "striding4", ("dw_striding", 8): "dw_striding8"}
LAYER_NAMES = {
    "ffn_macaron.w1": "feed_forward1.linear1", "ffn_macaron.w2": "feed_forward1.linear2",
    "ffn.w1": "feed_forward2.linear1", "ffn.w2": "feed_forward2.linear2",
    **{f"attn.{n}": f"self_attn.{n}" for n in ("linear_q", "linear_k", "linear_v", "linear_out", "linear_pos")},
    "conv.pointwise1": "conv.pointwise_conv1", "conv.pointwise2": "conv.pointwise_conv2",
    "norm_ffn_macaron": "norm_feed_forward1", "norm_attn": "norm_self_att", "norm_conv": "norm_conv",
    "norm_ffn": "norm_feed_forward2", "norm_final": "norm_out",
}
_FIXED = {
    "self_attention_model": ("rel_pos",), "causal_downsampling": (False,), "reduction": (None,),
    "feat_out": (-1,), "global_tokens": (0,), "use_bias": (True,), "conv_context_size": (None,),
    "att_context_style": ("regular",), "conv_context_style": ("regular",), "global_attn_separate": (False,),
    "conv_norm_type": ("batch_norm", "layer_norm"),
}
_CLASSES = ("EncDecCTCModelBPE", "EncDecCTCModel")


def read_nemo_archive(path: Path) -> dict[str, bytes]:
    """Member base name -> bytes of a ``.nemo`` tar (plain or gzip). ImportFailed if it is not a tar."""
    require_file(path, "NeMo model (.nemo)")
    try:
        with tarfile.open(path, "r:*") as tar:
            return {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ImportFailed(f"{path}: not a .nemo archive (expected a tar or tar.gz of model_config.yaml and "
                           f"model_weights.ckpt; {type(e).__name__})") from None


def _model_class(conf: dict) -> str:
    return str(conf.get("target", conf.get("_target_", ""))).rsplit(".", 1)[-1]


def nemo_model_config(conf: dict, path: Path, table: TokenTable, subsampling_channels: int | None = None
                      ) -> ModelConfig:
    """The :class:`slimasr.model.ModelConfig` of a NeMo ``model_config.yaml`` (what maps onto what: the module
    docstring; NeMo's ``ConformerEncoder`` arguments).

    Args:
        conf: the parsed ``model_config.yaml`` (the ``model:`` section of a training config).
        path: the source, named in errors and in the config's name (``nemo-<stem>``).
        table: the vocabulary (:func:`nemo_token_table`); the CTC head has ``len(table.tokens)`` outputs.
        subsampling_channels: the pre-encoder's channels as the weights have them; None: the YAML's
            ``encoder.subsampling_conv_channels`` (-1 or absent: ``d_model``, as in NeMo).
    Raises:
        ImportFailed: a model class, encoder, decoder or option slimasr cannot represent.
    """
    model_class = _model_class(conf)
    enc = dict(conf.get("encoder") or {})
    enc_class = str(enc.get("_target_", "")).rsplit(".", 1)[-1]
    dec_class = str((conf.get("decoder") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    if ((model_class and model_class not in _CLASSES) or enc_class != "ConformerEncoder"
            or dec_class != "ConvASRDecoder"):
        raise unsupported(path, "model (class / encoder / decoder)", f"{model_class or '?'} / {enc_class or '?'} / "
                          f"{dec_class or '?'}", [f"{c} / ConformerEncoder / ConvASRDecoder" for c in _CLASSES])
    for key, allowed in _FIXED.items():
        if key in enc and enc[key] not in allowed:
            raise unsupported(path, f"encoder.{key}", enc[key], allowed)
    ctx = enc.get("att_context_size")
    if ctx not in (None, [-1, -1]) and not (isinstance(ctx, list) and ctx and ctx[0] in ([-1, -1],)):
        raise unsupported(path, "encoder.att_context_size", ctx, [[-1, -1]])
    sub = _subsampling(enc)
    if sub not in SUBSAMPLING:
        raise unsupported(path, "encoder.subsampling / subsampling_factor", f"{sub[0]} / {sub[1]}",
                          [f"{a} / {b}" for a, b in SUBSAMPLING])
    d = int(enc.get("d_model", 256))
    if subsampling_channels is None:
        subsampling_channels = int(enc.get("subsampling_conv_channels", -1))
        subsampling_channels = d if subsampling_channels == -1 else subsampling_channels
    return ModelConfig(
        name=f"nemo-{Path(path).stem}", num_mel_bins=int(enc.get("feat_in", 80)),
        subsampling_channels=subsampling_channels, d_model=d,
        num_heads=int(enc.get("n_heads", 4)), ffn_dim=int(d * float(enc.get("ff_expansion_factor", 4))),
        num_layers=int(enc.get("n_layers", 17)), kernel_size=int(enc.get("conv_kernel_size", 31)),
        dropout=float(enc.get("dropout", 0.1)), attention_dropout=float(enc.get("dropout_att", 0.0)),
        vocab_size=len(table.tokens), decoder_layers=0, ctc_weight=1.0, dynamic_chunk=False,
        subsampling=SUBSAMPLING[sub], conv_norm="layer_norm" if _conv_norm(enc) == "layer_norm" else "none",
        final_norm=False, xscaling=bool(enc.get("xscaling", True)), pos_enc="rel", has_sos_eos=False,
    )


def _subsampling(enc: dict) -> tuple[str, int]:
    return enc.get("subsampling", "striding"), int(enc.get("subsampling_factor", 4))


def _conv_norm(enc: dict) -> str:
    return enc.get("conv_norm_type", "batch_norm")


def nemo_token_table(conf: dict, path: Path, files: dict[str, bytes]) -> tuple[TokenTable, bytes | None]:
    """The vocabulary of a NeMo model, blank moved from the last id to 0: the SentencePiece model the
    ``tokenizer`` section names (``nemo:<file>``, looked up in ``files``, the archive's members), or else the
    ``decoder.vocabulary`` list (character models). Returns the token table and the SentencePiece model's bytes
    (None for a vocabulary list).

    Raises:
        ImportFailed: a tokenizer type other than ``bpe``, a missing or unreadable tokenizer model, no vocabulary.
    """
    tok_conf = conf.get("tokenizer") or {}
    sp_proto = None
    if tok_conf:
        if tok_conf.get("type", "bpe") != "bpe":
            raise unsupported(path, "tokenizer.type", tok_conf.get("type"), ["bpe"])
        name = Path(str(tok_conf.get("model_path", "")).removeprefix("nemo:")).name
        if name not in files:
            raise ImportFailed(f"{path}: missing the tokenizer model {name or '(tokenizer.model_path)'} in the "
                               ".nemo archive")
        sp_proto = files[name]
        sp = load_sentencepiece(sp_proto, f"{path}: {name}")
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        unk = sp.unk_id() + 1 if sp.unk_id() >= 0 else None
    else:
        pieces = [str(v) for v in ((conf.get("decoder") or {}).get("vocabulary") or [])]
        if not pieces:
            raise ImportFailed(f"{path}: missing the token table (no tokenizer and no decoder.vocabulary)")
        unk = None
    letters = "".join(c for t in pieces if not t.startswith("<") for c in t if c.isalpha())
    table = TokenTable(tokens=("<blank>", *pieces), unk_id=unk, sos_eos_id=None,
                       upper_case=bool(letters) and letters == letters.upper() and letters != letters.lower(),
                       detokenize="sentencepiece" if sp_proto else "join")
    return table, sp_proto


def nemo_frontend(conf: dict, path: Path, fb: torch.Tensor) -> FrontendConfig:
    """The front-end of a NeMo ``AudioToMelSpectrogramPreprocessor`` (``preprocessor`` section): NeMo's mel with
    the filterbank ``fb`` (1, num_mel_bins, n_fft // 2 + 1) the checkpoint stores as
    ``preprocessor.featurizer.fb``, and per-feature normalisation over the utterance (``normalize: per_feature``).

    Raises:
        ImportFailed: a preprocessor option slimasr's STFT front-end does not compute.
    """
    pconf = dict(conf.get("preprocessor") or {})
    sr = int(pconf.get("sample_rate", conf.get("sample_rate", 16000)))
    for key, want in (("log", True), ("frame_splicing", 1), ("exact_pad", False), ("mag_power", 2.0),
                      ("window", "hann"), ("log_zero_guard_type", "add")):
        if key in pconf and pconf[key] != want:
            raise unsupported(path, f"preprocessor.{key}", pconf[key], [want])
    norm = _normalize(pconf)
    if norm not in ("per_feature", "NA", None):
        raise unsupported(path, "preprocessor.normalize", norm, ["per_feature", "NA"])
    guard = pconf.get("log_zero_guard_value", 2 ** -24)
    if not isinstance(guard, (int, float)):
        raise unsupported(path, "preprocessor.log_zero_guard_value", guard, ["a number (default 2**-24)"])
    n_fft = int(pconf.get("n_fft") or 2 ** (int(sr * float(pconf.get("window_size", 0.02)) - 1)).bit_length())
    stft = StftMelConfig(num_mel_bins=int(fb.shape[-2]), mel_matrix=encode_matrix(fb[0].T.float().numpy()),
                         sample_rate=sr, n_fft=n_fft, win_length=int(round(sr * float(pconf.get("window_size", 0.02)))),
                         hop_length=int(round(sr * float(pconf.get("window_stride", 0.01)))), window="hann_symmetric",
                         center=True, pad_mode="constant", preemph=float(pconf.get("preemph", 0.97) or 0.0),
                         log_guard="add", log_guard_value=float(guard), trim_last_frame=True)
    return FrontendConfig(kind="stft_mel", stft=stft, cmvn="utterance_nemo" if norm == "per_feature" else "global")


def _normalize(pconf: dict):
    return pconf.get("normalize", "per_feature")


def import_nemo(path: str | Path):
    """Import a ``.nemo`` Conformer/FastConformer CTC model (module docstring) as an ASRModel.

    Raises:
        ImportFailed (a ValueError): not a tar, missing members, a model class or option slimasr cannot represent,
            weights that do not match the config, or a vocabulary whose size differs from the CTC head.
    """
    import yaml

    path = Path(path)
    files = read_nemo_archive(path)
    for need in ("model_config.yaml", "model_weights.ckpt"):
        if need not in files:
            raise ImportFailed(f"{path}: missing {need} in the .nemo archive (has: {', '.join(sorted(files))})")
    try:
        conf = yaml.safe_load(files["model_config.yaml"].decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ImportFailed(f"{path}: model_config.yaml is not readable YAML ({exception_line(e)})") from None
    if not isinstance(conf, dict):
        raise ImportFailed(f"{path}: model_config.yaml is not a mapping")
    ckpt_name = "model_weights.ckpt"
    source = read_state_dict(Path(f"{path}:{ckpt_name}"), "NeMo weights", files[ckpt_name])
    head = "decoder.decoder_layers.0"
    if f"{head}.weight" not in source or not any(k.startswith("encoder.layers.") for k in source):
        raise ImportFailed(f"{path}: not a NeMo Conformer CTC checkpoint (no encoder.layers.* / {head} weights)")
    classes = int(source[f"{head}.weight"].shape[0])           # vocabulary + blank (last)

    table, sp_proto = nemo_token_table(conf, path, files)     # blank moves from the last id to 0
    check_vocab(path, len(table.tokens), classes, "the tokenizer (+ blank)")
    pre = "encoder.pre_encode.conv.0.weight"
    cfg = nemo_model_config(conf, path, table, int(source[pre].shape[0]) if pre in source else None)
    enc = dict(conf.get("encoder") or {})
    conv_norm, sub, model_class = _conv_norm(enc), _subsampling(enc), _model_class(conf)

    wm = WeightMap(source, path)
    for j, mod in enumerate(_subsampling_modules(cfg)):
        if mod:
            wm.module(f"encoder.subsampling.conv.{j}", f"encoder.pre_encode.conv.{j}")
    wm.module("encoder.subsampling.out", "encoder.pre_encode.out")
    for i in range(cfg.num_layers):                             # tied biases live once in the encoder
        for b in ("pos_bias_u", "pos_bias_v"):
            if f"encoder.layers.{i}.self_attn.{b}" not in source and f"encoder.{b}" in source:
                wm.source[f"encoder.layers.{i}.self_attn.{b}"] = source[f"encoder.{b}"]
                wm.used.add(f"encoder.{b}")
    conformer_layers(wm, cfg, lambda i: f"encoder.layers.{i}", LAYER_NAMES,
                     {"depthwise": "conv.depthwise_conv", "norm": "conv.batch_norm"},
                     1e-5 if conv_norm == "batch_norm" else None)
    w, b = wm.get(f"{head}.weight"), wm.get(f"{head}.bias")
    if w is not None and b is not None:
        perm = torch.tensor([classes - 1] + list(range(classes - 1)))
        wm.out["ctc.weight"], wm.out["ctc.bias"] = w[:, :, 0][perm], b[perm]
    wm.out["encoder.cmvn_mean"] = torch.zeros(cfg.num_mel_bins)       # NeMo normalises per utterance instead
    wm.out["encoder.cmvn_istd"] = torch.ones(cfg.num_mel_bins)
    fb = wm.get("preprocessor.featurizer.fb")
    wm.used.add("preprocessor.featurizer.window")
    wm.check(ignore=[r".*num_batches_tracked$", r".*\.pe$", r"^encoder\.pos_bias_[uv]$"])

    frontend = nemo_frontend(conf, path, fb)
    norm = _normalize(dict(conf.get("preprocessor") or {}))
    record = {"toolkit": "nemo", "version": (conf.get("nemo_version") or conf.get("target_version")),
              "model": f"{model_class or 'EncDecCTCModel'} / ConformerEncoder ({sub[0]} x{sub[1]})",
              "files": {"nemo": {"name": path.name, "sha256": sha256(path)}},
              "token_order": "source, blank moved from the last id to 0 (source id i -> i + 1)",
              "vocabulary_permutation": {"blank_source_id": classes - 1, "shift": 1},
              "blank_id": 0, "sos_eos_id": None, "cmvn": f"per utterance ({norm})",
              "not_imported": ["inter-CTC loss settings"] if conf.get("interctc") else []}
    return build_model(cfg, wm.out, path, table, sp_proto, record, frontend)


def _subsampling_modules(cfg: ModelConfig) -> list[bool]:
    """Per index of the subsampling Sequential: whether it holds weights (a convolution)."""
    from ..model.encoder import ConvSubsampling

    return [isinstance(m, torch.nn.Conv2d) for m in ConvSubsampling(cfg).conv]
