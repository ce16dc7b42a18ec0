"""Reconstruction losses and metrics of codec training: time-domain L1, (multi-scale) mel spectrogram distances,
and SI-SNR.

The mel spectrograms follow audiocraft's ``losses/specloss.py`` (torchaudio's ``MelSpectrogram`` with HTK mel
filters, no filter normalisation, power 2, ``center=False`` after reflect-padding so that T samples give
ceil(T / hop) frames); the filterbank comes from ``transformers.audio_utils``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None) -> Tensor:
    """HTK mel filterbank [n_fft // 2 + 1, n_mels], triangles in Hz with peak 1 (torchaudio's default)."""
    from transformers.audio_utils import mel_filter_bank

    with warnings.catch_warnings():  # small windows at low rates leave some filters empty; that is expected
        warnings.simplefilter("ignore")
        fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                             max_frequency=f_max if f_max is not None else sample_rate / 2,
                             sampling_rate=sample_rate, norm=None, mel_scale="htk")
    return torch.from_numpy(fb).float()


def stft(x: Tensor, n_fft: int, hop: int, win: int, normalized: bool) -> Tensor:
    """Complex STFT without centering: [B, C, T] -> [B, C, n_fft // 2 + 1, frames].

    ``normalized`` divides by the window's L2 norm (torchaudio's ``normalized=True``).
    """
    B, C, T = x.shape
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.reshape(B * C, T), n_fft, hop, win, window, center=False, return_complex=True)
    if normalized:
        spec = spec / window.pow(2).sum().sqrt()
    return spec.view(B, C, *spec.shape[-2:])


class MelSpectrogram(nn.Module):
    """[B, C, T] -> mel power spectrogram [B, C * n_mels, ceil(T / hop)] (log10(floor + mel) with ``log``)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, win_length: int | None = None, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float | None = None, log: bool = True, normalized: bool = False,
                 floor_level: float = 1e-5):
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop_length, win_length or n_fft
        self.log, self.normalized, self.floor_level = log, normalized, floor_level
        self.register_buffer("filters", mel_filters(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        p = (self.n_fft - self.hop) // 2
        x = F.pad(x, (p, p), "reflect")
        length = x.shape[-1]
        frames = math.ceil((length - self.n_fft) / self.hop) + 1
        x = F.pad(x, (0, max(0, (frames - 1) * self.hop + self.n_fft - length)))  # complete the last frame
        power = stft(x, self.n_fft, self.hop, self.win, self.normalized).abs().pow(2)  # [B, C, F, frames]
        mel = torch.einsum("bcft,fm->bcmt", power, self.filters.to(power.dtype))
        if self.log:
            mel = torch.log10(self.floor_level + mel)
        return mel.flatten(1, 2)


class MultiScaleMelLoss(nn.Module):
    """audiocraft's ``msspec``: for windows 2^i, i in [range_start, range_end), L1 on the mel spectrogram plus
    L2 on its log, hop = window / 4; divided by the number of terms when ``normalized``."""

    def __init__(self, sample_rate: int, range_start: int = 6, range_end: int = 11, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float | None = None, normalized: bool = False, floor_level: float = 1e-5):
        super().__init__()
        scales = [2**i for i in range(range_start, range_end)]
        kw = dict(sample_rate=sample_rate, n_mels=n_mels, f_min=f_min, f_max=f_max, normalized=normalized,
                  floor_level=floor_level)
        self.lin = nn.ModuleList(MelSpectrogram(n_fft=s, hop_length=s // 4, log=False, **kw) for s in scales)
        self.log = nn.ModuleList(MelSpectrogram(n_fft=s, hop_length=s // 4, log=True, **kw) for s in scales)
        self.normalized = normalized
        self.total = 2 * len(scales)  # alphas off: each scale counts its L1 and its L2 term once

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        loss = estimate.new_zeros(())
        for lin, log in zip(self.lin, self.log):
            loss = loss + F.l1_loss(lin(estimate), lin(target)) + F.mse_loss(log(estimate), log(target))
        return loss / self.total if self.normalized else loss


def si_snr(estimate: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SNR in dB per item: [B, C, T] x2 -> [B] (higher is better)."""
    est = estimate.flatten(1) - estimate.flatten(1).mean(dim=1, keepdim=True)
    ref = target.flatten(1) - target.flatten(1).mean(dim=1, keepdim=True)
    proj = (est * ref).sum(1, keepdim=True) / (ref.pow(2).sum(1, keepdim=True) + eps) * ref
    noise = est - proj
    return 10 * torch.log10((proj.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))


class MelDistance(nn.Module):
    """Validation metric: mean |log10 mel(estimate) - log10 mel(target)| per item ([B]); audiocraft's ``mel``
    settings (n_fft 1024, hop 256, 64 mels from 64 Hz)."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 64,
                 f_min: float = 64.0):
        super().__init__()
        self.mel = MelSpectrogram(sample_rate, n_fft, hop_length, n_mels=n_mels, f_min=f_min, log=True)

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        return (self.mel(estimate) - self.mel(target)).abs().flatten(1).mean(dim=1)
