"""Audio features for evaluation: log-mel spectrograms, the FAD embedding, Fréchet distance.

Everything here is plain torch (``torch.stft``) and numpy/scipy, with fixed parameters so that numbers from
different runs compare:

- :func:`log_mel`: 64 mel bands (HTK mel scale, 20 Hz - 16 kHz, triangles of unit peak) of the power spectrogram,
  n_fft 1024, Hann window, hop 320 (10 ms at 32 kHz), in dB: ``10 log10(max(mel power, 1e-8))`` (floor -80 dB).
- :func:`fad_embeddings` (**the FAD embedding space**, "logmel-stats-128"): the log-mel frames cut into windows of
  0.96 s with a hop of 0.48 s (as VGGish cuts its frames); each window is the mean and standard deviation over its
  96 frames of each of the 64 bands: 128 numbers. FAD is the Fréchet distance between Gaussians fitted to all
  windows of two sets of clips. It is a fixed, training-free space (no VGGish/CLAP weights), so values are not
  comparable with FADs from published papers, only between models and baselines measured here.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from yuefu.errors import InvalidArgumentError

SAMPLE_RATE = 32000  # every feature is computed at this rate
N_FFT = 1024
HOP = 320  # 10 ms
N_MELS = 64
F_MIN = 20.0
F_MAX = 16000.0
DB_FLOOR = 1e-8  # -80 dB
FAD_WINDOW = 96  # frames: 0.96 s
FAD_HOP = 48  # frames: 0.48 s
FAD_EMBEDDING = "logmel-stats-128: mean and std of 64 log-mel bands over 0.96 s windows (hop 0.48 s)"


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, f_min: float = F_MIN,
                   f_max: float = F_MAX) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, unit peak: [n_mels, n_fft // 2 + 1] float32."""
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise InvalidArgumentError(f"mel range {f_min}-{f_max} Hz must lie in [0, {sample_rate / 2}] Hz")
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # [F]
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(f_min)), _hz_to_mel(np.array(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [n_mels, 1] each
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    bank = np.clip(np.minimum(rising, falling), 0.0, None)  # [n_mels, F]
    return torch.from_numpy(bank.astype(np.float32))


def _as_batch(wav: torch.Tensor | np.ndarray) -> torch.Tensor:
    """[T], [C, T] (channels averaged) or [B, C, T] -> float32 [B, T]."""
    x = torch.as_tensor(wav, dtype=torch.float32)
    if x.dim() == 1:
        return x[None]
    if x.dim() == 2:
        return x.mean(dim=0, keepdim=True)
    if x.dim() == 3:
        return x.mean(dim=1)
    raise InvalidArgumentError(f"expected a waveform [T], [C, T] or [B, C, T], got shape {tuple(x.shape)}")


def log_mel(wav: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Waveform [T], [C, T] or [B, C, T] at ``sample_rate`` -> log-mel in dB [B, frames, 64], frames = T // 320 + 1.

    Audio at another rate is resampled to 32 kHz first, so features of every source match.
    """
    x = _as_batch(wav)  # [B, T]
    if sample_rate != SAMPLE_RATE:
        from yuefu.audio import resample

        x = resample(x, sample_rate, SAMPLE_RATE)
    if x.shape[-1] < N_FFT // 2 + 1:  # reflect padding needs more samples than half a window
        x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.shape[-1]))
    window = torch.hann_window(N_FFT)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, window=window, center=True, pad_mode="reflect",
                      return_complex=True)  # [B, F, frames]
    power = spec.abs().pow(2) / window.pow(2).sum()  # a full-scale sine peaks near 0 dB in its band
    mel = torch.einsum("mf,bft->btm", mel_filterbank(), power)  # [B, frames, 64]
    return 10.0 * torch.log10(mel.clamp_min(DB_FLOOR))


def fad_embeddings(logmel: torch.Tensor) -> torch.Tensor:
    """Log-mel [frames, 64] of one clip -> embeddings [windows, 128] (0.96 s windows, hop 0.48 s).

    A clip shorter than one window gives one embedding of all its frames.
    """
    if logmel.dim() != 2:
        raise InvalidArgumentError(f"fad_embeddings takes one clip's log-mel [frames, bands], got "
                                   f"{tuple(logmel.shape)}")
    if logmel.shape[0] < FAD_WINDOW:
        windows = logmel[None]  # [1, frames, M]
    else:
        windows = logmel.unfold(0, FAD_WINDOW, FAD_HOP).transpose(1, 2)  # [W, 96, M]
    return torch.cat([windows.mean(1), windows.std(1, unbiased=False)], dim=-1)  # [W, 2M]


def gaussian_stats(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Samples [N, D] -> (mean [D], covariance [D, D]) in float64; needs N >= 2."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise InvalidArgumentError(f"need at least 2 samples [N, D] to fit a Gaussian, got shape {a.shape}")
    return a.mean(axis=0), np.cov(a, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    The matrix square root is scipy's ``sqrtm``; when the product is (near) singular, as with fewer samples than
    dimensions, both covariances get 1e-6 on the diagonal first; a negligible imaginary part is dropped.
    """
    import scipy.linalg  # scipy comes with the eval extra (librosa needs it too)

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InvalidArgumentError(f"mismatched Gaussians: means {mu1.shape}, {mu2.shape}; covariances {s1.shape}, "
                                   f"{s2.shape}")
    root = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(root):
        root = root.real  # numerical noise of sqrtm on a product of PSD matrices
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))


def fad(embeddings_a: np.ndarray | torch.Tensor, embeddings_b: np.ndarray | torch.Tensor) -> float:
    """FAD between two sets of embeddings [N_a, D] and [N_b, D] (Gaussians fitted to each)."""
    return frechet_distance(*gaussian_stats(embeddings_a), *gaussian_stats(embeddings_b))


__all__ = [
    "FAD_EMBEDDING", "SAMPLE_RATE", "fad", "fad_embeddings", "frechet_distance", "gaussian_stats",
    "log_mel", "mel_filterbank",
]
