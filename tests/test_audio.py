"""yuefu.audio: files written and read back exactly, never clipped, atomically; resampling against closed forms."""

from __future__ import annotations

import errno
import math
import os
import sys

import numpy as np
import pytest
import soundfile
import torch

from yuefu import audio
from yuefu.errors import AudioFileError, InvalidArgumentError


def sine(freq: float, sample_rate: int, seconds: float, amplitude: float = 0.5, phase: float = 0.0) -> torch.Tensor:
    """The closed form a * sin(2 pi f n / sr + phase), n = 0 .. seconds * sr - 1, in float64. [T]"""
    n = torch.arange(round(seconds * sample_rate), dtype=torch.float64)
    return amplitude * torch.sin(2 * math.pi * freq * n / sample_rate + phase)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------------------
# write / read


@pytest.mark.parametrize(
    ("suffix", "subtype", "tolerance"),
    [
        # PCM_16 stores round(x * 32767) and reads back / 32768: at most 1.5 steps of 2^-15 off.
        (".wav", "PCM_16", 2**-14),
        (".flac", "PCM_16", 2**-14),
        (".wav", "PCM_24", 2**-22),
        (".wav", "FLOAT", 1e-7),
    ],
)
def test_round_trip_returns_the_sine_within_the_quantisation_step(tmp_path, suffix, subtype, tolerance):
    sr = 32000
    stereo = torch.stack([sine(440, sr, 0.5), sine(1234.5, sr, 0.5, amplitude=0.9, phase=1.0)])  # [2, T]
    path = audio.write(tmp_path / f"sine{suffix}", stereo.float(), sr, subtype=subtype)

    assert path == tmp_path / f"sine{suffix}"
    wav, read_sr = audio.read(path)
    assert read_sr == sr
    assert wav.dtype == torch.float32 and wav.shape == stereo.shape
    assert (wav.double() - stereo).abs().max().item() <= tolerance


def test_a_one_dimensional_or_numpy_waveform_is_written_as_mono(tmp_path):
    expected = sine(440, 16000, 0.25)
    audio.write(tmp_path / "a.wav", expected.numpy(), 16000)
    audio.write(tmp_path / "b.wav", expected.float(), 16000)
    for name in ("a.wav", "b.wav"):
        wav, _ = audio.read(tmp_path / name)
        assert wav.shape == (1, expected.numel())
        assert (wav[0].double() - expected).abs().max().item() <= 2**-14


def test_a_waveform_peaking_above_one_is_scaled_down_as_a_whole_never_clipped(tmp_path):
    sr = 32000
    loud = 3.0 * torch.stack([sine(440, sr, 0.5, amplitude=1.0), sine(660, sr, 0.5, amplitude=0.5)])  # peak 3
    audio.write(tmp_path / "loud.wav", loud.float(), sr)

    wav, _ = audio.read(tmp_path / "loud.wav")
    peak = wav.abs().max().item()
    assert peak <= 1.0
    assert peak == pytest.approx(audio.PEAK_CEILING, abs=2**-14)
    # The same waveform up to one scale factor: clipping (or integer wrap-around) would bend it.
    scale = audio.PEAK_CEILING / 3.0
    assert (wav.double() - scale * loud).abs().max().item() <= 2**-14
    assert np.corrcoef(wav.flatten().numpy(), loud.flatten().numpy())[0, 1] > 0.99999


def test_a_waveform_within_full_scale_keeps_its_level(tmp_path):
    quiet = sine(440, 32000, 0.25, amplitude=0.25)
    audio.write(tmp_path / "quiet.wav", quiet.float(), 32000)
    wav, _ = audio.read(tmp_path / "quiet.wav")
    assert wav.abs().max().item() == pytest.approx(0.25, abs=2**-14)


def test_normalize_peak_raises_the_level_to_the_ceiling_and_none_refuses_to_clip(tmp_path):
    quiet = sine(440, 32000, 0.25, amplitude=0.25).float()
    audio.write(tmp_path / "peak.wav", quiet, 32000, normalize="peak")
    wav, _ = audio.read(tmp_path / "peak.wav")
    assert wav.abs().max().item() == pytest.approx(audio.PEAK_CEILING, abs=2**-14)

    with pytest.raises(InvalidArgumentError) as error:
        audio.write(tmp_path / "clipped.wav", quiet * 8, 32000, normalize="none")
    assert "clip" in one_line(error)
    assert not (tmp_path / "clipped.wav").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples_are_rejected_and_nothing_is_written(tmp_path, bad):
    wav = sine(440, 32000, 0.1).float()
    wav[100] = bad
    with pytest.raises(InvalidArgumentError) as error:
        audio.write(tmp_path / "bad.wav", wav, 32000)
    assert "NaN or infinite" in one_line(error)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_suffix_is_rejected(tmp_path):
    with pytest.raises(InvalidArgumentError) as error:
        audio.write(tmp_path / "out.xyz", sine(440, 32000, 0.1).float(), 32000)
    assert ".wav, .flac, .mp3, .ogg" in one_line(error)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix,codec", [(".mp3", "mp3"), (".ogg", "vorbis")])
def test_lossy_files_decode_elsewhere_to_the_same_tone(tmp_path, suffix, codec):
    """MP3 and OGG written here are read by FFmpeg (an independent decoder): codec, rate, length and pitch."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package) is not installed")
    wav = sine(440, 32000, 2.0).float()
    path = audio.write(tmp_path / f"tone{suffix}", wav, 32000)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    assert probe.strip().split(",") == [codec, "32000", "1"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-"],
                         capture_output=True, check=True).stdout
    decoded = np.frombuffer(raw, dtype="<f4")
    assert abs(len(decoded) - 64000) < 2400  # encoder padding of a frame or so at most
    spectrum = np.abs(np.fft.rfft(decoded[4000:60000]))
    peak_hz = np.argmax(spectrum) * 32000 / 56000
    assert abs(peak_hz - 440) < 2
    assert np.abs(decoded[4000:60000]).max() == pytest.approx(float(wav.abs().max()), rel=0.1)


# ---------------------------------------------------------------------------------------------------------------
# atomic writes


def test_writing_under_a_path_that_is_not_a_folder_raises_and_leaves_nothing(tmp_path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    for target in (not_a_folder / "out.wav", tmp_path / "missing" / "out.wav"):
        with pytest.raises(AudioFileError) as error:
            audio.write(target, sine(440, 32000, 0.1).float(), 32000)
        assert str(target) in one_line(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to read-only folders")
def test_writing_into_a_read_only_folder_raises_and_leaves_nothing(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(AudioFileError) as error:
            audio.write(folder / "out.wav", sine(440, 32000, 0.1).float(), 32000)
        assert "Permission denied" in one_line(error)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def fail_after_writing_part_of_the_file(file, *args, **kwargs):
    """Stands in for soundfile.write when the disk fills up halfway through."""
    with open(file, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failure_midway_through_writing_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(soundfile, "write", fail_after_writing_part_of_the_file)
    with pytest.raises(AudioFileError) as error:
        audio.write(tmp_path / "out.wav", sine(440, 32000, 0.1).float(), 32000)
    assert "No space left on device" in one_line(error)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"
    audio.write(target, sine(440, 32000, 0.1).float(), 32000)
    before = target.read_bytes()

    monkeypatch.setattr(soundfile, "write", fail_after_writing_part_of_the_file)
    with pytest.raises(AudioFileError):
        audio.write(target, sine(880, 32000, 0.2).float(), 32000)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


# ---------------------------------------------------------------------------------------------------------------
# reading


def test_read_can_mix_down_to_mono_and_resample(tmp_path):
    left, right = sine(440, 44100, 1.0, amplitude=0.4), sine(440, 44100, 1.0, amplitude=0.2, phase=0.5)
    audio.write(tmp_path / "stereo.flac", torch.stack([left, right]).float(), 44100, subtype="PCM_24")

    wav, sr = audio.read(tmp_path / "stereo.flac", sample_rate=32000, mono=True)

    assert sr == 32000 and wav.shape == (1, 32000)
    expected = (sine(440, 32000, 1.0, amplitude=0.4) + sine(440, 32000, 1.0, amplitude=0.2, phase=0.5)) / 2
    inner = slice(1000, -1000)  # away from the edges, where the signal starts and stops abruptly
    assert (wav[0, inner].double() - expected[inner]).abs().max().item() < 1e-4


def test_info_reports_the_header(tmp_path):
    audio.write(tmp_path / "x.flac", torch.zeros(2, 48000), 32000)
    meta = audio.info(tmp_path / "x.flac")
    header = (meta.sample_rate, meta.channels, meta.frames, meta.format, meta.subtype)
    assert header == (32000, 2, 48000, "FLAC", "PCM_16")
    assert meta.duration == pytest.approx(1.5)


def test_reading_a_missing_file_raises_a_one_line_error(tmp_path):
    with pytest.raises(AudioFileError) as error:
        audio.read(tmp_path / "nope.wav")
    assert "not found" in one_line(error)
    with pytest.raises(AudioFileError):
        audio.info(tmp_path / "nope.wav")


def test_reading_a_corrupt_file_raises_a_one_line_error(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioFileError) as error:
        audio.read(corrupt)
    assert "corrupt" in one_line(error)


@pytest.mark.parametrize("content", ["header only", "empty file"])
def test_reading_a_file_without_samples_raises_a_one_line_error(tmp_path, content):
    path = tmp_path / "empty.wav"
    if content == "header only":
        soundfile.write(path, np.zeros((0, 1), dtype=np.float32), 32000)
    else:
        path.write_bytes(b"")
    with pytest.raises(AudioFileError) as error:
        audio.read(path)
    one_line(error)


def test_a_container_soundfile_cannot_decode_asks_for_pyav_when_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))
    with pytest.raises(AudioFileError) as error:
        audio.read(m4a)
    assert "pip install av" in one_line(error)


# ---------------------------------------------------------------------------------------------------------------
# resampling


@pytest.mark.parametrize(
    ("freq", "orig_sr", "new_sr"),
    [
        (440, 44100, 32000),
        (12000, 44100, 32000),  # 0.75 x the new Nyquist frequency
        (5000, 16000, 32000),  # upsampling: no images of the tone above 8 kHz
        (3000, 24000, 32000),
        (7000, 48000, 44100),
        (1000, 32000, 44101),  # coprime rates: 44101 phases
    ],
)
def test_resampling_a_sine_gives_the_same_sine_at_the_new_rate(freq, orig_sr, new_sr):
    wav = sine(freq, orig_sr, 0.5, phase=0.3)
    out = audio.resample(wav, orig_sr, new_sr)

    assert out.shape == (math.ceil(wav.numel() * new_sr / orig_sr),)
    expected = sine(freq, new_sr, out.numel() / new_sr, phase=0.3)
    inner = slice(new_sr // 20, -new_sr // 20)  # away from the edges, where the signal starts and stops abruptly
    assert (out[inner] - expected[inner]).abs().max().item() < 2e-5


@pytest.mark.parametrize(
    ("freq", "orig_sr", "new_sr"),
    [(10_000, 48_000, 16_000), (8_800, 48_000, 16_000), (20_000, 48_000, 16_000), (17_600, 44_100, 32_000)],
)
def test_downsampling_removes_a_tone_above_the_new_nyquist_instead_of_aliasing_it(freq, orig_sr, new_sr):
    # E.g. 10 kHz sampled at 16 kHz would fold to 6 kHz at full level; the low-pass must remove it instead.
    tone = sine(freq, orig_sr, 0.5, amplitude=1.0)
    out = audio.resample(tone, orig_sr, new_sr)
    inner = out[new_sr // 20 : -new_sr // 20]
    level_db = 20 * math.log10(inner.pow(2).mean().sqrt().item() / (1 / math.sqrt(2)))
    assert level_db < -80


def test_resampling_keeps_leading_dimensions_and_dtype():
    wav = torch.randn(2, 3, 4410)
    out = audio.resample(wav, 44100, 32000)
    assert out.shape == (2, 3, 3200) and out.dtype == torch.float32
    assert torch.equal(audio.resample(wav, 44100, 44100), wav)
    # A batch is resampled row by row.
    assert torch.allclose(out[1, 2], audio.resample(wav[1, 2], 44100, 32000), atol=1e-6)


@pytest.mark.parametrize(("orig_sr", "new_sr"), [(0, 32000), (44100, -1), (44100.0, 32000)])
def test_resampling_rejects_rates_that_are_not_positive_integers(orig_sr, new_sr):
    with pytest.raises(InvalidArgumentError):
        audio.resample(torch.zeros(100), orig_sr, new_sr)
