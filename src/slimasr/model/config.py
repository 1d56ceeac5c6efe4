"""Frozen model configurations and the shipped presets (``tiny``, ``small``, ``paper``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a joint CTC/attention Conformer (WeNet U2++ / ESPnet style).

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
    kernel_size: int = 15                   # depthwise convolution kernel (odd)
    dropout: float = 0.1
    attention_dropout: float = 0.0
    # --- heads
    vocab_size: int = 258                   # includes <blank>=0 and <sos/eos>=vocab_size-1
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

    subsampling_factor: int = 4             # fixed by the front-end (two stride-2 convolutions)
    right_context: int = 6                  # extra input frames one output frame needs beyond its stride

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.decoder_layers and self.d_model % self.decoder_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by decoder_heads ({self.decoder_heads})")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (blank, one token, sos/eos), got {self.vocab_size}")
        for p in self.intermediate_ctc_layers:
            if not 1 <= p < self.num_layers:
                raise ValueError(f"intermediate CTC position {p} must be in [1, {self.num_layers - 1}]")
        if self.original_layers is not None and len(self.original_layers) != self.num_layers:
            raise ValueError("original_layers must list one original index per layer")
        if self.subsampling_factor != 4 or self.right_context != 6:
            raise ValueError("only the 4x Conv2d front-end (subsampling_factor 4, right_context 6) is implemented")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def conv_cache_frames(self) -> int:
        """Left frames the dynamic chunk convolution carries between chunks: (kernel - 1) / 2."""
        return (self.kernel_size - 1) // 2

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def sos_eos_id(self) -> int:
        return self.vocab_size - 1

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["intermediate_ctc_layers"] = list(self.intermediate_ctc_layers)
        if self.original_layers is not None:
            d["original_layers"] = list(self.original_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "intermediate_ctc_layers" in d:
            d["intermediate_ctc_layers"] = tuple(d["intermediate_ctc_layers"])
        if d.get("original_layers") is not None:
            d["original_layers"] = tuple(d["original_layers"])
        return cls(**d)


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
