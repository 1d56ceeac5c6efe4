"""The Conformer CTC/attention model."""
from .asr import ASRModel, EncoderState, build_model, default_model_path, load_model
from .average import average_checkpoints
from .config import PAPER, SHIPPED_CONFIGS, SMALL, TINY, ModelConfig, get_config

__all__ = ["ASRModel", "EncoderState", "ModelConfig", "build_model", "load_model", "average_checkpoints", "get_config",
           "default_model_path", "SHIPPED_CONFIGS", "TINY", "SMALL", "PAPER"]
