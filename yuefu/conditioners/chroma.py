"""Melody conditioning: a waveform -> one-hot chroma frames [B, frames, 12] that MusicGen-melody prepends.

The pipeline follows audiocraft's ``ChromaStemConditioner`` at inference:

1. :func:`check_melody` rejects unusable audio (empty, non-finite, too long, silent) with a one-line error.
2. resample to 32 kHz (:func:`yuefu.audio.resample`),
3. optionally :func:`separate_melody_stems`: Demucs (htdemucs) keeps vocals + other, drums and bass dropped,
4. :class:`ChromaExtractor`: mono, power spectrogram (n_fft = window = 2^14, hop 4096, centred, window-normalised),
   a librosa chroma filterbank (:func:`chroma_filterbank`), inf-norm over the 12 bins, argmax one-hot,
5. tile or truncate to 235 frames (30 s) as the model was trained.

The null melody (classifier-free guidance's unconditional branch, or no melody at all) is the chroma of silence:
every frame one-hot on bin 0 (pitch class C), because the argmax of an all-zero frame is its first bin. Both
audiocraft (zero waveform through the extractor) and transformers (``[:, :, 0] = 1``) produce exactly that.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from yuefu.audio import resample
from yuefu.errors import AudioFileError, InvalidArgumentError

CHROMA_SAMPLE_RATE = 32000
CHROMA_FRAMES = 235  # 30 s at 32 kHz with hop 4096, centred: 960000 // 4096 + 1
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SILENCE_PEAK = 1e-4  # a melody whose absolute peak is below this is taken as silent
MAX_MELODY_SECONDS = 600.0  # default limit of check_melody: 10 minutes

Truncation = Literal["audiocraft", "transformers"]


def chroma_filterbank(sample_rate: int, n_fft: int, n_chroma: int = 12, tuning: float = 0.0) -> torch.Tensor:
    """librosa's ``filters.chroma`` (ctroct 5, octwidth 2, norm 2, base_c True): [n_chroma, n_fft // 2 + 1] float32.

    Each FFT bin spreads its energy over the pitch classes with a Gaussian bump (width one bin spacing, at
    least one chroma bin) centred on its pitch; columns are L2-normalised, then weighted by a Gaussian over
    octaves centred on octave 5 (about 500 Hz, two octaves half-width) so that very low and very high bins count
    less. Computed in float64 like librosa, returned in float32 like librosa's default dtype.
    """
    # pitch of every FFT bin but DC, in chroma bins above A440/16 (A0 ~ 27.5 Hz)
    freqs = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    pitch = n_chroma * np.log2(freqs / (a440 / 16))  # [n_fft - 1]
    # DC gets a made-up pitch 1.5 octaves below bin 1 (a broad bump, half a turn of the chroma circle away)
    pitch = np.concatenate(([pitch[0] - 1.5 * n_chroma], pitch))  # [n_fft]
    width = np.concatenate((np.maximum(np.diff(pitch), 1.0), [1.0]))  # [n_fft]

    half = np.round(n_chroma / 2)
    # signed distance from each bin's pitch to each chroma bin, wrapped into [-half, half)
    dist = np.subtract.outer(pitch, np.arange(n_chroma, dtype=np.float64)).T  # [n_chroma, n_fft]
    dist = np.remainder(dist + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * dist / width[None, :]) ** 2)
    weights = weights / np.sqrt(np.sum(weights**2, axis=0, keepdims=True))  # L2 per column
    octave_weight = np.exp(-0.5 * ((pitch / n_chroma - 5.0) / 2.0) ** 2)  # [n_fft]
    weights = weights * octave_weight[None, :]
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)  # rows start at C instead of A
    return torch.from_numpy(np.ascontiguousarray(weights[:, : n_fft // 2 + 1], dtype=np.float32))


class ChromaExtractor(nn.Module):
    """wav [B, C, T] -> chroma [B, frames, n_chroma], frames = max(T, n_fft) // hop + 1.

    audiocraft's ``ChromaExtractor`` as MusicGen-melody configures it (32 kHz, 12 bins, radix2_exp 14, argmax).
    Inputs shorter than one window are zero-padded to n_fft, centred (audiocraft does this for nullified
    conditions), so any length gives at least n_fft // hop + 1 = 5 frames.
    """

    def __init__(self, sample_rate: int = CHROMA_SAMPLE_RATE, n_chroma: int = 12, radix2_exp: int = 14,
                 argmax: bool = True, norm: float = math.inf):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_chroma = n_chroma
        self.n_fft = 2**radix2_exp  # window length = FFT size
        self.hop = self.n_fft // 4
        self.argmax = argmax
        self.norm = norm
        # Neither is a learned weight: audiocraft checkpoints store the window (`...chroma.spec.window`), which a
        # checkpoint adapter can drop; it is always this periodic Hann window.
        self.register_buffer("fbanks", chroma_filterbank(sample_rate, self.n_fft, n_chroma), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def frames(self, length: int) -> int:
        """Number of chroma frames for ``length`` samples."""
        return max(length, self.n_fft) // self.hop + 1

    def power_spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, T] -> |STFT|^2 [B, n_fft // 2 + 1, frames]: torchaudio's Spectrogram(power=2, normalized=True)."""
        spec = torch.stft(wav, n_fft=self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        spec = spec / self.window.pow(2.0).sum().sqrt()  # "window" normalisation: unit-energy window
        return spec.abs().pow(2.0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3:
            raise InvalidArgumentError(f"ChromaExtractor expects a waveform [batch, channels, samples], got "
                                       f"shape {tuple(wav.shape)}")
        x = wav.to(self.fbanks.dtype).mean(dim=1)  # [B, T] mono
        length = x.shape[-1]
        if length < self.n_fft:  # centred zero padding up to one window, as audiocraft
            pad = self.n_fft - length
            x = F.pad(x, (pad // 2, pad - pad // 2))
        spec = self.power_spectrogram(x)  # [B, F, frames]
        raw = torch.einsum("cf,bft->bct", self.fbanks, spec)  # [B, 12, frames]
        chroma = F.normalize(raw, p=self.norm, dim=-2, eps=1e-6).transpose(1, 2)  # [B, frames, 12]
        if self.argmax:
            # ties (an all-zero, silent frame) go to the first maximum: bin 0, C
            chroma = F.one_hot(chroma.argmax(-1), self.n_chroma).to(chroma.dtype)
        return chroma


@functools.lru_cache(maxsize=4)
def _extractor(device: str) -> ChromaExtractor:
    return ChromaExtractor().to(device)


def null_melody_chroma(batch_size: int = 1, frames: int = CHROMA_FRAMES, n_chroma: int = 12,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The chroma of silence [B, frames, n_chroma]: one-hot on bin 0 (C) in every frame; the null melody."""
    chroma = torch.zeros(batch_size, frames, n_chroma, device=device, dtype=dtype)
    chroma[..., 0] = 1
    return chroma


def fit_chroma_frames(chroma: torch.Tensor, target_frames: int = CHROMA_FRAMES) -> torch.Tensor:
    """chroma [B, T, 12] -> [B, target_frames, 12]: tiled (repeated whole) when shorter, truncated when longer.

    audiocraft's ``match_len_on_eval`` rule (and transformers' in the model): repeat ceil(target / T) times, cut.
    """
    length = chroma.shape[1]
    if length < target_frames:
        chroma = chroma.repeat(1, math.ceil(target_frames / length), 1)
    return chroma[:, :target_frames]


def melody_chroma(wav: torch.Tensor, sample_rate: int, target_frames: int = CHROMA_FRAMES, *,
                  truncation: Truncation = "audiocraft", chunk_seconds: float = 30.0,
                  separate_stems: bool = False, extractor: ChromaExtractor | None = None) -> torch.Tensor:
    """Melody wav [B, C, T] at ``sample_rate`` -> one-hot chroma [B, target_frames, 12] for the LM's prefix.

    Resampled to 32 kHz, optionally stem-separated (:func:`separate_melody_stems`), mono-mixed, then tiled or
    truncated to ``target_frames``. Melodies longer than the model's window are cut differently by the two
    references, and ``truncation`` picks which to follow:

    - ``"audiocraft"`` (default): chroma of the whole melody, then its first ``target_frames`` frames.
    - ``"transformers"``: the waveform is first cut to ``chunk_seconds`` (the feature extractor's
      ``chunk_length``), so the last frames see no audio beyond that point.

    Silence gives the null melody (bin C everywhere); call :func:`check_melody` first to refuse it instead.
    """
    if truncation not in ("audiocraft", "transformers"):
        raise InvalidArgumentError(f"truncation must be 'audiocraft' or 'transformers', got {truncation!r}")
    if wav.dim() != 3:
        raise InvalidArgumentError(f"melody must be shaped [batch, channels, samples], got {tuple(wav.shape)}")
    extractor = extractor if extractor is not None else _extractor(str(wav.device))
    sr = extractor.sample_rate
    x = resample(wav.float(), sample_rate, sr)  # [B, C, T']
    if separate_stems:
        x = separate_melody_stems(x, sr)  # [B, 1, T']
    if truncation == "transformers":
        x = x[..., : int(round(chunk_seconds * sr))]
    chroma = extractor(x)  # [B, frames, 12]
    return fit_chroma_frames(chroma, target_frames)


def cyclic_melody_window(wav: torch.Tensor, sample_rate: int, offset_seconds: float,
                         window_seconds: float = 30.0) -> torch.Tensor:
    """wav [B, C, T] -> [B, C, window] read cyclically from ``offset_seconds``: audiocraft's melody for the next
    window of long-form generation (positions (offset + i) mod T, so a short melody loops)."""
    length = wav.shape[-1]
    start = int(offset_seconds * sample_rate)
    positions = torch.arange(start, start + int(window_seconds * sample_rate), device=wav.device) % length
    return wav[..., positions]


# --- stem separation ---------------------------------------------------------------------------------------------

_HTDEMUCS_SIGNATURE = "955717e8"  # the single model inside demucs' "htdemucs" bag
_warned_no_demucs = False


def _local_htdemucs() -> nn.Module | None:
    """The htdemucs model if the demucs package is installed and its weights are already in torch's hub cache.

    demucs fetches weights with ``torch.hub.load_state_dict_from_url``, which reads the cached file when it is
    there; we only call it then, so this never downloads.
    """
    try:
        from demucs import pretrained
    except Exception:  # not installed, or installed without a working torchaudio
        return None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(cache.glob(f"{_HTDEMUCS_SIGNATURE}-*.th")):
        return None
    return pretrained.get_model("htdemucs").eval()


@functools.lru_cache(maxsize=1)
def _cached_htdemucs() -> nn.Module | None:
    return _local_htdemucs()


def _apply_demucs(model: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """wav [B, C, T] at model.samplerate -> stems [B, S, C, T] (demucs' own chunked application)."""
    from demucs.apply import apply_model

    return apply_model(model, wav, device=wav.device)


def _to_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, C, T] -> [B, channels, T] as demucs' convert_audio_channels: mean to mono, copy mono, or keep the first."""
    have = wav.shape[1]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=1, keepdim=True)
    if have == 1:
        return wav.expand(-1, channels, -1)
    if have >= channels:
        return wav[:, :channels]
    raise InvalidArgumentError(f"cannot turn {have} channels into {channels}")


def separate_melody_stems(wav: torch.Tensor, sample_rate: int, model: nn.Module | None = None) -> torch.Tensor:
    """wav [B, C, T] -> [B, 1, T] at ``sample_rate``: the part that carries the melody (vocals + other).

    As audiocraft: resample to Demucs' rate and channels, run htdemucs, keep the ``vocals`` and ``other`` stems
    (drums and bass dominate chroma without carrying the melody), sum them, mono, back to ``sample_rate``.

    ``model`` is a loaded demucs model; without one, htdemucs is used if ``demucs`` is installed
    (``pip install demucs``) and its weights are already cached locally (this never downloads). When it is not
    available the mono mix is returned unchanged and a warning is given once per process: melody conditioning
    still works, but drums and bass can pull the chroma off the tune.
    """
    global _warned_no_demucs
    model = model if model is not None else _cached_htdemucs()
    if model is None:
        if not _warned_no_demucs:
            _warned_no_demucs = True
            warnings.warn("demucs (htdemucs) is not installed or its weights are not cached: melody chroma is taken "
                          "from the full mix, without removing drums and bass", stacklevel=2)
        return wav.mean(dim=1, keepdim=True)
    sources = list(model.sources)
    keep = [sources.index("vocals"), sources.index("other")]
    x = resample(_to_channels(wav.float(), model.audio_channels), sample_rate, model.samplerate)
    stems = _apply_demucs(model, x)  # [B, S, C, T]
    mix = stems[:, keep].sum(dim=1).mean(dim=1, keepdim=True)  # [B, 1, T]
    return resample(mix, model.samplerate, sample_rate)[..., : wav.shape[-1]]


# --- input checks ------------------------------------------------------------------------------------------------

def check_melody(wav: torch.Tensor, sample_rate: int, max_seconds: float = MAX_MELODY_SECONDS,
                 name: str = "melody") -> torch.Tensor:
    """Refuse a melody that cannot condition anything; return it as a float waveform [B, C, T].

    Accepts [T], [C, T] or [B, C, T]. Raises, with one line naming ``name``:

    - :class:`InvalidArgumentError` for a wrong shape, a bad ``sample_rate`` or a melody over ``max_seconds``
      (default 10 minutes; only the first 30 s are used, and chroma of a long file costs time and memory);
    - :class:`AudioFileError` for audio content that is unusable: no samples, NaN/inf samples, or silence (peak
      below 1e-4). Silence is refused rather than silently turned into the null melody (bin C everywhere), which
      would condition on nothing while the user believes a melody was given.
    """
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise InvalidArgumentError(f"{name}: sample rate must be a positive integer, got {sample_rate!r}")
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(np.asarray(wav))
    if wav.dim() not in (1, 2, 3):
        raise InvalidArgumentError(f"{name}: expected a waveform [samples], [channels, samples] or "
                                   f"[batch, channels, samples], got shape {tuple(wav.shape)}")
    wav = wav.reshape((1,) * (3 - wav.dim()) + tuple(wav.shape))
    if not wav.is_floating_point():
        wav = wav.float()
    if wav.numel() == 0:
        raise AudioFileError(f"{name} is empty (0 samples)")
    if not bool(torch.isfinite(wav).all()):
        raise AudioFileError(f"{name} contains NaN or infinite samples")
    seconds = wav.shape[-1] / sample_rate
    if seconds > max_seconds:
        raise InvalidArgumentError(f"{name} is too long: {seconds:.1f} s > {max_seconds:g} s; trim it (only the "
                                   f"first 30 s condition a generation window)")
    peak = float(wav.abs().max())
    if peak < SILENCE_PEAK:
        raise AudioFileError(f"{name} is silent (peak {peak:.2g} < {SILENCE_PEAK:g}); give a melody with audible "
                             f"sound, or none")
    return wav


__all__ = [
    "CHROMA_FRAMES", "CHROMA_SAMPLE_RATE", "PITCH_CLASSES", "ChromaExtractor", "check_melody", "chroma_filterbank",
    "cyclic_melody_window", "fit_chroma_frames", "melody_chroma", "null_melody_chroma", "separate_melody_stems",
]
