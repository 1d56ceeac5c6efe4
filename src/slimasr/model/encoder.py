"""Conformer encoder with one code path for offline (chunk-masked) and streaming (cached) computation.

Layout everywhere is ``(B, T, D)``: batch, time, feature. ``T`` is in input feature frames (10 ms) before the
front-end and in encoder frames (40 ms) after it.

Streaming equals offline by construction:
  * attention: a chunk sees its own frames and ``left_chunks`` earlier chunks (offline: a chunk mask;
    streaming: a key/value cache of ``left_chunks * chunk_size`` frames);
  * dynamic chunk convolution (Li et al., ICASSP 2023): the depthwise convolution sees up to (k-1)/2 frames of
    left context from earlier chunks but no frame beyond the right edge of its own chunk (offline: convolution
    over unfolded chunk windows; streaming: a left-context cache and zero right padding);
  * relative positions: the attention depends only on query/key distances, computed on the fly for the
    distances that occur, so there is no positional table and no length limit.

Layer variants (fields of :class:`ModelConfig`, one code path each) let the same layer hold models trained by
other toolkits: the subsampling front-end (``subsampling``), the convolution module's norm and causality
(``conv_norm``, ``causal_conv``), ``layer_norm_eps``, ``final_norm``, ``xscaling`` and the positional variant
(``pos_enc``: ``rel``, WeNet's ``abs_key``, ESPnet's offline-only ``legacy``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

# Offline attention over more than this many query x key entries is computed in query blocks (same result,
# memory linear in the block size): keeps full-context decoding of long recordings inside ordinary RAM.
_ATTN_BLOCK_ELEMENTS = 1 << 22
_LEGACY_TABLE = 5000    # ESPnet's positional table length (max_pos_emb_len) behind the legacy positions


def chunk_attention_mask(size: int, chunk_size: int, left_chunks: int | None, device=None) -> torch.Tensor:
    """Boolean (size, size) mask, True where query frame i may attend key frame j.

    Frame i belongs to chunk i // chunk_size; it sees every frame of its own chunk and of the ``left_chunks``
    preceding chunks (all preceding chunks when ``left_chunks`` is None).
    """
    idx = torch.arange(size, device=device) // chunk_size
    mask = idx[None, :] <= idx[:, None]
    if left_chunks is not None:
        mask = mask & (idx[None, :] >= idx[:, None] - left_chunks)
    return mask


def sinusoidal_encoding(first, num: int, dim: int, step: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
    """Sinusoidal encodings of the positions ``first, first + step, ..., first + (num - 1) * step``: (num, dim),
    ``[sin(p w_0), cos(p w_0), sin(p w_1), ...]`` with ``w_i = 10000^(-2i/dim)`` (Vaswani et al., 2017; the
    interleaved layout of ESPnet's, WeNet's and NeMo's ``PositionalEncoding`` tables).

    ``first`` may be a Python int or a 0-d / 1-element tensor (the ONNX export computes it from ``offset``).
    """
    steps = torch.arange(num, device=device) * step
    if isinstance(first, torch.Tensor):
        pos = (first.reshape(()).to(steps.dtype) + steps).to(dtype)
    else:
        pos = (first + steps).to(dtype)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype) * (-math.log(10000.0) / dim))
    angles = pos[:, None] * inv_freq[None, :]                        # (num, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(num, dim)


def relative_position_encoding(d_max, num: int, dim: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Sinusoidal encodings of the distances ``d_max, d_max - 1, ..., d_max - num + 1``: (num, dim).

    ``d_max`` may be a Python int or a 0-d / 1-element tensor (the ONNX export computes it from ``offset``).
    Distances are small integers (bounded by the attention span), so precision does not degrade on long input.
    """
    return sinusoidal_encoding(d_max, num, dim, -1, dtype, device)


def _rel_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, H, Tq, P) with column p <-> distance d_max - p, P = K + Tq - 1  ->  (B, H, Tq, K), entry (i, j) the
    score for distance (d_max - Tq + 1 + i) - j. Pad-and-reshape trick of Transformer-XL, valid for any Tq <= K.
    With d_max = K - 1 query i sits at key position K - Tq + i (the last Tq keys are the queries)."""
    b, h, tq, p = x.shape
    k = p - tq + 1
    x = F.pad(x, (1, 0))                                             # (B, H, Tq, P + 1)
    x = x.reshape(b, h, p + 1, tq)[:, :, 1:].reshape(b, h, tq, p)
    return x[..., :k]


def _legacy_rel_shift(x: torch.Tensor) -> torch.Tensor:
    """ESPnet's ``LegacyRelPositionMultiHeadedAttention.rel_shift`` (zero_triu False) of (B, H, T, T) scores
    against T rows of the legacy positional table: the same pad-and-reshape, whose result depends on T."""
    b, h, t1, t2 = x.shape
    x = F.pad(x, (1, 0)).reshape(b, h, t2 + 1, t1)
    return x[:, :, 1:].reshape(b, h, t1, t2)


def _mask_time(x: torch.Tensor, start, lens: torch.Tensor | None) -> torch.Tensor:
    """Zero the frames of x (B, C, W, F) whose position ``start + w`` lies before 0 or at/after ``lens`` (B,)."""
    pos = torch.arange(x.size(2), device=x.device) + start                      # (W,)
    keep = (pos >= 0)[None, :]
    if lens is not None:
        keep = keep & (pos[None, :] < lens[:, None])
    return x * keep[:, None, :, None].to(x.dtype)


class ConvSubsampling(nn.Module):
    """Convolutional subsampling (B, T, F) -> (B, T', D), ``ModelConfig.subsampling`` selects the stages.

    ``conv2d4`` / ``conv2d6`` / ``conv2d8``: WeNet ``Conv2dSubsampling{4,6,8}`` / ESPnet ``Conv2dSubsampling{,6,8}``
    (3x3 stride 2, then 3x3 stride 2 or 5x5 stride 3, no padding); ``striding4``: NeMo ``ConvSubsampling``
    ``striding`` (padding 1 on both axes); ``dw_striding8``: NeMo FastConformer ``dw_striding`` (3x3 stride 2,
    then depthwise 3x3 stride 2 + pointwise 1x1 pairs, padding 1); ``dw_striding4``: ``conv2d4`` with its second
    convolution depthwise-separable (about 9x fewer FLOPs there at 512 channels). ReLU follows every full and every
    pointwise convolution (not the depthwise ones); then a linear layer over (channels x frequency) and, with
    ``xscaling``, x sqrt(D). Shapes: (B, T, F) -> (B, T', D), T' = :meth:`output_lengths`.

    Time padding is not done by the convolutions: every stage's input is zeroed outside the utterance
    (positions < 0 and >= its length, as NeMo masks between stages), so a window cut from anywhere in a stream
    computes the same frames as the whole utterance.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, freq, in_ch = cfg.subsampling_channels, cfg.num_mel_bins, 1
        self.stages = cfg.subsampling_stages
        self.padded = any(p for _, _, p in self.stages)
        layers, self._bounds = [], []
        for i, (k, s, p) in enumerate(self.stages):
            first = len(layers)
            if cfg.subsampling.startswith("dw_striding") and i > 0:
                layers += [nn.Conv2d(ch, ch, k, s, padding=(0, p), groups=ch), nn.Conv2d(ch, ch, 1), nn.ReLU()]
            else:
                layers += [nn.Conv2d(in_ch, ch, k, s, padding=(0, p)), nn.ReLU()]
            self._bounds.append((first, len(layers)))
            freq, in_ch = (freq + 2 * p - k) // s + 1, ch
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(ch * freq, cfg.d_model)
        self.scale = math.sqrt(cfg.d_model) if cfg.xscaling else None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) feature frames -> (B,) encoder frames: per stage floor((T + 2p - k) / s) + 1."""
        for k, s, p in self.stages:
            # truncating division equals floor division for the valid lengths and exports as a plain integer
            # Div (floor division exports as Div/Mod/Xor, which older TensorRT rejects)
            lengths = torch.div(lengths + (2 * p - k), s, rounding_mode="trunc") + 1
        return lengths

    def forward(self, x: torch.Tensor, start=0, lens: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: (B, W, F) feature frames at positions ``start .. start + W - 1`` of the utterance.
            start: position of ``x[:, 0]`` (int or 0-d tensor; negative frames are outside the utterance).
            lens: (B,) utterance lengths in feature frames, or None when the window has no right edge.
        Returns:
            (B, W', D): the encoder frames whose whole receptive field lies in the window.
        """
        x = x.unsqueeze(1)                                            # (B, 1, W, F)
        for (k, s, p), (a, b) in zip(self.stages, self._bounds):
            if self.padded:
                x = _mask_time(x, start, lens)
                start = torch.div(start + p, s, rounding_mode="floor") if isinstance(start, torch.Tensor) \
                    else (start + p) // s
                if lens is not None:
                    lens = torch.div(lens + (2 * p - k), s, rounding_mode="trunc") + 1
            x = self.conv[a:b](x)                                     # (B, C, W', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))          # (B, W', D)
        return x * self.scale if self.scale is not None else x


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float):
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden)
        self.w2 = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(F.silu(self.w1(x))))


class RelPositionMultiHeadAttention(nn.Module):
    """Multi-head self-attention with positional terms and learned biases u, v (``pos_enc``):

    ``rel``:     score(i, j) = [(q_i + u) . k_j + (q_i + v) . W_pos r(i - j)] / sqrt(d_k)  (Transformer-XL;
                 ESPnet ``RelPositionMultiHeadedAttention``, NeMo ``RelPositionMultiHeadAttention``);
    ``abs_key``: score(i, j) = [(q_i + u) . k_j + (q_i + v) . W_pos r(j)] / sqrt(d_k), j the key's absolute
                 position (WeNet ``RelPositionMultiHeadedAttention``, which has no rel_shift);
    ``legacy``:  ESPnet ``LegacyRelPositionMultiHeadedAttention``: the rows of a reversed absolute table
                 (positions 4999, 4998, ...) under a square rel_shift (depends on T; offline only).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, pos_enc: str = "rel"):
        super().__init__()
        self.pos_enc = pos_enc
        self.h = num_heads
        self.d_k = d_model // num_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:              # (B, T, D) -> (B, H, T, d_k)
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.d_k).transpose(1, 2)

    def _attend(self, q, k, v, p, mask) -> torch.Tensor:
        """q (B,H,Tq,dk), k/v (B,H,K,dk), p (H,K+Tq-1,dk) (``rel``) or (H,K,dk), mask bool broadcastable to
        (B,1,Tq,K)."""
        ac = torch.matmul(q + self.pos_bias_u[:, None], k.transpose(-2, -1))
        bd = torch.matmul(q + self.pos_bias_v[:, None], p.transpose(-2, -1))
        if self.pos_enc == "rel":
            bd = _rel_shift(bd)
        elif self.pos_enc == "legacy":
            bd = _legacy_rel_shift(bd)
        scores = (ac + bd) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        return torch.matmul(self.dropout(attn), v)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor | None,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        """
        Args:
            x: (B, Tq, D) queries (the current chunk, or the whole utterance offline).
            pos_emb: ``rel``: (K + Tq - 1, D) encodings of distances K-1 .. -(Tq-1), K = cached + Tq keys;
                ``abs_key``: (K, D) encodings of the keys' absolute positions; ``legacy``: (T, D), see
                ``ConformerEncoder._positions``.
            mask: bool (B, Tq or 1, K), True where attention is allowed; None for no mask.
            cache: (keys, values), each (B, H, Tc, d_k), or None.
        Returns:
            (B, Tq, D) output and the (keys, values) over all K frames, each (B, H, K, d_k).
        """
        b, tq, _ = x.shape
        q, k, v = self._heads(self.linear_q(x)), self._heads(self.linear_k(x)), self._heads(self.linear_v(x))
        if cache is not None:
            k = torch.cat((cache[0], k), dim=2)
            v = torch.cat((cache[1], v), dim=2)
        kk = k.size(2)
        p = self.linear_pos(pos_emb).view(-1, self.h, self.d_k).transpose(0, 1)   # (H, K + Tq - 1, d_k)
        m = mask.unsqueeze(1) if mask is not None else None                      # (B, 1, Tq|1, K)
        blocked = (tq * kk > _ATTN_BLOCK_ELEMENTS and cache is None and tq == kk and self.pos_enc != "legacy"
                   and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())
        if not blocked:
            out = self._attend(q, k, v, p, m)
        else:
            # query block [s, e) needs distances (s + Tb - 1) .. (s - K + 1): a slice of the full encoding.
            rows = max(1, _ATTN_BLOCK_ELEMENTS // kk)
            parts = []
            for s in range(0, tq, rows):
                e = min(tq, s + rows)
                pb = p[:, kk - e: 2 * kk - 1 - s] if self.pos_enc == "rel" else p
                mb = None if m is None else (m[:, :, s:e] if m.size(2) > 1 else m)
                parts.append(self._attend(q[:, :, s:e], k, v, pb, mb))
            out = torch.cat(parts, dim=2)
        out = out.transpose(1, 2).reshape(b, tq, self.h * self.d_k)
        return self.linear_out(out), (k, v)


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, norm (LayerNorm, or none when a BatchNorm was folded into the
    depthwise convolution), Swish, pointwise conv.

    The depthwise convolution is either the dynamic chunk convolution (symmetric kernel, left context carried
    after GLU) or, with ``causal``, WeNet's causal convolution (``ConvolutionModule(causal=True)``): k - 1 frames
    of left context padded and cached in the module's *input* domain, before pointwise_conv1, so that the
    padding frames pass through GLU(bias) exactly as in WeNet; any kernel size, even ones included.
    """

    def __init__(self, d_model: int, kernel_size: int, causal: bool = False, norm: str = "layer_norm",
                 eps: float = 1e-5):
        super().__init__()
        self.causal = causal
        self.pad = kernel_size - 1 if causal else (kernel_size - 1) // 2
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps) if norm == "layer_norm" else nn.Identity()
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1)

    def _glu(self, x: torch.Tensor) -> torch.Tensor:
        # the 1x1 convolutions run as matrix products on (B, T, D): no layout change around them (same weights)
        return F.glu(F.linear(x, self.pointwise1.weight[:, :, 0], self.pointwise1.bias), dim=-1)

    def _causal(self, x: torch.Tensor, pad_mask: torch.Tensor | None, cache: torch.Tensor | None):
        """WeNet's causal path: (B, T, D) -> depthwise output (B, D, T) and the new input-domain cache."""
        if pad_mask is not None:
            x = x.masked_fill(~pad_mask[:, :, None], 0.0)
        if cache is not None:
            x = torch.cat((cache.transpose(1, 2), x), dim=1)            # (B, k - 1 + T, D)
            new_cache = x[:, x.size(1) - self.pad:].transpose(1, 2)
        else:
            x = F.pad(x, (0, 0, self.pad, 0))
            new_cache = None
        return self.depthwise(self._glu(x).transpose(1, 2)), new_cache

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None, chunk_size: int | None,
                cache: torch.Tensor | None = None):
        """
        Args:
            x: (B, T, D).
            pad_mask: (B, T) bool, True on real frames (padding is zeroed before the depthwise conv), or None.
            chunk_size: offline only: None = full context (symmetric padding); C = dynamic chunk convolution
                over chunks of C frames (no look-ahead across a chunk's right edge).
                Ignored by the causal convolution, which never looks ahead.
            cache: streaming only: (B, D, P) left context from earlier chunks, P = ``conv_cache_frames``
                ((k-1)/2 after GLU; k-1 before pointwise_conv1 when causal); ``x`` is one chunk.
        Returns:
            (B, T, D) output and the new cache (B, D, P) (None offline).
        """
        if self.causal:
            y, new_cache = self._causal(x, pad_mask, cache)
            y = F.silu(self.norm(y.transpose(1, 2)))                   # (B, T, D)
            return F.linear(y, self.pointwise2.weight[:, :, 0], self.pointwise2.bias), new_cache
        x = self._glu(x)                                               # (B, T, D)
        if pad_mask is not None:
            x = x.masked_fill(~pad_mask[:, :, None], 0.0)
        x = x.transpose(1, 2)                                          # (B, D, T)
        b, d, t = x.shape
        new_cache = None
        if cache is not None:                                          # streaming chunk
            x = torch.cat((cache, x), dim=2)
            new_cache = x[:, :, x.size(2) - self.pad:]
            y = self.depthwise(F.pad(x, (0, self.pad)))
        elif chunk_size is None:                                       # full context
            y = self.depthwise(F.pad(x, (self.pad, self.pad)))
        else:                                                          # offline dynamic chunk convolution
            n = (t + chunk_size - 1) // chunk_size
            xw = F.pad(x, (self.pad, n * chunk_size - t)).unfold(2, chunk_size + self.pad, chunk_size)
            xw = F.pad(xw, (0, self.pad))                              # (B, D, n, C + k - 1)
            xw = xw.permute(0, 2, 1, 3).reshape(b * n, d, chunk_size + 2 * self.pad)
            y = self.depthwise(xw).reshape(b, n, d, chunk_size).permute(0, 2, 1, 3).reshape(b, d, n * chunk_size)
            y = y[:, :, :t]
        y = F.silu(self.norm(y.transpose(1, 2)))                       # (B, T, D)
        return F.linear(y, self.pointwise2.weight[:, :, 0], self.pointwise2.bias), new_cache


class ConformerLayer(nn.Module):
    """Macaron Conformer block: x + FFN/2, x + MHSA, x + Conv, x + FFN/2, LayerNorm (pre-norm residuals)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, eps = cfg.d_model, cfg.layer_norm_eps
        self.ffn_macaron = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.attn = RelPositionMultiHeadAttention(d, cfg.num_heads, cfg.attention_dropout, cfg.pos_enc)
        self.conv = ConvolutionModule(d, cfg.kernel_size, cfg.causal_conv, cfg.conv_norm, eps)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.norm_ffn_macaron = nn.LayerNorm(d, eps=eps)
        self.norm_attn = nn.LayerNorm(d, eps=eps)
        self.norm_conv = nn.LayerNorm(d, eps=eps)
        self.norm_ffn = nn.LayerNorm(d, eps=eps)
        self.norm_final = nn.LayerNorm(d, eps=eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, pos_emb, att_mask, pad_mask, chunk_size, att_cache=None, conv_cache=None):
        """x (B, T, D) -> (B, T, D), (keys, values) (B, H, K, d_k), conv cache (B, D, P) or None."""
        x = x + 0.5 * self.dropout(self.ffn_macaron(self.norm_ffn_macaron(x)))
        a, kv = self.attn(self.norm_attn(x), pos_emb, att_mask, att_cache)
        x = x + self.dropout(a)
        c, new_conv = self.conv(self.norm_conv(x), pad_mask, chunk_size, conv_cache)
        x = x + self.dropout(c)
        x = x + 0.5 * self.dropout(self.ffn(self.norm_ffn(x)))
        return self.norm_final(x), kv, new_conv


class ConformerEncoder(nn.Module):
    """Global CMVN, convolutional subsampling, ``num_layers`` Conformer layers, final LayerNorm (``final_norm``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("cmvn_mean", torch.zeros(cfg.num_mel_bins))
        self.register_buffer("cmvn_istd", torch.ones(cfg.num_mel_bins))
        self.subsampling = ConvSubsampling(cfg)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_layers))
        self.after_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.final_norm else nn.Identity()

    def front_end(self, feats: torch.Tensor, start=0, lens: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W, F) features at positions ``start..`` -> (B, W', D) subsampled, scaled embeddings (CMVN applied
        here); ``lens`` (B,) utterance lengths, None without a right edge (see :class:`ConvSubsampling`)."""
        return self.subsampling((feats - self.cmvn_mean) * self.cmvn_istd, start, lens)

    def _positions(self, t: int, dtype, device) -> torch.Tensor:
        """Positional encodings for a whole utterance of ``t`` encoder frames (see the attention's ``pos_emb``)."""
        if self.cfg.pos_enc == "rel":
            return relative_position_encoding(t - 1, 2 * t - 1, self.cfg.d_model, dtype, device)
        if self.cfg.pos_enc == "legacy":
            # ESPnet's LegacyRelPositionalEncoding reads the first t rows of a reversed table of positions
            # max_len - 1 .. 0 (max_len 5000, or t when longer): row i encodes position max(5000, t) - 1 - i
            return sinusoidal_encoding(max(_LEGACY_TABLE, t) - 1, t, self.cfg.d_model, -1, dtype, device)
        return sinusoidal_encoding(0, t, self.cfg.d_model, 1, dtype, device)

    def forward(self, feats: torch.Tensor, feats_lens: torch.Tensor, chunk_size: int | None = None,
                left_chunks: int | None = None, return_hidden: bool = False):
        """Offline (whole-utterance) encoding with optional chunk masking.

        Args:
            feats: (B, T, F) fbank features; feats_lens: (B,) int64 valid lengths.
            chunk_size: None for full context, else the chunk size in encoder frames.
            left_chunks: visible left chunks (None = unlimited); ignored for full context.
            return_hidden: also return the L + 1 hidden states [input of layer 0, output of layer 0, ...,
                output of layer L-1] (before the final LayerNorm), for layer-importance metrics.
        Returns:
            out (B, T', D) after the final LayerNorm, out_lens (B,), hidden (list or None).
        Raises:
            ValueError: chunk masks on a model with ``pos_enc="legacy"`` (not streamable).
        """
        if chunk_size is not None and not self.cfg.streamable:
            raise ValueError("this model uses ESPnet's legacy relative positions (rel_pos_type: legacy), which "
                             "depend on the utterance length: it decodes whole utterances only, not in chunks")
        lens = self.subsampling.output_lengths(feats_lens)
        if self.subsampling.padded:
            ctx = self.cfg.left_context
            # ctx frames either side give exactly every stage's padding: T' = output_lengths(T) frames
            x = self.front_end(F.pad(feats, (0, 0, ctx, ctx)), -ctx, feats_lens)
        else:
            x = self.front_end(feats)
        t = x.size(1)
        pad_mask = torch.arange(t, device=x.device)[None, :] < lens[:, None]          # (B, T')
        att_mask = pad_mask[:, None, :]                                                # (B, 1, T')
        if chunk_size is not None:
            att_mask = att_mask & chunk_attention_mask(t, chunk_size, left_chunks, x.device)[None]
        pos_emb = self._positions(t, x.dtype, x.device)
        hidden = [x] if return_hidden else None
        for layer in self.layers:
            x, _, _ = layer(x, pos_emb, att_mask, pad_mask, chunk_size)
            if return_hidden:
                hidden.append(x)
        return self.after_norm(x), lens, hidden

    def forward_layers_with_intermediate(self, feats, feats_lens, chunk_size, left_chunks, positions):
        """Like ``forward`` but also returns the after-norm outputs at 1-based layer ``positions``."""
        out, lens, hidden = self.forward(feats, feats_lens, chunk_size, left_chunks, return_hidden=bool(positions))
        inter = [self.after_norm(hidden[p]) for p in positions] if positions else []
        return out, lens, inter

    def forward_chunk(self, feats: torch.Tensor, offset, att_cache: list[tuple[torch.Tensor, torch.Tensor]],
                      conv_cache: list[torch.Tensor], cache_mask: torch.Tensor | None = None, keep_frames=None,
                      final: bool = False):
        """Encode one chunk given the caches of all previous chunks (the streaming path).

        Args:
            feats: (B, T, F) fbank frames of this chunk's window: (C - 1) * S + R + 1 frames give C encoder
                frames (S ``subsampling_factor``, R ``right_context``). The window starts ``left_context``
                frames before the chunk's first stride (padded front-ends; the stream's first window begins
                with that many placeholder frames, which are masked).
            offset: encoder frames before this chunk (int, or an int64 tensor in exported graphs). Relative
                positions only use distances; ``abs_key`` positions start at ``offset - cached frames``.
            att_cache: per layer (keys, values), each (B, H, Tc, d_k) (Tc may be 0).
            conv_cache: per layer (B, D, ``conv_cache_frames``).
            cache_mask: (B, Tc) bool, False for cache slots that hold no real frame (fixed-size caches), or None.
            keep_frames: how many of the latest key/value frames to return as the next cache (int or 0-d
                tensor); None keeps all.
            final: the window ends the utterance (padded front-ends pad it on the right, as offline).
        Returns:
            out (B, C, D) after the final LayerNorm, new att_cache (list), new conv_cache (list).
        Raises:
            ValueError: the model is not streamable (``pos_enc="legacy"``).
        """
        if not self.cfg.streamable:
            raise ValueError("this model uses ESPnet's legacy relative positions (rel_pos_type: legacy), which "
                             "depend on the utterance length: it cannot stream; decode whole utterances")
        if self.subsampling.padded:
            ctx = self.cfg.left_context
            start = offset * self.cfg.subsampling_factor - ctx
            if final:                          # right padding as offline: the last frames of output_lengths(T)
                total = torch.full((feats.size(0),), feats.size(1), dtype=torch.long, device=feats.device) + start
                x = self.front_end(F.pad(feats, (0, 0, 0, ctx)), start, total)
            else:
                x = self.front_end(feats, start)
        else:
            x = self.front_end(feats)
        b, c, _ = x.shape
        tc = att_cache[0][0].size(2) if att_cache else 0
        if cache_mask is None:
            att_mask = None
        else:
            att_mask = torch.cat((cache_mask, torch.ones(b, c, dtype=torch.bool, device=x.device)), dim=1)[:, None, :]
        if self.cfg.pos_enc == "rel":
            # distance of the newest query (absolute offset + c - 1) to the oldest key (absolute offset - tc)
            d_max = (offset + c - 1) - (offset - tc)
            pos_emb = relative_position_encoding(d_max, tc + 2 * c - 1, self.cfg.d_model, x.dtype, x.device)
        else:
            pos_emb = sinusoidal_encoding(offset - tc, tc + c, self.cfg.d_model, 1, x.dtype, x.device)
        new_att, new_conv = [], []
        for i, layer in enumerate(self.layers):
            x, (k, v), cc = layer(x, pos_emb, att_mask, None, None, att_cache[i], conv_cache[i])
            if keep_frames is not None:
                start = k.size(2) - keep_frames
                if not isinstance(start, torch.Tensor):
                    start = max(0, start)
                k, v = k[:, :, start:], v[:, :, start:]
            new_att.append((k, v))
            new_conv.append(cc)
        return self.after_norm(x), new_att, new_conv
