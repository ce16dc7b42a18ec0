"""Residual vector quantization (RVQ) of the codec latent.

Inference: each codebook picks the L2-nearest codeword of what the previous ones left over, and decoding sums the
picked codewords. Training (``train()`` mode ``forward``) learns the codebooks without gradients, as EnCodec does:
k-means on the first batch, then exponential moving averages of codeword counts and sums, and replacement of
codewords whose average count fell under a threshold by random vectors of the current batch. Two deliberate
differences from audiocraft's ``core_vq.py`` are marked where they happen (k-means init of the moving sums, and
dead-code replacement that actually sticks).

Not done here (left to the trainer): synchronising the buffers across distributed workers after k-means, dead-code
replacement and the EMA update; quantizer dropout (a random number of codebooks per batch: pass ``n_q``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EuclideanCodebook(nn.Module):
    """One codebook of ``bins`` codewords of size ``dim``, with EnCodec's EMA training state as buffers.

    Buffers: ``embed`` [bins, dim] the codewords; ``embed_avg`` [bins, dim] and ``cluster_size`` [bins] the moving
    sums and counts that ``embed`` is their ratio of; ``inited`` [1] whether k-means initialisation has happened.
    """

    def __init__(self, dim: int, bins: int, *, decay: float = 0.99, epsilon: float = 1e-5, kmeans_init: bool = True,
                 kmeans_iters: int = 50, threshold_ema_dead_code: float = 2.0):
        super().__init__()
        self.bins = bins
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        embed = torch.zeros(bins, dim)
        if not kmeans_init:
            nn.init.kaiming_uniform_(embed)
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(bins))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, x: Tensor) -> Tensor:
        """Index of the nearest codeword: [N, dim] -> [N]."""
        embed_t = self.embed.t()  # [dim, bins]
        # ||x - e||^2 expanded; written in the same order as EnCodec so that float rounding (and codes) agree
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed_t + embed_t.pow(2).sum(0, keepdim=True)
        return dist.argmin(dim=-1)

    def decode(self, codes: Tensor) -> Tensor:
        """Codewords of indices: [...] -> [..., dim]."""
        return F.embedding(codes, self.embed)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[N, dim] -> (codewords [N, dim], codes [N]); in training mode also updates the codebook."""
        if self.training and not bool(self.inited):
            self._kmeans_init(x)
        codes = self.encode(x)
        quantized = self.decode(codes)
        if self.training:
            self._replace_dead_codes(x)
            self._ema_update(x, codes)
        return quantized, codes

    @torch.no_grad()
    def _kmeans_init(self, x: Tensor) -> None:
        means = _sample(x, self.bins)
        counts = torch.zeros(self.bins, device=x.device)
        for _ in range(self.kmeans_iters):
            assign = torch.cdist(x, means).argmin(dim=-1)
            counts = torch.bincount(assign, minlength=self.bins).to(x.dtype)
            sums = torch.zeros_like(means).index_add_(0, assign, x)
            means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], means)
        self.embed.copy_(means)
        # moving sums, so that embed = embed_avg / cluster_size holds from the start (EnCodec stores the means here,
        # which scales each codeword by (decay + (1 - decay) * count) / count on the first update)
        self.embed_avg.copy_(means * counts[:, None])
        self.cluster_size.copy_(counts)
        self.inited.fill_(1.0)

    @torch.no_grad()
    def _replace_dead_codes(self, x: Tensor) -> None:
        if self.threshold_ema_dead_code <= 0:
            return
        dead = self.cluster_size < self.threshold_ema_dead_code  # [bins]
        if dead.any():
            # Restart the moving averages too: EnCodec/audiocraft replace only ``embed``, which the EMA update right
            # after recomputes from the old averages, so their replacement has no effect (facebookresearch/encodec#61).
            samples = _sample(x, int(dead.sum()))
            self.embed[dead] = samples
            self.embed_avg[dead] = samples * self.threshold_ema_dead_code
            self.cluster_size[dead] = self.threshold_ema_dead_code

    @torch.no_grad()
    def _ema_update(self, x: Tensor, codes: Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.bins).to(x.dtype)
        sums = torch.zeros_like(self.embed).index_add_(0, codes, x.to(self.embed.dtype))
        self.cluster_size.lerp_(counts, 1 - self.decay)
        self.embed_avg.lerp_(sums, 1 - self.decay)
        # Laplace-smoothed counts keep never-used codewords finite
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.bins * self.epsilon) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])


def _sample(x: Tensor, n: int) -> Tensor:
    """n rows of x [N, dim], without replacement when there are enough."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], device=x.device)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), device=x.device)]


class ResidualVectorQuantizer(nn.Module):
    """``n_q`` codebooks applied one after the other to the residual of the previous ones."""

    def __init__(self, dimension: int, n_q: int, bins: int, **codebook_kwargs):
        super().__init__()
        self.codebooks = nn.ModuleList(EuclideanCodebook(dimension, bins, **codebook_kwargs) for _ in range(n_q))
        self.n_q = n_q  # codebooks in use, the first ones

    @property
    def total_codebooks(self) -> int:
        return len(self.codebooks)

    def _active(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else n_q
        if not 1 <= n_q <= len(self.codebooks):
            raise ValueError(f"n_q must lie in [1, {len(self.codebooks)}], got {n_q}")
        return n_q

    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """Latent [B, D, T] -> codes [B, K, T] with K = n_q (default: the number in use)."""
        b, d, t = x.shape
        residual = x.transpose(1, 2).reshape(b * t, d)  # [B*T, D]
        codes = []
        for codebook in self.codebooks[: self._active(n_q)]:
            idx = codebook.encode(residual)  # [B*T]
            residual = residual - codebook.decode(idx)
            codes.append(idx.view(b, t))
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes [B, K, T] (K <= total codebooks, the first ones) -> latent [B, D, T]: the sum of the codewords."""
        if codes.shape[1] > len(self.codebooks):
            raise ValueError(f"got {codes.shape[1]} codebooks, the quantizer has {len(self.codebooks)}")
        out = self.codebooks[0].decode(codes[:, 0])  # [B, T, D]
        for k in range(1, codes.shape[1]):
            out = out + self.codebooks[k].decode(codes[:, k])
        return out.transpose(1, 2)

    def forward(self, x: Tensor, n_q: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Latent [B, D, T] -> (quantized [B, D, T], codes [B, K, T], commitment loss []).

        In training mode gradients pass straight through the quantization to the encoder, the codebooks learn by
        EMA, and the loss is the mean squared distance between each stage's input and its codeword.
        """
        b, d, t = x.shape
        residual = x.transpose(1, 2).reshape(b * t, d)
        quantized_out = torch.zeros_like(residual)
        codes, losses = [], []
        for codebook in self.codebooks[: self._active(n_q)]:
            quantized, idx = codebook(residual.detach() if self.training else residual)
            if self.training:
                losses.append(F.mse_loss(residual, quantized.detach()))
                quantized = residual + (quantized - residual).detach()
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            codes.append(idx.view(b, t))
        loss = torch.stack(losses).mean() if losses else x.new_zeros(())
        return quantized_out.view(b, t, d).transpose(1, 2), torch.stack(codes, dim=1), loss
