"""What every importer shares: reading files with clear errors, Conformer weight mapping, BatchNorm folding,
the final strict load into :class:`slimasr.model.ASRModel` and the provenance record."""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..features import FrontendConfig
from ..fileutil import exception_line
from ..model import ASRModel, ModelConfig
from ..tokenizer import TokenTable, Tokenizer

__all__ = ["ImportFailed", "check_options", "read_yaml", "read_state_dict", "sha256", "fold_batch_norm", "WeightMap",
           "unsupported", "build_model", "LAYER_NAMES_ESPNET"]


class ImportFailed(ValueError):
    """A source model slimasr cannot import; the message is one line naming the file and what was expected."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else ImportFailed naming ``what`` (e.g. "WeNet CMVN file global_cmvn")."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"{path}: missing {what}")
    return path


def load_sentencepiece(data: bytes, what: str):
    """A ``sentencepiece.SentencePieceProcessor`` loaded from the serialized model ``data`` (a BPE model file's
    bytes, e.g. WeNet's ``bpe_path``, ESPnet's ``bpemodel``, a .nemo's ``tokenizer.model``). Raises ImportFailed
    naming ``what`` when the bytes are not a SentencePiece model (a truncated or foreign file)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(data)
    except (OSError, RuntimeError) as e:
        raise ImportFailed(f"{what}: not a SentencePiece model ({exception_line(e, 120)})") from None
    return sp


def read_yaml(path: Path, what: str) -> dict:
    import yaml

    require_file(path, what)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ImportFailed(f"{path}: not a readable YAML {what} ({exception_line(e)})") from None
    if not isinstance(data, dict):
        raise ImportFailed(f"{path}: expected a YAML mapping ({what}), got {type(data).__name__}")
    return data


def _is_torchscript(data: bytes) -> bool:
    """A ``torch.jit.save`` archive: a zip whose members include the compiled ``code/`` (torch.save's has none)."""
    import zipfile

    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any("/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def read_state_dict(path: Path, what: str, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read with ``torch.load(weights_only=True)``; nested ``state_dict`` / ``model``
    entries (Lightning, training checkpoints) are unwrapped."""
    if data is None:
        require_file(path, what)
        data = Path(path).read_bytes()
    if _is_torchscript(data):
        raise ImportFailed(f"{path}: a TorchScript model (torch.jit.save, e.g. WeNet's runtime final.zip) holds "
                           f"compiled code, not a {what}: give the training checkpoint (final.pt, avg_N.pt)")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for corrupt or foreign files
        raise ImportFailed(f"{path}: not a readable PyTorch {what} ({type(e).__name__}: {exception_line(e, 120)})"
                           ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and not isinstance(obj.get(key), torch.Tensor):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ImportFailed(f"{path}: expected a {what} (a dict of tensors), got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def unsupported(path: Path, option: str, value: Any, supported: Iterable[Any]) -> ImportFailed:
    allowed = ", ".join(str(s) for s in supported)
    return ImportFailed(f"{path}: {option}={value!r} cannot be represented by slimasr (supported: {allowed})")


def check_options(path: Path, section: str, options: Mapping[str, Any], fixed: Mapping[str, tuple],
                  free: Iterable[str]) -> None:
    """ImportFailed for an option whose value slimasr cannot represent (``fixed``: option -> allowed values) or an
    option it does not know at all (neither in ``fixed`` nor in ``free``, the options any value of which maps)."""
    free = set(free)
    for key, value in options.items():
        if key in fixed and value not in fixed[key]:
            raise unsupported(path, f"{section}.{key}", value, fixed[key])
        if key not in fixed and key not in free:
            raise ImportFailed(f"{path}: {section}.{key} is an option slimasr does not know; supported: "
                               f"{', '.join(sorted(set(fixed) | free))}")


# ESPnet's and WeNet's ``encoder_conf.input_layer`` -> ``ModelConfig.subsampling`` (the same modules in both)
CONV2D_SUBSAMPLING = {"conv2d": "conv2d4", "conv2d6": "conv2d6", "conv2d8": "conv2d8"}


def conv2d_subsampling(path: Path, enc: Mapping[str, Any]) -> str:
    """``ModelConfig.subsampling`` of an ESPnet / WeNet ``encoder_conf`` (ImportFailed for other input layers)."""
    input_layer = enc.get("input_layer", "conv2d")
    if input_layer not in CONV2D_SUBSAMPLING:
        raise unsupported(path, "encoder_conf.input_layer", input_layer, CONV2D_SUBSAMPLING)
    return CONV2D_SUBSAMPLING[input_layer]


def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                    gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm1d that follows a depthwise Conv1d into the convolution.

    ``BN(conv(x)) = gamma * (W * x + b - mean) / sqrt(var + eps) + beta = (s W) * x + s (b - mean) + beta`` with
    ``s = gamma / sqrt(var + eps)`` per channel. weight (C, 1, k), bias/statistics (C,). Computed in float64.
    """
    s = gamma.double() / torch.sqrt(var.double() + eps)
    w = weight.double() * s[:, None, None]
    b = (bias.double() - mean.double()) * s + beta.double()
    return w.float(), b.float()


# slimasr's layer names <- ESPnet's / WeNet's (identical in both toolkits), relative to one Conformer layer
LAYER_NAMES_ESPNET = {
    "ffn_macaron.w1": "feed_forward_macaron.w_1", "ffn_macaron.w2": "feed_forward_macaron.w_2",
    "ffn.w1": "feed_forward.w_1", "ffn.w2": "feed_forward.w_2",
    **{f"attn.{n}": f"self_attn.{n}" for n in ("linear_q", "linear_k", "linear_v", "linear_out", "linear_pos")},
    "conv.pointwise1": "conv_module.pointwise_conv1", "conv.pointwise2": "conv_module.pointwise_conv2",
    "norm_ffn_macaron": "norm_ff_macaron", "norm_attn": "norm_mha", "norm_conv": "norm_conv",
    "norm_ffn": "norm_ff", "norm_final": "norm_final",
}


class WeightMap:
    """Builds slimasr's state dict from a source state dict, remembering which source keys were used, so that the
    final check can list both what the source lacks and what it has that nothing used."""

    def __init__(self, source: Mapping[str, torch.Tensor], path: Path):
        self.source = dict(source)
        self.path = path
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.out: dict[str, torch.Tensor] = {}

    def get(self, key: str) -> torch.Tensor | None:
        if key not in self.source:
            self.missing.append(key)
            return None
        self.used.add(key)
        return self.source[key]

    def has(self, key: str) -> bool:
        return key in self.source

    def put(self, dst: str, src: str, fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        t = self.get(src)
        if t is not None:
            self.out[dst] = fn(t) if fn is not None else t

    def module(self, dst: str, src: str, params: Iterable[str] = ("weight", "bias")) -> None:
        for p in params:
            self.put(f"{dst}.{p}", f"{src}.{p}")

    def batch_norm_into(self, dst_conv: str, src_conv: str, src_bn: str, eps: float) -> None:
        """The depthwise conv ``src_conv`` followed by BatchNorm ``src_bn`` -> the folded conv ``dst_conv``."""
        parts = [self.get(k) for k in (f"{src_conv}.weight", f"{src_conv}.bias", f"{src_bn}.running_mean",
                                       f"{src_bn}.running_var", f"{src_bn}.weight", f"{src_bn}.bias")]
        if f"{src_bn}.num_batches_tracked" in self.source:
            self.used.add(f"{src_bn}.num_batches_tracked")
        if all(p is not None for p in parts):
            w, b = fold_batch_norm(*parts, eps=eps)
            self.out[f"{dst_conv}.weight"], self.out[f"{dst_conv}.bias"] = w, b

    def check(self, ignore: Iterable[str] = ()) -> None:
        """ImportFailed listing missing keys and unused source keys (outside the ``ignore`` regexes)."""
        pats = [re.compile(p) for p in ignore]
        unexpected = sorted(k for k in self.source if k not in self.used and not any(p.match(k) for p in pats))
        if self.missing or unexpected:
            def show(keys):
                return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
            parts = []
            if self.missing:
                parts.append(f"missing keys: {show(self.missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {show(unexpected)}")
            raise ImportFailed(f"{self.path}: state_dict does not match its config; " + "; ".join(parts))


def conformer_layers(wm: WeightMap, cfg: ModelConfig, src_layer: Callable[[int], str],
                     names: Mapping[str, str], conv_src: Mapping[str, str], bn_eps: float | None) -> None:
    """Map every layer's weights. ``names``: slimasr module -> source module (relative to the layer);
    ``conv_src``: "depthwise" / "norm" -> source names of the depthwise conv and its norm; ``bn_eps`` set when
    that norm is a BatchNorm to fold (``cfg.conv_norm`` is then "none")."""
    for i in range(cfg.num_layers):
        src, dst = src_layer(i), f"encoder.layers.{i}"
        for d, s in names.items():
            wm.module(f"{dst}.{d}", f"{src}.{s}", ("weight",) if d == "attn.linear_pos" else ("weight", "bias"))
        wm.put(f"{dst}.attn.pos_bias_u", f"{src}.self_attn.pos_bias_u")
        wm.put(f"{dst}.attn.pos_bias_v", f"{src}.self_attn.pos_bias_v")
        if bn_eps is not None:
            wm.batch_norm_into(f"{dst}.conv.depthwise", f"{src}.{conv_src['depthwise']}", f"{src}.{conv_src['norm']}",
                               bn_eps)
        else:
            wm.module(f"{dst}.conv.depthwise", f"{src}.{conv_src['depthwise']}")
            if cfg.conv_norm == "layer_norm":
                wm.module(f"{dst}.conv.norm", f"{src}.{conv_src['norm']}")


def build_model(cfg: ModelConfig, weights: Mapping[str, torch.Tensor], path: Path, table: TokenTable,
                sp_proto: bytes | None, source: dict, frontend: FrontendConfig) -> ASRModel:
    """An ASRModel with exactly ``weights`` (strict), the token table (+ SentencePiece model) as its tokenizer,
    ``frontend`` as its front-end and ``source`` as its provenance. ImportFailed when shapes disagree with the
    config."""
    model = ASRModel(cfg)
    state = model.state_dict()
    missing = sorted(k for k in state if k not in weights)
    extra = sorted(k for k in weights if k not in state)
    if missing or extra:  # a bug in an importer's mapping, not in the user's file; still say what is wrong
        raise ImportFailed(f"{path}: cannot place weights (missing: {missing[:6]}, unexpected: {extra[:6]})")
    for k, v in weights.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise ImportFailed(f"{path}: {k} has shape {tuple(v.shape)}, the config implies {tuple(state[k].shape)}")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    model.attach_tokenizer(Tokenizer(model_proto=sp_proto, table=table).to_bytes())
    try:
        model.set_frontend(frontend)
    except ValueError as e:
        raise ImportFailed(f"{path}: {e}") from None
    model.source = source
    return model.eval()


def check_vocab(path: Path, n_tokens: int, ctc_rows: int, what: str) -> None:
    if n_tokens != ctc_rows:
        raise ImportFailed(f"{path}: {what} has {n_tokens} tokens but the CTC head has {ctc_rows} outputs")
