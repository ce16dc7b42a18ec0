"""MusicGen's language model: a pre-norm transformer decoder over summed codebook embeddings.

Two ways to run it:
- ``lm(codes)``: one full causal forward (training, teacher forcing, parity tests);
- ``lm.setup_cache(batch, max_len)`` then ``lm(codes, start=pos)`` for the steps of generation: each attention
  module owns a preallocated key/value cache (no reallocation per step) and cross-attention keys/values are
  computed once per generation.
Conditions reach it in three forms: ``cross_src`` [B, L, D] for cross-attention (text models), ``prefix``
[B, P, D] prepended to the sequence (melody models) and ``frame_cond`` [B, S, D] added to the input at each
sequence position (the beat clock); all are already projected to the model dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from yuefu.config import LMConfig

DECODE_ROWS = 16  # at most this many rows (batch x new positions) count as a generation step


class Linear(nn.Linear):
    """``nn.Linear`` whose few-row products on the CPU in float32 run as ``(W @ x^T)^T``.

    A generation step multiplies each weight by 2-16 rows. For that shape MKL's ``x @ W^T`` (what ``F.linear``
    calls) reaches 4-13 GB/s on this 2-core machine, while ``W @ x^T`` streams the weight at 12-38 GB/s (measured
    per shape, weights out of cache: ``benchmarks/linear_shapes.py``); bf16 is the other way round, so it keeps
    ``F.linear``. Same parameters and state-dict keys as ``nn.Linear``; training-sized inputs are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (x.device.type != "cpu" or w.dtype != torch.float32 or x.dtype != torch.float32
                or x.numel() > DECODE_ROWS * x.shape[-1] or torch.is_autocast_enabled("cpu")):
            return F.linear(x, w, self.bias)
        rows = x.reshape(-1, x.shape[-1])  # [N, in]
        if self.bias is None:
            y = torch.mm(w, rows.t())  # [out, N]
        else:
            y = torch.addmm(self.bias.unsqueeze(1), w, rows.t())
        return y.t().reshape(*x.shape[:-1], w.shape[0])


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """positions [T] -> [T, dim], laid out as cat[cos, sin] (audiocraft's ``create_sin_embedding``)."""
    half = dim // 2
    adim = torch.arange(half, dtype=torch.float32, device=positions.device)
    max_period_t = torch.full([], max_period, dtype=torch.float32, device=positions.device)
    phase = positions.to(torch.float32).unsqueeze(-1) / (max_period_t ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class KVCache(nn.Module):
    """Static key/value cache [B, H, max_len, Dh]; ``update`` writes new entries and returns the filled prefix."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        shape = (batch, heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.k.shape[2]:
            raise RuntimeError(f"KV cache overflow: position {end} > capacity {self.k.shape[2]}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = Linear(dim, 3 * dim, bias=False)  # rows: q | k | v
        self.out_proj = Linear(dim, dim, bias=False)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, start: int | None) -> torch.Tensor:
        B, T, D = x.shape
        H = self.num_heads
        q, k, v = self.in_proj(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each [B, H, T, Dh]
        if start is None or self.cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k, v = self.cache.update(start, k, v)  # [B, H, start+T, Dh]
            if T == 1:
                out = F.scaled_dot_product_attention(q, k, v)
            else:  # causal with an offset: query i sees keys <= start + i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    """Attention from the sequence to the condition; like audiocraft, padded condition positions are not masked
    (they are zero vectors and so dilute the attention; see README, "Differences from transformers")."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = Linear(dim, dim, bias=False)
        self.kv_proj = Linear(dim, 2 * dim, bias=False)  # rows: k | v
        self.out_proj = Linear(dim, dim, bias=False)
        self.cached_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def source_kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B, L, D] -> keys, values [B, H, L, Dh]."""
        B, L, D = src.shape
        H = self.num_heads
        k, v = self.kv_proj(src).view(B, L, 2, H, D // H).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, src: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        H = self.num_heads
        q = self.q_proj(x).view(B, T, H, D // H).transpose(1, 2)  # [B, H, T, Dh]
        if src is not None:
            k, v = self.source_kv(src)
        elif self.cached_kv is not None:
            k, v = self.cached_kv
        else:
            raise RuntimeError("cross-attention needs a condition (cross_src) or cached keys/values")
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = Linear(dim, hidden, bias=False)
        self.linear2 = Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads)
        self.cross_attention = CrossAttention(cfg.dim, cfg.num_heads) if cfg.cross_attention else None
        self.norm_cross = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.cross_attention else None
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor, cross_src: torch.Tensor | None, start: int | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), start)
        if self.cross_attention is not None:
            x = x + self.cross_attention(self.norm_cross(x), cross_src)
        return x + self.ffn(self.norm2(x))


class LMModel(nn.Module):
    """codes [B, K, S] (+ conditions) -> logits [B, K, S, card]."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.ModuleList([nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)])
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_layers)])
        self.out_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.heads = nn.ModuleList([Linear(cfg.dim, cfg.card, bias=False) for _ in range(cfg.n_q)])
        self._positions: torch.Tensor | None = None  # [max_len, D] table while a cache is set up
        self._prefix_len = 0

    @property
    def num_codebooks(self) -> int:
        return self.cfg.n_q

    @property
    def special_token(self) -> int:
        return self.cfg.special_token

    def reset_parameters(self, std: float | None = None) -> None:
        """Gaussian init (audiocraft's ``weight_init: gaussian``), for models trained from scratch."""
        std = std if std is not None else 1.0 / math.sqrt(self.cfg.dim)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std, a=-3 * std, b=3 * std)

    # --- cache management -------------------------------------------------------------------------------------
    def setup_cache(self, batch: int, max_len: int) -> None:
        """Allocate the self-attention caches for ``batch`` rows and ``max_len`` positions (prefix included)."""
        p = next(self.parameters())
        Dh = self.cfg.dim // self.cfg.num_heads
        for layer in self.layers:
            layer.self_attn.cache = KVCache(batch, self.cfg.num_heads, max_len, Dh, p.dtype, p.device)
        self._positions = sinusoidal_embedding(torch.arange(max_len, device=p.device), self.cfg.dim,
                                               self.cfg.max_period).to(p.dtype)

    def set_cross_source(self, cross_src: torch.Tensor | None) -> None:
        """Compute and keep every layer's cross-attention keys/values for the following cached steps."""
        if cross_src is not None:
            cross_src = cross_src.to(self.out_norm.weight.dtype)
        for layer in self.layers:
            if layer.cross_attention is not None:
                layer.cross_attention.cached_kv = (
                    layer.cross_attention.source_kv(cross_src) if cross_src is not None else None)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.self_attn.cache = None
            if layer.cross_attention is not None:
                layer.cross_attention.cached_kv = None
        self._positions = None

    # --- forward -------------------------------------------------------------------------------------------------
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, S] -> summed embeddings [B, S, D]."""
        x = self.emb[0](codes[:, 0])
        for k in range(1, len(self.emb)):
            x = x + self.emb[k](codes[:, k])
        return x

    def forward(self, codes: torch.Tensor, cross_src: torch.Tensor | None = None,
                prefix: torch.Tensor | None = None, start: int | None = None,
                last_only: bool = False, frame_cond: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, S] -> logits [B, K, S, card] ([B, K, 1, card] with ``last_only``).

        ``start=None``: full causal forward from position 0. ``start=p``: cached step(s) at positions p.. (prefix
        included in the count); cross-attention uses ``cross_src`` if given, else the keys/values set by
        ``set_cross_source``. ``prefix`` [B, P, D] is prepended and its outputs dropped. ``frame_cond`` [B, S, D]
        is added to the embeddings of ``codes``, position by position.
        """
        x = self.embed(codes)  # [B, S, D]
        S = x.shape[1]
        if frame_cond is not None:
            x = x + frame_cond.to(x.dtype)
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        T = x.shape[1]
        pos0 = 0 if start is None else start
        if start is not None and self._positions is not None:
            pos = self._positions[pos0:pos0 + T]
        else:
            pos = sinusoidal_embedding(torch.arange(pos0, pos0 + T, device=x.device), self.cfg.dim,
                                       self.cfg.max_period).to(x.dtype)
        x = x + pos
        if cross_src is not None:
            cross_src = cross_src.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cross_src, start)
        x = self.out_norm(x[:, T - 1:] if last_only else x[:, T - S:])  # drop the prefix
        return torch.stack([head(x) for head in self.heads], dim=1)  # [B, K, S, card]
