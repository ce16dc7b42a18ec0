"""Pictures of a result for the web app: a mel spectrogram and a chromagram, drawn with Pillow from numpy arrays.

:func:`spectrogram` and :func:`chromagram` compute the values (rows x frames in [0, 1], row 0 the lowest
frequency / pitch class C); :func:`spectrogram_image` and :func:`chroma_image` render them as RGB images with a
colour map, frequency or pitch labels on the left and seconds along the bottom. The plot area of every image lies
inside :data:`MARGINS` (left, top, right, bottom), so a caller (or a test) can find a row's pixels.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from yuefu.conditioners.chroma import PITCH_CLASSES, chroma_filterbank

MARGINS = (54, 44, 14, 28)  # left, top (room for the page's label over the image), right, bottom: pixels
BACKGROUND = (20, 18, 28)
LABEL_COLOUR = (196, 192, 208)
GRID_COLOUR = (70, 66, 84)

# Anchors of perceptually ordered colour maps (the published magma and viridis end points and knees).
MAGMA = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39),
         (252, 255, 164))
VIRIDIS = ((68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81), (253, 231, 37))


def colour_map(values: np.ndarray, anchors: tuple[tuple[int, int, int], ...] = MAGMA) -> np.ndarray:
    """values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)), interpolating linearly between ``anchors``."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(anchors))
    table = np.asarray(anchors, dtype=np.float64)
    rgb = np.stack([np.interp(v, stops, table[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _mono(wav: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav).detach().float().cpu()
    while x.dim() > 1:  # [B, C, T] or [C, T] -> [T]: average channels (and items)
        x = x.mean(dim=0)
    if x.numel() == 0:
        x = torch.zeros(1)
    return x


def _stft_power(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    if x.shape[-1] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    return spec.abs().pow(2.0)  # [n_fft // 2 + 1, frames]


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequencies (Hz, ascending) of ``n_mels`` bands evenly spaced on the mel scale."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    return edges[1:-1]


@functools.lru_cache(maxsize=8)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular mel filters [n_mels, n_fft // 2 + 1]; a band narrower than an FFT bin takes its nearest bin."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    for m in np.flatnonzero(weights.sum(axis=1) == 0):
        weights[m, int(np.argmin(np.abs(bins - edges[m + 1])))] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    return torch.from_numpy(weights.astype(np.float32))


def spectrogram(wav: torch.Tensor | np.ndarray, sample_rate: int, n_mels: int = 128, n_fft: int = 2048,
                hop: int | None = None, fmin: float = 30.0, fmax: float | None = None,
                dynamic_range_db: float = 80.0) -> tuple[np.ndarray, np.ndarray]:
    """A mel spectrogram in dB, scaled to [0, 1] over ``dynamic_range_db`` below its peak.

    Returns (values [n_mels, frames], centre frequency in Hz of each row); row 0 is the lowest band.
    """
    fmax = float(fmax if fmax is not None else sample_rate / 2)
    hop = hop or n_fft // 4
    power = _stft_power(_mono(wav), n_fft, hop)
    mel = _mel_filterbank(int(sample_rate), n_fft, n_mels, float(fmin), fmax) @ power  # [n_mels, frames]
    db = 10.0 * torch.log10(mel.clamp(min=1e-12))
    top = float(db.max())
    values = ((db - (top - dynamic_range_db)) / dynamic_range_db).clamp(0.0, 1.0)
    if top <= -100.0:  # digital silence: nothing to show
        values = torch.zeros_like(values)
    return values.numpy(), mel_frequencies(n_mels, float(fmin), fmax)


def chromagram(wav: torch.Tensor | np.ndarray, sample_rate: int, n_fft: int = 8192,
               hop: int | None = None) -> np.ndarray:
    """Pitch-class energy [12, frames] in [0, 1] (row 0 = C ... row 11 = B), each frame scaled by its maximum;
    frames much quieter than the loudest one fade out instead of being blown up to full brightness."""
    hop = hop or n_fft // 8
    power = _stft_power(_mono(wav), n_fft, hop)  # [F, frames]
    chroma = chroma_filterbank(int(sample_rate), n_fft) @ power  # [12, frames]
    peak = chroma.max(dim=0, keepdim=True).values  # [1, frames]
    loudness = (peak / peak.max().clamp(min=1e-20)).clamp(min=1e-12)
    fade = (1.0 + 10.0 * torch.log10(loudness) / 60.0).clamp(0.0, 1.0)  # 0 dB -> 1, -60 dB -> 0
    return (chroma / peak.clamp(min=1e-20) * fade).clamp(0.0, 1.0).numpy()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _time_ticks(seconds: float) -> list[float]:
    if seconds <= 0:
        return [0.0]
    step = next(s for s in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300) if seconds / s <= 8)
    return [i * step for i in range(int(math.floor(seconds / step + 1e-9)) + 1)]


def render_heatmap(values: np.ndarray, seconds: float, y_ticks: list[tuple[float, str]], width: int = 960,
                   height: int = 280, anchors: tuple[tuple[int, int, int], ...] = MAGMA,
                   smooth: bool = True) -> Image.Image:
    """values [rows, frames] in [0, 1] (row 0 at the bottom) -> RGB image with labels.

    ``y_ticks`` are (row position in rows, counted from the bottom edge, label); the time axis covers ``seconds``.
    """
    left, top, right, bottom = MARGINS
    pw, ph = max(1, width - left - right), max(1, height - top - bottom)
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim != 2 or rows.size == 0:
        rows = np.zeros((1, 1))
    heat = Image.fromarray(colour_map(rows[::-1], anchors), "RGB")  # top row = highest
    heat = heat.resize((pw, ph), Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST)
    image = Image.new("RGB", (width, height), BACKGROUND)
    image.paste(heat, (left, top))
    draw = ImageDraw.Draw(image)
    font = _font(15)
    n_rows = rows.shape[0]
    for position, label in y_ticks:
        y = top + ph - position / n_rows * ph
        draw.line([(left - 4, y), (left - 1, y)], fill=LABEL_COLOUR)
        draw.text((left - 6, y), label, fill=LABEL_COLOUR, font=font, anchor="rm")
    for t in _time_ticks(seconds):
        x = left + (t / seconds * pw if seconds > 0 else 0)
        draw.line([(x, top + ph), (x, top + ph + 3)], fill=LABEL_COLOUR)
        draw.text((min(x, width - 18), top + ph + 6), f"{t:g} s", fill=LABEL_COLOUR, font=font, anchor="mt")
    draw.rectangle([left - 1, top - 1, left + pw, top + ph], outline=GRID_COLOUR)
    return image


def spectrogram_image(wav: torch.Tensor | np.ndarray, sample_rate: int, width: int = 960,
                      height: int = 320) -> Image.Image:
    """The mel spectrogram of ``wav`` ([T], [C, T] or [B, C, T]) as an RGB image, low frequencies at the bottom."""
    values, freqs = spectrogram(wav, sample_rate)
    ticks = []
    for hz in (100, 250, 500, 1000, 2000, 4000, 8000, 16000):
        if freqs[0] <= hz <= freqs[-1]:
            position = float(np.interp(_hz_to_mel(hz), _hz_to_mel(freqs), np.arange(len(freqs)))) + 0.5
            ticks.append((position, f"{hz // 1000}k" if hz >= 1000 else str(hz)))
    return render_heatmap(values, _mono(wav).shape[-1] / sample_rate, ticks, width, height, MAGMA)


def chroma_image(wav: torch.Tensor | np.ndarray, sample_rate: int, width: int = 960,
                 height: int = 290) -> Image.Image:
    """The chromagram of ``wav`` as an RGB image: 12 bands, C at the bottom, B at the top."""
    values = chromagram(wav, sample_rate)
    ticks = [(i + 0.5, name) for i, name in enumerate(PITCH_CLASSES)]
    return render_heatmap(values, _mono(wav).shape[-1] / sample_rate, ticks, width, height, VIRIDIS, smooth=False)


def plot_area(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixel box of the plot area of an image from :func:`render_heatmap`."""
    left, top, right, bottom = MARGINS
    return left, top, image.width - right, image.height - bottom
