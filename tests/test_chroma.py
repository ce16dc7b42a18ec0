"""Melody chroma: filterbank, features, tiling, the null melody and bad inputs, against independent references.

References: ``librosa.filters.chroma`` (when installed), transformers' ``chroma_filter_bank`` and its
``MusicgenMelodyFeatureExtractor`` (always; without torchaudio its Spectrogram is stood in for by the few lines
of torchaudio's definition below), and closed forms (pitch classes of pure tones, cyclic tiling).
"""

from __future__ import annotations

import importlib
import math
import types
import warnings

import numpy as np
import pytest
import torch

from yuefu.conditioners import chroma as chroma_mod
from yuefu.conditioners.chroma import (
    CHROMA_FRAMES,
    ChromaExtractor,
    check_melody,
    chroma_filterbank,
    cyclic_melody_window,
    fit_chroma_frames,
    melody_chroma,
    null_melody_chroma,
    separate_melody_stems,
)
from yuefu.errors import AudioFileError, InvalidArgumentError

SR = 32000
C, E, G, A = 0, 4, 7, 9


def tone(freqs: float | tuple[float, ...], seconds: float, sr: int = SR, amp: float = 0.3) -> torch.Tensor:
    """Sum of sines [T]."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    freqs = freqs if isinstance(freqs, tuple) else (freqs,)
    return (amp * sum(torch.sin(2 * math.pi * f * t) for f in freqs)).float()


def midi_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


class _TorchaudioSpectrogram(torch.nn.Module):
    """torchaudio.transforms.Spectrogram(power=2, normalized=True, center=True) by its definition: |STFT / ||w|| |^2."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int, **_: object):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop_length
        self.window = torch.hann_window(win_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)
        return (spec / self.window.pow(2).sum().sqrt()).abs().pow(2)


@pytest.fixture(scope="module")
def hf_extractor():
    """transformers' MusicgenMelodyFeatureExtractor; its Spectrogram stood in for when torchaudio is missing."""
    # the module itself: transformers' lazy package hands out a placeholder class when torchaudio is missing
    fe_mod = importlib.import_module("transformers.models.musicgen_melody.feature_extraction_musicgen_melody")

    try:
        import torchaudio  # noqa: F401

        return fe_mod.MusicgenMelodyFeatureExtractor()
    except Exception:  # torchaudio absent (or a build that does not load): the rest is transformers' own code
        stand_in = types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=_TorchaudioSpectrogram))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fe_mod, "torchaudio", stand_in, raising=False)
            return fe_mod.MusicgenMelodyFeatureExtractor()


def hf_chroma(extractor, wav: torch.Tensor) -> torch.Tensor:
    """[T] mono at 32 kHz -> transformers' one-hot chroma [1, frames, 12]."""
    return extractor(wav.numpy(), sampling_rate=SR, return_tensors="pt")["input_features"]


@pytest.fixture(scope="module")
def extractor() -> ChromaExtractor:
    return ChromaExtractor()


# --- (1) filterbank -------------------------------------------------------------------------------

@pytest.mark.parametrize("sr,n_fft", [(32000, 16384), (22050, 2048), (44100, 4096), (16000, 1000)])
def test_filterbank_equals_transformers_chroma_filter_bank(sr, n_fft):
    from transformers.audio_utils import chroma_filter_bank

    ref = torch.from_numpy(chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=12, sampling_rate=sr, tuning=0))
    ours = chroma_filterbank(sr, n_fft)
    assert ours.shape == (12, n_fft // 2 + 1) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref.float(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("sr,n_fft,tuning", [(32000, 16384, 0.0), (22050, 2048, 0.0), (44100, 4096, -0.2)])
def test_filterbank_equals_librosa(sr, n_fft, tuning):
    librosa = pytest.importorskip("librosa")
    ref = torch.from_numpy(librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=12, tuning=tuning))
    torch.testing.assert_close(chroma_filterbank(sr, n_fft, tuning=tuning), ref, rtol=0, atol=1e-7)


def test_power_spectrogram_equals_torchaudio(extractor):
    torchaudio = pytest.importorskip("torchaudio")
    try:
        spec = torchaudio.transforms.Spectrogram(n_fft=16384, win_length=16384, hop_length=4096, power=2,
                                                 center=True, pad=0, normalized=True)
    except Exception as error:  # pragma: no cover - a torchaudio build whose extension does not load
        pytest.skip(f"torchaudio unusable: {error}")
    x = torch.randn(2, 70000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(extractor.power_spectrogram(x), spec(x), rtol=1e-6, atol=1e-6)


# --- (2) features equal transformers' feature extractor -------------------------------------------

def _signals() -> dict[str, torch.Tensor]:
    noise = 0.1 * torch.randn(4 * SR, generator=torch.Generator().manual_seed(0))
    return {
        "A4 sine": tone(440.0, 4),
        "F#3 sine": tone(midi_hz(54), 4),
        "B5 sine": tone(midi_hz(83), 3.3),
        "C major chord": tone((midi_hz(60), midi_hz(64), midi_hz(67)), 4),
        "noise": noise,
        "sine + noise": tone(midi_hz(62), 4) + noise,
        "silence": torch.zeros(2 * SR),
        "shorter than a window": tone(300.0, 0.2),
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_chroma_equals_transformers_feature_extractor(name, extractor, hf_extractor):
    wav = _signals()[name]
    ref = hf_chroma(hf_extractor, wav)  # [1, frames, 12]
    ours = extractor(wav[None, None])
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() == 0.0


def test_stereo_is_mixed_to_mono_like_transformers(extractor, hf_extractor):
    stereo = torch.stack([tone(440.0, 3), tone(midi_hz(60), 3, amp=0.5)])  # [2, T]
    ref = hf_extractor(stereo[None].numpy(), sampling_rate=SR, return_tensors="pt")["input_features"]
    torch.testing.assert_close(extractor(stereo[None]), ref, rtol=0, atol=0)


def test_melody_chroma_transformers_truncation_equals_feature_extractor(hf_extractor):
    # 40 s: transformers cuts the waveform at 30 s before the STFT, then the model keeps 235 frames.
    wav = torch.cat([tone(440.0, 30), tone(midi_hz(60), 10, amp=1.0)])
    ref = hf_chroma(hf_extractor, wav)
    assert ref.shape[1] == CHROMA_FRAMES
    ours = melody_chroma(wav[None, None], SR, truncation="transformers")
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_melody_chroma_audiocraft_truncation_keeps_the_first_frames_of_the_full_chroma(extractor):
    # audiocraft computes chroma on the whole melody and keeps its first 235 frames: the last kept frame,
    # centred at 234 * 4096 = 958464, reaches 6656 samples into the loud C that starts at 30 s.
    wav = torch.cat([tone(440.0, 30, amp=0.05), tone(midi_hz(60), 10, amp=1.0)])[None, None]
    ours = melody_chroma(wav, SR)
    torch.testing.assert_close(ours, extractor(wav)[:, :CHROMA_FRAMES], rtol=0, atol=0)
    assert ours[0, -1].argmax().item() == C
    assert melody_chroma(wav, SR, truncation="transformers")[0, -1].argmax().item() == A


# --- (3) known signals ----------------------------------------------------------------------------

def test_a440_is_pitch_class_a_on_every_frame(extractor):
    out = extractor(tone(440.0, 5)[None, None])
    assert out.shape == (1, 5 * SR // 4096 + 1, 12)
    assert torch.equal(out.sum(-1), torch.ones(1, out.shape[1]))  # one-hot
    assert (out.argmax(-1) == A).all()


def test_c_major_arpeggio_gives_c_e_g(extractor):
    # C4, E4, G4 for 1 s each; frames whose whole window (centre +- 8192 samples) lies inside one note
    notes = [(midi_hz(60), C), (midi_hz(64), E), (midi_hz(67), G)]
    wav = torch.cat([tone(f, 1.0) for f, _ in notes])
    bins = extractor(wav[None, None]).argmax(-1)[0]
    for i, (_, pitch_class) in enumerate(notes):
        start, end = i * SR, (i + 1) * SR
        inside = [t for t in range(bins.shape[0]) if t * 4096 - 8192 >= start and t * 4096 + 8192 <= end]
        assert inside, "every note spans at least one full window"
        assert bins[inside].tolist() == [pitch_class] * len(inside)


# --- (4) frame counts and tiling ------------------------------------------------------------------

def test_thirty_seconds_at_32khz_is_235_frames(extractor):
    assert extractor(torch.zeros(1, 1, 30 * SR)).shape == (1, 235, 12)
    assert extractor.frames(30 * SR) == CHROMA_FRAMES == 235


def test_seven_second_melody_is_tiled_cyclically_to_235_frames(extractor):
    wav = torch.cat([tone(midi_hz(n), 7 / 4) for n in (60, 62, 64, 65)])[None, None]  # 7 s, 4 notes
    full = extractor(wav)  # [1, 55, 12]
    assert full.shape[1] == 7 * SR // 4096 + 1 == 55
    out = melody_chroma(wav, SR)
    assert out.shape == (1, 235, 12)
    # audiocraft: chroma.repeat(1, ceil(235 / 55), 1)[:, :235], i.e. frame i is frame i mod 55
    assert torch.equal(out[0], full[0, torch.arange(235) % 55])


def test_fit_chroma_frames_truncates_longer_chroma():
    chroma = torch.eye(12)[torch.arange(300) % 12][None]  # [1, 300, 12]
    assert torch.equal(fit_chroma_frames(chroma), chroma[:, :235])


def test_melody_at_another_rate_is_resampled_first():
    out = melody_chroma(tone(440.0, 1, sr=48000)[None, None], 48000)
    assert out.shape == (1, 235, 12) and (out.argmax(-1) == A).all()


def test_cyclic_melody_window_reads_from_the_offset_and_loops():
    wav = torch.arange(10.0)[None, None]  # 10 samples at 1 Hz
    assert cyclic_melody_window(wav, 1, offset_seconds=7, window_seconds=6)[0, 0].tolist() == [7, 8, 9, 0, 1, 2]


# --- null melody ----------------------------------------------------------------------------------

def test_silence_maps_to_bin_c_in_every_reference(extractor, hf_extractor):
    null = null_melody_chroma(2)
    assert null.shape == (2, 235, 12) and (null.argmax(-1) == C).all() and torch.equal(null.sum(-1), torch.ones(2, 235))
    # transformers' extractor on silence
    assert (hf_chroma(hf_extractor, torch.zeros(SR)).argmax(-1) == C).all()
    # audiocraft's nullified condition is a [B, 1, 1] zero waveform, padded to one window: 5 frames of C
    assert torch.equal(extractor(torch.zeros(2, 1, 1)), null_melody_chroma(2, frames=5))
    assert torch.equal(melody_chroma(torch.zeros(2, 1, 3 * SR), SR), null)


# --- stems ----------------------------------------------------------------------------------------

def test_without_demucs_the_mix_is_returned_and_a_warning_given_once(monkeypatch):
    monkeypatch.setattr(chroma_mod, "_cached_htdemucs", lambda: None)
    monkeypatch.setattr(chroma_mod, "_warned_no_demucs", False)
    wav = torch.randn(1, 2, 1000, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="demucs"):
        out = separate_melody_stems(wav, SR)
    torch.testing.assert_close(out, wav.mean(dim=1, keepdim=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        separate_melody_stems(wav, SR)  # second call: no warning


def test_stems_keep_vocals_and_other(monkeypatch):
    # A stand-in separator whose stems are constants: drums 1, bass 2, other 4, vocals 8 -> kept sum 12.
    model = types.SimpleNamespace(sources=["drums", "bass", "other", "vocals"], samplerate=44100, audio_channels=2)

    def fake_apply(m, wav):  # wav [B, 2, T] at 44.1 kHz -> [B, 4, 2, T]
        assert wav.shape[1] == 2
        levels = torch.tensor([1.0, 2.0, 4.0, 8.0])[None, :, None, None]
        return levels.expand(wav.shape[0], 4, 2, wav.shape[-1]).clone()

    monkeypatch.setattr(chroma_mod, "_apply_demucs", fake_apply)
    n = SR // 10
    out = separate_melody_stems(torch.zeros(3, 1, n), SR, model=model)
    assert out.shape == (3, 1, n)
    torch.testing.assert_close(out[..., n // 4: 3 * n // 4], torch.full((3, 1, n // 2), 12.0), rtol=0, atol=1e-3)


# --- (5) bad inputs -------------------------------------------------------------------------------

@pytest.mark.parametrize("wav,sr,kwargs,error,words", [
    (torch.zeros(1, 0), SR, {}, AudioFileError, "empty"),
    (torch.zeros(2, SR), SR, {}, AudioFileError, "silent"),
    (torch.full((1, SR), 5e-5), SR, {}, AudioFileError, "silent"),
    (torch.tensor([0.1, float("nan"), 0.2]), SR, {}, AudioFileError, "NaN"),
    (torch.tensor([0.1, float("inf")]), SR, {}, AudioFileError, "infinite"),
    (torch.full((1, 601 * 100), 0.5), 100, {}, InvalidArgumentError, "too long"),  # 601 s > 10 min default
    (torch.full((1, 3 * SR), 0.5), SR, {"max_seconds": 2.0}, InvalidArgumentError, "too long"),
    (torch.zeros(1, 1, 1, 4), SR, {}, InvalidArgumentError, "expected a waveform"),
    (torch.ones(4), 0, {}, InvalidArgumentError, "sample rate"),
])
def test_bad_melodies_raise_one_line_errors(wav, sr, kwargs, error, words):
    with pytest.raises(error, match=words) as caught:
        check_melody(wav, sr, **kwargs)
    assert "\n" not in str(caught.value)


def test_good_melody_passes_and_is_shaped_batch_channels_samples():
    out = check_melody(np.full(1000, 0.5, dtype=np.float32), SR)
    assert out.shape == (1, 1, 1000) and out.is_floating_point()
    assert check_melody(tone(440.0, 1)[None], SR).shape == (1, 1, SR)
