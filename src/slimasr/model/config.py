"""Frozen model configurations and the shipped presets (``tiny``, ``small``, ``paper``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Convolutional subsampling front-ends (``ModelConfig.subsampling``): per stage (kernel, stride, time padding)
# along the time axis. ``conv2d*``: WeNet ``Conv2dSubsampling{4,6,8}`` / ESPnet ``Conv2dSubsampling{,6,8}``
# (no padding); ``striding4``: NeMo ``ConvSubsampling('striding')``; ``dw_striding8``: NeMo FastConformer's
# ``ConvSubsampling('dw_striding')`` (one full 3x3 convolution, then depthwise + pointwise pairs); ``dw_striding4``:
# the same depthwise-separable second stage on ``conv2d4``'s geometry (no time padding, same frame rate and
# chunk windows), the cheap front-end a pruned ``conv2d4`` model switches to (slimasr.prune.surgery).
SUBSAMPLING_STAGES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "conv2d4": ((3, 2, 0), (3, 2, 0)),
    "conv2d6": ((3, 2, 0), (5, 3, 0)),
    "conv2d8": ((3, 2, 0), (3, 2, 0), (3, 2, 0)),
    "striding4": ((3, 2, 1), (3, 2, 1)),
    "dw_striding8": ((3, 2, 1), (3, 2, 1), (3, 2, 1)),
    "dw_striding4": ((3, 2, 0), (3, 2, 0)),
}
# Positional variants of the self-attention (``ModelConfig.pos_enc``):
#   rel      Transformer-XL relative positions with rel_shift (ESPnet ``rel_pos_type: latest``, NeMo, slimasr);
#   abs_key  WeNet's RelPositionMultiHeadedAttention: no rel_shift, the position term is a sinusoid of the key's
#            absolute position (streaming: positions start at offset - cached frames);
#   legacy   ESPnet ``legacy_rel_pos``: absolute positions under a square rel_shift, so scores depend on the
#            utterance length: whole utterances only, never streamed.
POS_ENC_KINDS = ("rel", "abs_key", "legacy")
CONV_NORMS = ("layer_norm", "none")       # BatchNorm is folded into the depthwise convolution at import -> "none"


class StreamingRefused(ValueError):
    """A model that cannot be decoded chunk by chunk was asked to stream (the message says why); callers that can
    decode whole utterances instead catch it (``slimasr transcribe``)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a joint CTC/attention Conformer (WeNet U2++ / ESPnet style).

    The "layer variants" fields let the one Conformer layer hold models trained by WeNet, ESPnet and NeMo
    (:mod:`slimasr.importers`); their defaults are slimasr's own layer, so older checkpoints load unchanged.
    ``subsampling_factor``, ``right_context`` and ``left_context`` are derived from ``subsampling``.

    Layer positions in ``intermediate_ctc_layers`` are 1-based: ``6`` means "the output of the 6th encoder layer".
    ``original_layers`` records which layers of the model this one was pruned from (0-based indices into the
    original stack); ``None`` means the model was not pruned.
    """

    name: str = "custom"
    # --- input
    num_mel_bins: int = 80                  # fbank dimension
    subsampling_channels: int = 32          # channels of the two 3x3 stride-2 convolutions (dominant cost at small d)
    # --- encoder
    d_model: int = 144                      # attention dimension
    num_heads: int = 4
    ffn_dim: int = 576                      # hidden size of each (half-step) feed-forward module
    num_layers: int = 12
    kernel_size: int = 15                   # depthwise convolution kernel (odd unless causal_conv)
    dropout: float = 0.1
    attention_dropout: float = 0.0
    # --- heads
    vocab_size: int = 258                   # includes <blank>=0 and <sos/eos> (sos_eos_token)
    decoder_layers: int = 1                 # shallow attention decoder (training only)
    decoder_heads: int = 4
    decoder_ffn_dim: int = 576
    intermediate_ctc_layers: tuple[int, ...] = ()   # 1-based encoder layer positions feeding intermediate CTC
    # --- loss
    ctc_weight: float = 0.3                 # joint loss = ctc_weight * CTC + (1 - ctc_weight) * attention
    intermediate_ctc_weight: float = 0.3    # CTC part = (1 - w) * final CTC + w * mean(intermediate CTCs)
    label_smoothing: float = 0.1
    # --- dynamic chunk training (unified streaming / non-streaming)
    dynamic_chunk: bool = True
    full_context_prob: float = 0.5          # probability of a full-context batch
    max_chunk_size: int = 25                # chunk sizes are drawn from [1, max_chunk_size] (encoder frames)
    dynamic_left_chunks: bool = True
    max_left_chunks: int = 8                # left chunks drawn from [1, max_left_chunks] (or unlimited)
    limited_left_prob: float = 0.5          # probability that a chunked batch gets a limited left context
    # --- provenance
    original_layers: tuple[int, ...] | None = None
    # --- layer variants (the defaults are slimasr's own layer; importers set them to match a source model)
    subsampling: str = "conv2d4"            # a key of SUBSAMPLING_STAGES
    layer_norm_eps: float = 1e-5            # every LayerNorm (ESPnet: 1e-12)
    conv_norm: str = "layer_norm"           # norm after the depthwise convolution: "layer_norm" or "none"
    causal_conv: bool = False               # WeNet ``causal: true``: left-only depthwise conv, cache before pointwise1
    final_norm: bool = True                 # LayerNorm after the last layer (NeMo: none)
    xscaling: bool = True                   # scale the subsampled embeddings by sqrt(d_model)
    pos_enc: str = "rel"                    # one of POS_ENC_KINDS
    sos_eos_token: int | None = None        # id of <sos/eos>; None: vocab_size - 1 (when has_sos_eos)
    has_sos_eos: bool = True                # False: the vocabulary has no <sos/eos> (NeMo); no attention decoder

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.decoder_layers and self.d_model % self.decoder_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by decoder_heads ({self.decoder_heads})")
        if self.kernel_size < 1 or (self.kernel_size % 2 != 1 and not self.causal_conv):
            raise ValueError(f"kernel_size must be odd (even kernels need causal_conv), got {self.kernel_size}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (blank, one token, sos/eos), got {self.vocab_size}")
        for p in self.intermediate_ctc_layers:
            if not 1 <= p < self.num_layers:
                raise ValueError(f"intermediate CTC position {p} must be in [1, {self.num_layers - 1}]")
        if self.original_layers is not None and len(self.original_layers) != self.num_layers:
            raise ValueError("original_layers must list one original index per layer")
        for name, value, allowed in (("subsampling", self.subsampling, tuple(SUBSAMPLING_STAGES)),
                                     ("pos_enc", self.pos_enc, POS_ENC_KINDS),
                                     ("conv_norm", self.conv_norm, CONV_NORMS)):
            if value not in allowed:
                raise ValueError(f"unsupported {name} {value!r}; supported: {', '.join(allowed)}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.sos_eos_token is not None and not 0 < self.sos_eos_token < self.vocab_size:
            raise ValueError(f"sos_eos_token must be in [1, {self.vocab_size}), got {self.sos_eos_token}")
        if not self.has_sos_eos and (self.sos_eos_token is not None or self.decoder_layers):
            raise ValueError("a vocabulary without <sos/eos> (has_sos_eos=False) has no sos_eos_token and no "
                             f"attention decoder, got sos_eos_token={self.sos_eos_token}, "
                             f"decoder_layers={self.decoder_layers}")

    # --- derived from the subsampling front-end
    @property
    def subsampling_stages(self) -> tuple[tuple[int, int, int], ...]:
        """(kernel, stride, time padding) of each strided stage of the subsampling front-end."""
        return SUBSAMPLING_STAGES[self.subsampling]

    @property
    def subsampling_factor(self) -> int:
        """Feature frames per encoder frame: the product of the stage strides."""
        f = 1
        for _, s, _ in self.subsampling_stages:
            f *= s
        return f

    @property
    def left_context(self) -> int:
        """Feature frames before ``n * subsampling_factor`` that encoder frame ``n`` reads (zero padding at the
        start for padded front-ends): sum over stages of padding x product of earlier strides."""
        left, stride = 0, 1
        for _, s, p in self.subsampling_stages:
            left += p * stride
            stride *= s
        return left

    @property
    def right_context(self) -> int:
        """Feature frames a streaming window holds beyond its chunk's strides: one encoder frame reads
        ``right_context + 1`` consecutive feature frames (``left_context`` of them before its own position)."""
        reach, stride = 0, 1
        for k, s, _ in self.subsampling_stages:
            reach += (k - 1) * stride
            stride *= s
        return reach

    @property
    def streamable(self) -> bool:
        """Whether the encoder can run chunk by chunk (ESPnet's legacy positions cannot)."""
        return self.pos_enc != "legacy"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def conv_cache_frames(self) -> int:
        """Left frames the convolution module carries between chunks: (kernel - 1) / 2 for the dynamic chunk
        convolution (after GLU), kernel - 1 for the causal one (before pointwise_conv1, WeNet's ``lorder``)."""
        return self.kernel_size - 1 if self.causal_conv else (self.kernel_size - 1) // 2

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def sos_eos_id(self) -> int | None:
        """Id of ``<sos/eos>``: ``sos_eos_token``, else the last id; None when the vocabulary has none."""
        if not self.has_sos_eos:
            return None
        return self.vocab_size - 1 if self.sos_eos_token is None else self.sos_eos_token

    def check_streaming(self, frontend=None, onnx: bool = False) -> None:
        """Raise :class:`StreamingRefused` with :meth:`streaming_refusal`'s reason when the model cannot stream."""
        why = self.streaming_refusal(frontend, onnx)
        if why:
            raise StreamingRefused(why)

    def streaming_refusal(self, frontend=None, onnx: bool = False) -> str | None:
        """Why this model cannot be decoded chunk by chunk (None: it can); the one answer for the streaming
        export, the runtime, bench and the server.

        Args:
            frontend: the model's :class:`slimasr.features.FrontendConfig` (features normalised per utterance
                need the whole utterance); None: the encoder alone.
            onnx: in a streaming ONNX export (padded subsampling front-ends stream in PyTorch only: their chunks
                read frames before their stride, which the export's fixed windows do not carry).
        """
        if not self.streamable:
            return (f"this model cannot stream (pos_enc={self.pos_enc!r}: ESPnet's legacy relative positions "
                    "depend on the utterance length)")
        if frontend is not None and frontend.cmvn not in ("global",):
            return (f"its front-end normalises features per utterance (cmvn={frontend.cmvn!r}), which needs the "
                    "whole utterance")
        if onnx and self.left_context:
            return (f"a streaming export of the padded {self.subsampling!r} subsampling (NeMo) is not supported: "
                    "its chunks read frames before their stride")
        return None

    def with_dynamic_chunk(self, on: bool, frontend=None) -> "ModelConfig":
        """This config with dynamic chunk training (WeNet U2, random chunk sizes and left contexts per batch)
        switched on or off: how a model trained on whole utterances is fine-tuned to stream.

        Args:
            frontend: the model's :class:`slimasr.features.FrontendConfig` (one that normalises per utterance
                can never run in chunks); None: the encoder alone.
        Raises:
            ValueError: ``on`` for a model that cannot run in chunks (ESPnet's legacy positions, per-utterance
                feature normalisation).
        """
        why = self.streaming_refusal(frontend) if on else None
        if why:
            raise ValueError(f"dynamic chunk training needs a model that can run in chunks; {why}")
        return dataclasses.replace(self, dynamic_chunk=bool(on))

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["subsampling_factor"] = self.subsampling_factor       # derived; stored for readers of the file
        d["right_context"] = self.right_context
        d["intermediate_ctc_layers"] = list(self.intermediate_ctc_layers)
        if self.original_layers is not None:
            d["original_layers"] = list(self.original_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        d = dict(d)
        # checkpoints written before the front-end was configurable stored its (fixed) geometry
        for key in ("subsampling_factor", "right_context"):
            unknown.discard(key)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        stored = {k: d.pop(k) for k in ("subsampling_factor", "right_context") if k in d}
        if "intermediate_ctc_layers" in d:
            d["intermediate_ctc_layers"] = tuple(d["intermediate_ctc_layers"])
        if d.get("original_layers") is not None:
            d["original_layers"] = tuple(d["original_layers"])
        cfg = cls(**d)
        for k, v in stored.items():
            if v != getattr(cfg, k):
                raise ValueError(f"model config {k}={v} does not match its subsampling {cfg.subsampling!r} "
                                 f"({k}={getattr(cfg, k)})")
        return cfg


TINY = ModelConfig(
    name="tiny", subsampling_channels=8, d_model=32, num_heads=2, ffn_dim=64, num_layers=4, kernel_size=7,
    vocab_size=40, decoder_layers=1, decoder_heads=2, decoder_ffn_dim=64, intermediate_ctc_layers=(2,),
    dropout=0.0, max_chunk_size=8, max_left_chunks=4,
)

# Sized for 2 CPU cores: 12 layers so that 20% / 40% layer pruning (12 -> 10 / 7) is meaningful.
SMALL = ModelConfig(
    name="small", subsampling_channels=32, d_model=144, num_heads=4, ffn_dim=576, num_layers=12, kernel_size=15,
    vocab_size=258, decoder_layers=1, decoder_heads=4, decoder_ffn_dim=576, intermediate_ctc_layers=(6,),
)

# The paper's 20x1 model (section 4.2): 20 encoder layers, d=512, 8 heads, FFN 2048, kernel 31, 2048 units.
PAPER = ModelConfig(
    name="paper", subsampling_channels=512, d_model=512, num_heads=8, ffn_dim=2048, num_layers=20, kernel_size=31,
    vocab_size=2048, decoder_layers=1, decoder_heads=8, decoder_ffn_dim=2048, intermediate_ctc_layers=(10,),
    max_left_chunks=4,
)

SHIPPED_CONFIGS: dict[str, ModelConfig] = {c.name: c for c in (TINY, SMALL, PAPER)}


def get_config(name_or_config: "str | ModelConfig") -> ModelConfig:
    """A shipped configuration by name, or the given config object unchanged."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        if name_or_config in SHIPPED_CONFIGS:
            return SHIPPED_CONFIGS[name_or_config]
        raise ValueError(f"unknown config {name_or_config!r}; shipped configs: {sorted(SHIPPED_CONFIGS)}")
    raise TypeError(f"expected a config name or ModelConfig, got {type(name_or_config).__name__}")
