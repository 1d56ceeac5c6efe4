"""Shallow Transformer attention decoder for the joint CTC/attention training loss (not used at inference)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .encoder import FeedForward


def _sinusoid(t: int, dim: int, device) -> torch.Tensor:
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    return torch.stack(((pos * inv).sin(), (pos * inv).cos()), dim=-1).reshape(t, dim)


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.src_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(d, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y, causal_mask, y_pad, memory, mem_pad):
        h = self.norm1(y)
        y = y + self.dropout(self.self_attn(h, h, h, attn_mask=causal_mask, key_padding_mask=y_pad,
                                            need_weights=False)[0])
        h = self.norm2(y)
        y = y + self.dropout(self.src_attn(h, memory, memory, key_padding_mask=mem_pad, need_weights=False)[0])
        return y + self.dropout(self.ffn(self.norm3(y)))


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.layers = nn.ModuleList(DecoderLayer(d, cfg.decoder_heads, cfg.decoder_ffn_dim, cfg.dropout)
                                    for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.vocab_size)
        self.scale = math.sqrt(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, memory, memory_lens, ys_in, ys_in_lens):
        """memory (B, T, D), ys_in (B, U) token ids (padding arbitrary beyond ys_in_lens) -> logits (B, U, V)."""
        u = ys_in.size(1)
        y = self.dropout(self.embed(ys_in) * self.scale + _sinusoid(u, self.embed.embedding_dim, ys_in.device))
        causal = torch.ones(u, u, dtype=torch.bool, device=ys_in.device).triu(1)            # True = blocked
        y_pad = torch.arange(u, device=ys_in.device)[None, :] >= ys_in_lens[:, None]
        mem_pad = torch.arange(memory.size(1), device=memory.device)[None, :] >= memory_lens[:, None]
        for layer in self.layers:
            y = layer(y, causal, y_pad, memory, mem_pad)
        return self.out(self.norm(y))


def attention_loss(decoder: TransformerDecoder, memory, memory_lens, targets, target_lens, sos_eos: int,
                   label_smoothing: float) -> torch.Tensor:
    """Teacher-forced label-smoothed cross entropy of <sos> y -> y <eos>, summed over tokens and averaged over
    utterances (the same normalisation as the CTC loss, as in WeNet, so that ``ctc_weight`` balances them)."""
    b = targets.size(0)
    tgt = targets.clamp(min=0)
    sos = torch.full((b, 1), sos_eos, dtype=tgt.dtype, device=tgt.device)
    ys_in = torch.cat((sos, tgt), dim=1)                                                    # (B, U + 1)
    ys_out = torch.cat((tgt, torch.zeros_like(sos)), dim=1)
    ys_out[torch.arange(b, device=tgt.device), target_lens] = sos_eos
    valid = torch.arange(ys_out.size(1), device=tgt.device)[None, :] <= target_lens[:, None]
    ys_out = ys_out.masked_fill(~valid, -100)
    logits = decoder(memory, memory_lens, ys_in, target_lens + 1)
    return F.cross_entropy(logits.float().transpose(1, 2), ys_out, ignore_index=-100,
                           label_smoothing=label_smoothing, reduction="sum") / b
