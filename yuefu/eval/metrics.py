"""Codec reconstruction metrics: scale-invariant SNR and log-mel distance between a reconstruction and its source."""

from __future__ import annotations

import math

import torch

from yuefu.errors import InvalidArgumentError
from yuefu.eval.features import SAMPLE_RATE, log_mel


def _pair(estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two waveforms ([T] or [C, T]) -> mono float64 [T'] each, cut to the shorter length."""
    est = torch.as_tensor(estimate, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    est = est.reshape(-1, est.shape[-1]).mean(0)
    ref = ref.reshape(-1, ref.shape[-1]).mean(0)
    n = min(est.shape[-1], ref.shape[-1])
    if n == 0:
        raise InvalidArgumentError("cannot compare empty waveforms")
    return est[:n], ref[:n]


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-12) -> float:
    """Scale-invariant SNR in dB of ``estimate`` against ``reference`` (waveforms [T] or [C, T], mono-mixed).

    Both are made zero-mean; the target is the projection of the estimate on the reference,
    ``s = <est, ref> ref / |ref|^2``, the noise ``e = est - s``, and SI-SNR = ``10 log10(|s|^2 / |e|^2)``.
    A scaled copy gives +inf (up to rounding), a silent reference or estimate gives -inf.
    """
    est, ref = _pair(estimate, reference)
    est, ref = est - est.mean(), ref - ref.mean()
    ref_energy = float(ref @ ref)
    if ref_energy <= eps:
        return -math.inf
    target = (est @ ref) / ref_energy * ref
    noise = est - target
    t, e = float(target @ target), float(noise @ noise)
    if t <= eps:
        return -math.inf
    if e <= eps * t:
        return math.inf
    return 10.0 * math.log10(t / e)


def mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> float:
    """Mean absolute difference in dB between the 64-band log-mel spectrograms of two waveforms (same length)."""
    est, ref = _pair(estimate, reference)
    a = log_mel(est.float(), sample_rate)  # [1, frames, 64]
    b = log_mel(ref.float(), sample_rate)
    return float((a - b).abs().mean())


__all__ = ["mel_distance", "si_snr"]
