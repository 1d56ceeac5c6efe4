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


def relative_position_encoding(d_max, num: int, dim: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Sinusoidal encodings of the distances ``d_max, d_max - 1, ..., d_max - num + 1``: (num, dim).

    ``d_max`` may be a Python int or a 0-d / 1-element tensor (the ONNX export computes it from ``offset``).
    Distances are small integers (bounded by the attention span), so precision does not degrade on long input.
    """
    steps = torch.arange(num, device=device)
    if isinstance(d_max, torch.Tensor):
        dist = (d_max.reshape(()).to(steps.dtype) - steps).to(dtype)
    else:
        dist = (d_max - steps).to(dtype)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype) * (-math.log(10000.0) / dim))
    angles = dist[:, None] * inv_freq[None, :]                       # (num, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(num, dim)


def _rel_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, H, Tq, P) with column p <-> distance d_max - p, P = K + Tq - 1  ->  (B, H, Tq, K), entry (i, j) the
    score for distance (d_max - Tq + 1 + i) - j. Pad-and-reshape trick of Transformer-XL, valid for any Tq <= K.
    With d_max = K - 1 query i sits at key position K - Tq + i (the last Tq keys are the queries)."""
    b, h, tq, p = x.shape
    k = p - tq + 1
    x = F.pad(x, (1, 0))                                             # (B, H, Tq, P + 1)
    x = x.reshape(b, h, p + 1, tq)[:, :, 1:].reshape(b, h, tq, p)
    return x[..., :k]


class Conv2dSubsampling4(nn.Module):
    """Two 3x3 stride-2 convolutions: (B, T, F) -> (B, ((T - 1) // 2 - 1) // 2, D). One output frame needs
    7 input frames (``right_context`` 6) and consecutive output frames are 4 input frames apart."""

    def __init__(self, in_dim: int, channels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, 2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2), nn.ReLU(),
        )
        freq = ((in_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)
        self.scale = math.sqrt(d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        # truncating division equals floor division for the valid (>= 7 frames) lengths and exports as a
        # plain integer Div (floor division exports as Div/Mod/Xor, which older TensorRT rejects)
        return torch.div(torch.div(lengths - 1, 2, rounding_mode="trunc") - 1, 2, rounding_mode="trunc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.unsqueeze(1))                                 # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))          # (B, T', D)
        return x * self.scale


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float):
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden)
        self.w2 = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(F.silu(self.w1(x))))


class RelPositionMultiHeadAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions and learned biases u, v.

    score(i, j) = [(q_i + u) . k_j + (q_i + v) . W_pos r(i - j)] / sqrt(d_k)
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
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
        """q (B,H,Tq,dk), k/v (B,H,K,dk), p (H,K+Tq-1,dk), mask bool broadcastable to (B,1,Tq,K)."""
        ac = torch.matmul(q + self.pos_bias_u[:, None], k.transpose(-2, -1))
        bd = _rel_shift(torch.matmul(q + self.pos_bias_v[:, None], p.transpose(-2, -1)))
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
            pos_emb: (K + Tq - 1, D) encodings of distances K-1 .. -(Tq-1), K = cached + Tq keys.
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
        blocked = (tq * kk > _ATTN_BLOCK_ELEMENTS and cache is None and tq == kk
                   and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())
        if not blocked:
            out = self._attend(q, k, v, p, m)
        else:
            # query block [s, e) needs distances (s + Tb - 1) .. (s - K + 1): a slice of the full encoding.
            rows = max(1, _ATTN_BLOCK_ELEMENTS // kk)
            parts = []
            for s in range(0, tq, rows):
                e = min(tq, s + rows)
                pb = p[:, kk - e: 2 * kk - 1 - s]
                mb = None if m is None else (m[:, :, s:e] if m.size(2) > 1 else m)
                parts.append(self._attend(q[:, :, s:e], k, v, pb, mb))
            out = torch.cat(parts, dim=2)
        out = out.transpose(1, 2).reshape(b, tq, self.h * self.d_k)
        return self.linear_out(out), (k, v)


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv (dynamic chunk convolution), LayerNorm, Swish, pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int):
        super().__init__()
        self.pad = (kernel_size - 1) // 2
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None, chunk_size: int | None,
                cache: torch.Tensor | None = None):
        """
        Args:
            x: (B, T, D).
            pad_mask: (B, T) bool, True on real frames (padding is zeroed before the depthwise conv), or None.
            chunk_size: offline only: None = full context (symmetric padding); C = dynamic chunk convolution
                over chunks of C frames (no look-ahead across a chunk's right edge).
            cache: streaming only: (B, D, (k-1)/2) left context from earlier chunks; ``x`` is one chunk.
        Returns:
            (B, T, D) output and the new cache (B, D, (k-1)/2) (None offline).
        """
        # the 1x1 convolutions run as matrix products on (B, T, D): no layout change around them (same weights)
        x = F.glu(F.linear(x, self.pointwise1.weight[:, :, 0], self.pointwise1.bias), dim=-1)   # (B, T, D)
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
        d = cfg.d_model
        self.ffn_macaron = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.attn = RelPositionMultiHeadAttention(d, cfg.num_heads, cfg.attention_dropout)
        self.conv = ConvolutionModule(d, cfg.kernel_size)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.norm_ffn_macaron = nn.LayerNorm(d)
        self.norm_attn = nn.LayerNorm(d)
        self.norm_conv = nn.LayerNorm(d)
        self.norm_ffn = nn.LayerNorm(d)
        self.norm_final = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, pos_emb, att_mask, pad_mask, chunk_size, att_cache=None, conv_cache=None):
        """x (B, T, D) -> (B, T, D), (keys, values) (B, H, K, d_k), conv cache (B, D, (k-1)/2) or None."""
        x = x + 0.5 * self.dropout(self.ffn_macaron(self.norm_ffn_macaron(x)))
        a, kv = self.attn(self.norm_attn(x), pos_emb, att_mask, att_cache)
        x = x + self.dropout(a)
        c, new_conv = self.conv(self.norm_conv(x), pad_mask, chunk_size, conv_cache)
        x = x + self.dropout(c)
        x = x + 0.5 * self.dropout(self.ffn(self.norm_ffn(x)))
        return self.norm_final(x), kv, new_conv


class ConformerEncoder(nn.Module):
    """Global CMVN, 4x Conv2d subsampling, ``num_layers`` Conformer layers, final LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("cmvn_mean", torch.zeros(cfg.num_mel_bins))
        self.register_buffer("cmvn_istd", torch.ones(cfg.num_mel_bins))
        self.subsampling = Conv2dSubsampling4(cfg.num_mel_bins, cfg.subsampling_channels, cfg.d_model)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_layers))
        self.after_norm = nn.LayerNorm(cfg.d_model)

    def front_end(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) fbank -> (B, T', D) subsampled, scaled embeddings (CMVN applied here)."""
        return self.subsampling((feats - self.cmvn_mean) * self.cmvn_istd)

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
        """
        x = self.front_end(feats)
        lens = Conv2dSubsampling4.output_lengths(feats_lens)
        t = x.size(1)
        pad_mask = torch.arange(t, device=x.device)[None, :] < lens[:, None]          # (B, T')
        att_mask = pad_mask[:, None, :]                                                # (B, 1, T')
        if chunk_size is not None:
            att_mask = att_mask & chunk_attention_mask(t, chunk_size, left_chunks, x.device)[None]
        pos_emb = relative_position_encoding(t - 1, 2 * t - 1, self.cfg.d_model, x.dtype, x.device)
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
                      conv_cache: list[torch.Tensor], cache_mask: torch.Tensor | None = None, keep_frames=None):
        """Encode one chunk given the caches of all previous chunks (the streaming path).

        Args:
            feats: (B, T, F) fbank frames of this chunk's window: (C - 1) * 4 + 7 frames give C encoder frames.
            offset: encoder frames before this chunk (int, or an int64 tensor in exported graphs). Positions are
                computed from it; only distances matter, so the result does not depend on its value.
            att_cache: per layer (keys, values), each (B, H, Tc, d_k) (Tc may be 0).
            conv_cache: per layer (B, D, (k-1)/2).
            cache_mask: (B, Tc) bool, False for cache slots that hold no real frame (fixed-size caches), or None.
            keep_frames: how many of the latest key/value frames to return as the next cache (int or 0-d
                tensor); None keeps all.
        Returns:
            out (B, C, D) after the final LayerNorm, new att_cache (list), new conv_cache (list).
        """
        x = self.front_end(feats)
        b, c, _ = x.shape
        tc = att_cache[0][0].size(2) if att_cache else 0
        if cache_mask is None:
            att_mask = None
        else:
            att_mask = torch.cat((cache_mask, torch.ones(b, c, dtype=torch.bool, device=x.device)), dim=1)[:, None, :]
        # distance of the newest query (absolute offset + c - 1) to the oldest key (absolute offset - tc)
        d_max = (offset + c - 1) - (offset - tc)
        pos_emb = relative_position_encoding(d_max, tc + 2 * c - 1, self.cfg.d_model, x.dtype, x.device)
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
