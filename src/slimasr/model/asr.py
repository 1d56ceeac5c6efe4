"""The joint CTC/attention Conformer ASR model: training loss, offline and streaming CTC inference, save/load."""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..chunking import Chunking, min_frames
from ..features import FrontendConfig
from ..fileutil import exception_line
from .config import ModelConfig, get_config
from .decoder import TransformerDecoder, attention_loss
from .encoder import ConformerEncoder

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "slimasr-model"
CHECKPOINT_VERSION = 2   # 2: the front-end settings ("frontend") are stored; version 1 checkpoints lack them


@dataclass
class EncoderState:
    """Everything a stream carries between chunks. Created by ``ASRModel.init_state``; modules hold no state.

    Attributes:
        att_cache: per layer (keys, values), each (B, H, Tc, d_k): the projected keys/values of the last
            ``left_chunks * chunk_size`` encoder frames (all of them when left context is unlimited).
        conv_cache: per layer (B, D, (k-1)/2): the depthwise convolution's left context.
        offset: encoder frames emitted so far.
        pending: (B, t, F) feature frames received but not yet consumed by a chunk.
    """

    att_cache: list[tuple[torch.Tensor, torch.Tensor]]
    conv_cache: list[torch.Tensor]
    offset: int
    pending: torch.Tensor


def _atomic_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ASRModel(nn.Module):
    """Conformer encoder + CTC head (+ intermediate CTC) + shallow attention decoder.

    Inference uses the encoder and the CTC head only. Token ids: 0 = <blank>, vocab_size - 1 = <sos/eos>.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = ConformerEncoder(config)
        self.ctc = nn.Linear(config.d_model, config.vocab_size)
        self.decoder = TransformerDecoder(config) if config.decoder_layers > 0 else None
        # Serialized SentencePiece model (uint8), or empty when no tokenizer is attached.
        self.register_buffer("tokenizer_proto", torch.zeros(0, dtype=torch.uint8), persistent=False)
        # draws of dynamic chunk training (sample_chunking); the trainer seeds it and checkpoints its state
        self.chunk_generator = torch.Generator().manual_seed(0)
        # Where an imported model came from (toolkit, version, file digests, vocabulary changes): JSON-able dict,
        # saved in the checkpoint and the export metadata; None for models slimasr trained.
        self.source: dict | None = None
        self.frontend = FrontendConfig.for_model(config.num_mel_bins)   # see set_frontend

    def set_frontend(self, frontend: FrontendConfig) -> None:
        """The front-end whose features this model reads (:class:`slimasr.features.FrontendConfig`); saved in the
        checkpoint and written into every export. Raises ValueError if its dimension is not ``num_mel_bins``."""
        if not isinstance(frontend, FrontendConfig):
            raise ValueError(f"expected a FrontendConfig, got {type(frontend).__name__}")
        if frontend.dim != self.config.num_mel_bins:
            raise ValueError(f"front-end gives {frontend.dim} values per frame, the model reads "
                             f"{self.config.num_mel_bins}")
        self.frontend = frontend

    # ------------------------------------------------------------------ checks
    def _check_feats(self, feats: torch.Tensor, finite: bool = True) -> None:
        """Shape and dimension checks; with ``finite`` (inference) also refuses NaN/inf features."""
        if not isinstance(feats, torch.Tensor):
            raise ValueError(f"features must be a torch.Tensor, got {type(feats).__name__}")
        if feats.dim() != 3:
            raise ValueError(f"features must be (batch, frames, {self.config.num_mel_bins}), got shape "
                             f"{tuple(feats.shape)}")
        if feats.size(-1) != self.config.num_mel_bins:
            raise ValueError(f"wrong feature dimension: expected {self.config.num_mel_bins} fbank bins, "
                             f"got {feats.size(-1)}")
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if finite and not tracing and not bool(torch.isfinite(feats).all()):
            raise ValueError("features contain NaN or infinite values (audio far outside [-1, 1], or a broken "
                             "front-end); refusing to decode them")

    @property
    def min_frames(self) -> int:
        """Feature frames the front-end needs for one encoder frame (:func:`slimasr.chunking.min_frames`)."""
        return min_frames(self.config.right_context)

    def chunking(self, chunk_size: int, left_chunks: int | None = None) -> Chunking:
        """:class:`slimasr.chunking.Chunking` of ``chunk_size`` encoder frames for this model's front-end."""
        return Chunking.for_model(self.config, chunk_size, left_chunks)

    def _check_chunking(self, chunk_size: int | None, left_chunks: int | None) -> None:
        if chunk_size is not None:
            self.chunking(chunk_size, left_chunks)        # raises ValueError for bad values
        elif left_chunks is not None and (isinstance(left_chunks, bool) or not isinstance(left_chunks, int)
                                          or left_chunks < 0):
            raise ValueError(f"left_chunks must be >= 0 or None (unlimited), got {left_chunks!r}")

    def _check_length(self, frames: int) -> None:
        if frames < self.min_frames:
            raise ValueError(f"input too short: need at least {self.min_frames} feature frames, got {frames}")

    # ------------------------------------------------------------------ tokenizer
    def attach_tokenizer(self, proto: bytes | None) -> None:
        data = torch.frombuffer(bytearray(proto), dtype=torch.uint8).clone() if proto else torch.zeros(0, dtype=torch.uint8)
        self.tokenizer_proto = data

    @property
    def tokenizer_bytes(self) -> bytes | None:
        return bytes(self.tokenizer_proto.cpu().numpy().tobytes()) if self.tokenizer_proto.numel() else None

    def set_cmvn(self, mean, istd) -> None:
        self.encoder.cmvn_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.encoder.cmvn_istd.copy_(torch.as_tensor(istd, dtype=torch.float32))

    # ------------------------------------------------------------------ training
    def sample_chunking(self) -> tuple[int | None, int | None]:
        """Dynamic chunk training: a random (chunk_size, left_chunks) for one batch (full context = (None, None)),
        drawn from the model's own ``chunk_generator`` (WeNet ``add_optional_chunk_mask``)."""
        cfg = self.config
        g = self.chunk_generator

        def uniform() -> float:
            return float(torch.rand((), generator=g))

        def randint(lo: int, hi: int) -> int:  # inclusive, like random.randint
            return int(torch.randint(lo, hi + 1, (), generator=g))

        if not (self.training and cfg.dynamic_chunk) or uniform() < cfg.full_context_prob:
            return None, None
        chunk = randint(1, cfg.max_chunk_size)
        left = None
        if cfg.dynamic_left_chunks and uniform() < cfg.limited_left_prob:
            left = randint(1, cfg.max_left_chunks)
        return chunk, left

    def forward(self, feats: torch.Tensor, feats_lens: torch.Tensor, targets: torch.Tensor,
                target_lens: torch.Tensor, chunk_size: int | None = None, left_chunks: int | None = None,
                sample_chunking: bool = True) -> dict[str, torch.Tensor]:
        """Joint CTC / intermediate CTC / attention loss.

        Args:
            feats (B, T, F), feats_lens (B,), targets (B, U) token ids padded with -1, target_lens (B,).
            chunk_size / left_chunks: a fixed chunking; when None and ``sample_chunking`` is set in training
                mode, dynamic chunk training draws one per batch.
        Returns:
            dict with ``loss`` (the total) and its parts ``ctc``, ``inter_ctc`` (if any), ``att`` (if a decoder).
        """
        self._check_feats(feats, finite=False)   # training: a bad batch shows as a non-finite loss
        cfg = self.config
        if chunk_size is None and sample_chunking:
            chunk_size, left_chunks = self.sample_chunking()
        enc, enc_lens, inter = self.encoder.forward_layers_with_intermediate(
            feats, feats_lens, chunk_size, left_chunks, cfg.intermediate_ctc_layers)
        ctc = self._ctc_loss(enc, enc_lens, targets, target_lens)
        out = {"ctc": ctc.detach()}
        ctc_total = ctc
        if inter:
            inter_loss = torch.stack([self._ctc_loss(h, enc_lens, targets, target_lens) for h in inter]).mean()
            out["inter_ctc"] = inter_loss.detach()
            w = cfg.intermediate_ctc_weight
            ctc_total = (1 - w) * ctc + w * inter_loss
        if self.decoder is not None and cfg.ctc_weight < 1.0:
            att = attention_loss(self.decoder, enc, enc_lens, targets, target_lens, cfg.sos_eos_id,
                                 cfg.label_smoothing)
            out["att"] = att.detach()
            loss = cfg.ctc_weight * ctc_total + (1 - cfg.ctc_weight) * att
        else:
            loss = ctc_total
        out["loss"] = loss
        return out

    def _ctc_loss(self, enc, enc_lens, targets, target_lens) -> torch.Tensor:
        log_probs = F.log_softmax(self.ctc(enc).float(), dim=-1).transpose(0, 1)   # (T, B, V)
        loss = F.ctc_loss(log_probs, targets.clamp(min=0), enc_lens, target_lens, blank=0,
                          reduction="sum", zero_infinity=True)
        return loss / targets.size(0)

    # ------------------------------------------------------------------ offline inference
    def ctc_log_probs(self, feats: torch.Tensor, feats_lens: torch.Tensor | None = None,
                      chunk_size: int | None = None, left_chunks: int | None = None):
        """CTC log-probabilities of whole utterances.

        Args:
            feats: (B, T, F) fbank features (zero-padded); feats_lens: (B,) lengths (default: all T).
            chunk_size: None = full context; else chunk attention masks and dynamic chunk convolution exactly
                as in training (and as ``stream_log_probs`` computes chunk by chunk).
            left_chunks: visible left chunks, None = unlimited.
        Returns:
            log_probs (B, T', V), out_lens (B,); T' = ``slimasr.chunking.output_frames(T, S, R)``.
        Raises:
            ValueError: bad shape or feature dimension, NaN/inf features, fewer than ``min_frames`` frames,
                bad chunking.
        """
        self._check_feats(feats)
        self._check_chunking(chunk_size, left_chunks)
        if feats_lens is None:
            feats_lens = torch.full((feats.size(0),), feats.size(1), dtype=torch.long, device=feats.device)
        self._check_length(min(feats.size(1), int(feats_lens.min())) if feats.size(1) else 0)
        enc, lens, _ = self.encoder(feats, feats_lens, chunk_size, left_chunks)
        return F.log_softmax(self.ctc(enc), dim=-1), lens

    # ------------------------------------------------------------------ streaming inference
    def init_state(self, batch_size: int = 1, device=None, dtype=torch.float32) -> EncoderState:
        """An empty stream state: no cached keys/values, zero convolution context, offset 0; padded front-ends
        start with ``left_context`` placeholder frames pending (outside the utterance, masked)."""
        cfg = self.config
        device = device if device is not None else next(self.parameters()).device
        empty = torch.zeros(batch_size, cfg.num_heads, 0, cfg.head_dim, device=device, dtype=dtype)
        conv = torch.zeros(batch_size, cfg.d_model, cfg.conv_cache_frames, device=device, dtype=dtype)
        n = len(self.encoder.layers)
        return EncoderState(att_cache=[(empty, empty) for _ in range(n)], conv_cache=[conv for _ in range(n)],
                            offset=0, pending=torch.zeros(batch_size, cfg.left_context, cfg.num_mel_bins,
                                                          device=device, dtype=dtype))

    def forward_chunk(self, feats: torch.Tensor, state: EncoderState, chunk_size: int,
                      left_chunks: int | None = None, cache_mask: torch.Tensor | None = None, keep_frames=None,
                      final: bool = False):
        """One chunk through the encoder and CTC head (no buffering; ``state.pending`` is passed through).

        Args:
            feats: (B, W, F): ``Chunking.window`` frames for a full chunk of C encoder frames, fewer (at least
                ``min_frames``) for a short last one.
            keep_frames: cache frames to keep (default ``Chunking.cache_frames``, C * L; all when unlimited).
            final: the window ends the utterance.
        Returns:
            log_probs (B, C', V) with C' = ``output_frames(W)`` and the next state.
        """
        if keep_frames is None and left_chunks is not None:
            keep_frames = self.chunking(chunk_size, left_chunks).cache_frames
        enc, att, conv = self.encoder.forward_chunk(feats, state.offset, state.att_cache, state.conv_cache,
                                                    cache_mask, keep_frames, final)
        new_state = EncoderState(att_cache=att, conv_cache=conv, offset=state.offset + enc.size(1),
                                 pending=state.pending)
        return F.log_softmax(self.ctc(enc), dim=-1), new_state

    def stream_step(self, feats: torch.Tensor, state: EncoderState, chunk_size: int,
                    left_chunks: int | None = None, final: bool = False):
        """Feed feature frames to a stream; decode every complete chunk (and, if ``final``, the remainder).

        Chunks and the end of the stream follow :mod:`slimasr.chunking` (``Chunking.next_chunk`` with the
        ``flush`` policy): a chunk runs once its window of feature frames is there; at ``final`` the remaining
        frames run as a last, shorter chunk, so the whole stream equals ``ctc_log_probs(feats, chunk_size=C,
        left_chunks=L)`` of the same features.

        Args:
            feats: (B, t, F) new feature frames (t may be 0, or any number: frames are buffered in the state).
            state: from ``init_state`` or a previous call.
            chunk_size: encoder frames per chunk.
            left_chunks: visible left chunks (None = unlimited).
            final: the stream has ended: decode the remaining frames as a last, shorter chunk.
        Returns:
            log_probs (B, n, V) for the n encoder frames completed by this call, and the next state.
        Raises:
            ValueError: bad features (shape, NaN/inf), bad chunking, or a batch size other than the state's.
        """
        self._check_feats(feats)
        if chunk_size is None:
            raise ValueError("stream_step needs a chunk_size (encoder frames per chunk)")
        chunking = self.chunking(chunk_size, left_chunks)
        if feats.size(0) != state.pending.size(0):
            raise ValueError(f"batch size {feats.size(0)} does not match the state's {state.pending.size(0)}")
        buf = torch.cat((state.pending, feats.to(state.pending.dtype)), dim=1)
        outs = []
        start = 0
        while n := chunking.next_chunk(buf.size(1) - start, final):
            lp, state = self.forward_chunk(buf[:, start:start + n], state, chunk_size, left_chunks,
                                           final=n != chunking.window)
            outs.append(lp)
            start = start + chunking.shift if n == chunking.window else buf.size(1)
        if final and self.encoder.subsampling.padded and start < buf.size(1):
            # padded front-ends (NeMo): the last encoder frames read zero padding beyond the utterance's end, as
            # offline; they need fewer frames than a chunk's window
            total = state.offset * self.config.subsampling_factor - self.config.left_context + buf.size(1) - start
            if int(self.encoder.subsampling.output_lengths(torch.tensor(total))) > state.offset:
                lp, state = self.forward_chunk(buf[:, start:], state, chunk_size, left_chunks, final=True)
                outs.append(lp)
            start = buf.size(1)
        rest = buf[:, start:] if not final else buf[:, buf.size(1):]
        state = dataclasses.replace(state, pending=rest)
        if outs:
            return torch.cat(outs, dim=1), state
        return buf.new_zeros(buf.size(0), 0, self.config.vocab_size), state

    @torch.no_grad()
    def stream_log_probs(self, feats: torch.Tensor, chunk_size: int, left_chunks: int | None = None,
                         feed_frames: int | None = None) -> torch.Tensor:
        """Reference streaming decode of whole utterances (equal lengths) through ``stream_step``.

        ``feed_frames`` feeds the features in pieces of that many frames (default: one chunk's shift), to
        exercise buffering. Returns (B, T', V) log-probabilities.
        """
        self._check_feats(feats)
        chunking = self.chunking(chunk_size, left_chunks)
        self._check_length(feats.size(1))
        step = feed_frames or chunking.shift
        state = self.init_state(feats.size(0), feats.device, feats.dtype)
        outs = []
        for s in range(0, feats.size(1), step):
            lp, state = self.stream_step(feats[:, s:s + step], state, chunk_size, left_chunks)
            outs.append(lp)
        lp, state = self.stream_step(feats[:, :0], state, chunk_size, left_chunks, final=True)
        outs.append(lp)
        return torch.cat(outs, dim=1)

    # ------------------------------------------------------------------ persistence
    def num_parameters(self, encoder_only: bool = False) -> int:
        mods = [self.encoder, self.ctc] if encoder_only else [self]
        return sum(p.numel() for m in mods for p in m.parameters())

    def checkpoint_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "frontend": self.frontend.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "tokenizer": self.tokenizer_proto.cpu().clone(),
            **({"source": self.source} if self.source is not None else {}),
        }

    def save(self, path: str | os.PathLike, half: bool = False) -> Path:
        """Write config + weights (+ CMVN, tokenizer) atomically. ``half`` stores weights as float16."""
        ckpt = self.checkpoint_dict()
        if half:
            ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        _atomic_save(ckpt, Path(path))
        return Path(path)

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict, source: str = "<memory>") -> "ASRModel":
        config, frontend = checkpoint_settings(ckpt, source)
        try:
            model = cls(config)
            state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
            model.load_state_dict(state, strict=True)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{source} is a damaged slimasr checkpoint: {_damage(e)}") from e
        model.set_frontend(frontend)
        tok = ckpt.get("tokenizer")
        if isinstance(tok, torch.Tensor) and tok.numel():
            model.tokenizer_proto = tok.to(torch.uint8)
        if isinstance(ckpt.get("source"), dict):
            model.source = ckpt["source"]
        return model


def _damage(e: Exception) -> str:
    """An error about a checkpoint's contents on one line of at most 300 characters (load_state_dict lists its
    errors on several lines)."""
    detail = " ".join(str(e).split())
    return detail if len(detail) <= 300 else detail[:297] + "..."


def checkpoint_settings(ckpt: dict, source: str = "<memory>") -> tuple[ModelConfig, FrontendConfig]:
    """The :class:`ModelConfig` and front-end (:class:`slimasr.features.FrontendConfig`) of a model checkpoint dict
    (``ASRModel.checkpoint_dict``), without building the model.

    Raises:
        ValueError: ``ckpt`` is not a slimasr model checkpoint, was written by a newer slimasr, or its settings are
            damaged (the message names ``source``).
    """
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{source} is not a slimasr model checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{source} was written by a newer slimasr (checkpoint version {ckpt['version']})")
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source} is a damaged slimasr checkpoint: {_damage(e)}") from e
    if "frontend" in ckpt:
        return config, FrontendConfig.from_dict(ckpt["frontend"], f"{source}: frontend")
    if ckpt.get("version", 0) >= 2:
        raise ValueError(f"{source} is a damaged slimasr checkpoint: no front-end settings ('frontend')")
    # version 1 checkpoints (before the front-end was stored) were all trained with FrontendConfig.for_model
    return config, FrontendConfig.for_model(config.num_mel_bins)


def build_model(config: "str | ModelConfig" = "small", **overrides) -> ASRModel:
    """An untrained model from a config object or a shipped config's name (``"tiny"``, ``"small"``, ``"paper"``)."""
    cfg = get_config(config)
    if overrides:
        cfg = cfg.replace(**overrides)
    return ASRModel(cfg)


def default_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "default" / "model.pt"


def _numpy_rng_globals() -> list:
    """What ``numpy.random.get_state()`` pickles to (stored in training checkpoints): allowed, besides tensors and
    plain containers, when reading a checkpoint with ``torch.load(weights_only=True)``."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct      # NumPy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


# how every file torch.save writes begins: a zip archive (torch >= 1.6), or a pickle (protocol 2 or later)
_TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80")


def _import_hint(path: Path) -> str:
    """:func:`slimasr.importers.detect.import_hint`, imported only on an error path (what loading and exporting a
    model imports is what the export cache keys cover)."""
    from ..importers.detect import import_hint as hint

    return hint(path)


def load_checkpoint_file(path: str | os.PathLike, mmap: bool = False) -> dict:
    """Read a checkpoint file written by slimasr, with clear errors for missing, truncated or foreign files.

    Read with ``torch.load(weights_only=True)`` (no code runs from the file); the NumPy RNG state of training
    checkpoints is the one non-tensor object allowed. With ``mmap`` a zip-format file (every file torch >= 1.6
    writes) is mapped, not read (``torch.load(mmap=True)``): its tensors are read only where touched, so reading
    a checkpoint's settings costs its pickle, not its weights; a legacy (pickle) file is read whole."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        from ..runtime.session import EXPORT_CONFIG_FILE

        hint = ("; it is an ONNX export (decode, transcribe and serve run one, info describes it): give the .pt "
                "model it was exported from" if (path / EXPORT_CONFIG_FILE).is_file() else _import_hint(path))
        raise ValueError(f"{path} is a directory, expected a slimasr model file (.pt){hint}")
    try:
        with open(path, "rb") as f:
            data = f.read(len(_TORCH_FILE_MAGIC[0]))
            mapped = mmap and data == _TORCH_FILE_MAGIC[0]
            if not mapped:
                data += f.read()
    except OSError as e:
        raise ValueError(f"{path} is not a readable slimasr checkpoint ({e.strerror or e})") from None
    if not data:
        raise ValueError(f"{path} is not a readable slimasr checkpoint (an empty file)")
    try:
        with torch.serialization.safe_globals(_numpy_rng_globals()):
            if mapped:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for corrupt zip archives / pickles
        if not data.startswith(_TORCH_FILE_MAGIC):   # a manifest, an audio file, an ONNX model, ...
            raise ValueError(f"{path} is not a readable slimasr checkpoint (not a PyTorch file; expected a .pt "
                             f"model written by slimasr){_import_hint(path)}") from None
        raise ValueError(f"{path} is not a readable slimasr checkpoint (truncated or corrupt: {type(e).__name__}: "
                         f"{exception_line(e, 120)})") from e


def read_model_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The model checkpoint dict (``ASRModel.checkpoint_dict``) in a model file, or the ``model`` entry of a training
    checkpoint (format "slimasr-train"). Errors as :func:`load_checkpoint_file` (``mmap`` as there); a file that
    holds something else (a WeNet, ESPnet or NeMo checkpoint, ...) is a ValueError that names the ``slimasr import``
    command for it."""
    ckpt = load_checkpoint_file(path, mmap=mmap)
    if isinstance(ckpt, dict) and ckpt.get("format") == "slimasr-train" and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        hint = _import_hint(path) or ("; a WeNet, ESPnet or NeMo model enters with `slimasr import` (see "
                                     "`slimasr import --help`)")
        raise ValueError(f"{path} is not a slimasr model checkpoint (no '{CHECKPOINT_FORMAT}' format tag){hint}")
    return ckpt


def read_model_settings(path: str | os.PathLike) -> tuple[ModelConfig, FrontendConfig]:
    """A model file's (or training checkpoint's) :class:`ModelConfig` and front-end, without reading its weights
    (the file is mapped: :func:`load_checkpoint_file` with ``mmap``), e.g. to choose how to decode it before
    :func:`load_model` reads it once.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_model_checkpoint` and :func:`checkpoint_settings`.
    """
    return checkpoint_settings(read_model_checkpoint(path, mmap=True), str(path))


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> ASRModel:
    """Load a model (or the model inside a training checkpoint) in eval mode.

    With ``path=None`` this is the embedded default model shipped with slimasr.
    """
    if path is None:
        path = default_model_path()
        if not path.exists():
            raise FileNotFoundError("this installation has no embedded default model "
                                    f"(expected {path.name} in slimasr/assets/default); pass a model path")
    model = ASRModel.from_checkpoint_dict(read_model_checkpoint(path), source=str(path))
    return model.to(device).eval()
