"""Audio files in and out, and band-limited resampling.

- :func:`write` saves a waveform as WAV or FLAC: atomically (a temporary file in the same folder, then a rename)
  and never clipped (a waveform that peaks above 1 is scaled down as a whole).
- :func:`read` loads any file soundfile (libsndfile) decodes: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...;
  containers it cannot decode (m4a/mp4/aac/webm) go through PyAV when it is installed (``pip install av``).
- :func:`resample` converts between sample rates with a Kaiser-windowed sinc filter, in plain torch.

Waveforms are float tensors shaped [C, T] (channels, samples) with samples in [-1, 1].
"""

from __future__ import annotations

import functools
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch

from yuefu.errors import AudioFileError, InvalidArgumentError

Normalize = Literal["safe", "peak", "none"]

# Peak that "safe" scales a too-loud waveform down to, and "peak" scales every waveform to: -0.09 dBFS, just
# below full scale so that encoders and players that add a little overshoot do not clip either.
PEAK_CEILING = 0.99

_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "OGG"}
# Lossy formats, encoded by libsndfile's LAME (MP3) and libvorbis (OGG): their one sample encoding each.
_LOSSY = {"MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}
AUDIO_FORMATS = tuple(f.lstrip(".") for f in _FORMATS)
# Containers libsndfile does not decode; PyAV (FFmpeg) does.
_NEEDS_PYAV = {".m4a", ".mp4", ".aac", ".webm", ".mkv", ".mov", ".wma", ".3gp", ".amr", ".ac3"}
_MAX_CHANNELS = 8


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding the samples."""

    path: Path
    sample_rate: int
    channels: int
    frames: int  # samples per channel
    format: str  # container, e.g. "WAV", "FLAC", "MP3"
    subtype: str  # sample encoding, e.g. "PCM_16" (for PyAV: the codec name, e.g. "aac")

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


# ---------------------------------------------------------------------------------------------------------------
# Writing


def write(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    format: str | None = None,
    *,
    subtype: str = "PCM_16",
    normalize: Normalize = "safe",
) -> Path:
    """Write ``wav`` ([C, T] or [T], floats in [-1, 1]) to ``path`` as WAV, FLAC, MP3 or OGG; return the path.

    The format comes from the suffix (``.wav``, ``.flac``, ``.mp3``, ``.ogg``) unless ``format`` is given; WAV and
    FLAC samples are 16-bit PCM unless ``subtype`` names another soundfile subtype ("PCM_24", "FLOAT", ...). MP3
    (LAME) and OGG (Vorbis) are encoded by libsndfile at high quality (``subtype`` is then ignored).

    ``normalize`` decides the level, and no choice ever clips:
      - "safe" (default): unchanged, unless the peak exceeds 1; then the whole waveform is scaled down so that
        its peak is :data:`PEAK_CEILING` (the shape is kept; only the level changes).
      - "peak": always scaled so that the peak is :data:`PEAK_CEILING` (silence stays silence).
      - "none": unchanged; a peak above 1 raises InvalidArgumentError for integer subtypes, which would clip.

    The file appears complete or not at all: samples go to a hidden temporary file in the same folder, which is
    then renamed over ``path``. On any error the temporary file is removed and a previous file at ``path`` is
    left as it was. Raises InvalidArgumentError for a bad waveform or option, AudioFileError when the file
    cannot be written.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    subtype = _LOSSY.get(fmt, subtype.upper())
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise InvalidArgumentError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not sf.check_format(fmt, subtype):
        raise InvalidArgumentError(f"{fmt} files cannot hold {subtype} samples; try PCM_16 or PCM_24")
    samples = _channels_first(wav)  # [C, T] float32
    if not np.isfinite(samples).all():
        raise InvalidArgumentError(f"cannot write '{path}': the waveform contains NaN or infinite values")
    samples = _set_level(samples, normalize, subtype)
    frames = np.ascontiguousarray(samples.T)  # [T, C], as soundfile wants
    quality = {"compression_level": 0.1} if fmt in _LOSSY else {}  # 0 = best quality / highest bit rate

    def write_samples(tmp: Path) -> None:
        sf.write(tmp, frames, int(sample_rate), format=fmt, subtype=subtype, **quality)

    _write_atomically(path, write_samples)
    return path


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = _FORMATS.get("." + format.lower().lstrip("."))
        if fmt is None:
            raise InvalidArgumentError(f"unsupported audio format {format!r}; use {', '.join(AUDIO_FORMATS)}")
        return fmt
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError(f"cannot tell the audio format of '{path}': name it "
                                   f"{', '.join('.' + f for f in AUDIO_FORMATS)}")
    return fmt


def to_bytes(wav: torch.Tensor | np.ndarray, sample_rate: int, format: str = "wav") -> bytes:
    """The file :func:`write` would write, as bytes (for HTTP responses and downloads)."""
    import tempfile

    fmt = format.lower().lstrip(".")
    with tempfile.TemporaryDirectory(prefix="yuefu-audio-") as d:
        path = write(Path(d) / f"audio.{fmt}", wav, sample_rate, format=fmt)
        return path.read_bytes()


def _channels_first(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """Any [C, T] or [T] float waveform as a float32 numpy array [C, T]."""
    if isinstance(wav, torch.Tensor):
        if not wav.is_floating_point():
            raise InvalidArgumentError(f"expected float samples in [-1, 1], got a {wav.dtype} tensor")
        samples = wav.detach().to(device="cpu", dtype=torch.float32).numpy()
    else:
        samples = np.asarray(wav)
        if not np.issubdtype(samples.dtype, np.floating):
            raise InvalidArgumentError(f"expected float samples in [-1, 1], got a {samples.dtype} array")
        samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 1:
        samples = samples[None]
    if samples.ndim != 2:
        raise InvalidArgumentError(f"expected a waveform shaped [channels, samples] or [samples], got {samples.shape}")
    if samples.shape[0] > _MAX_CHANNELS:
        raise InvalidArgumentError(
            f"expected [channels, samples], got shape {tuple(samples.shape)}: is it [samples, channels]? transpose it"
        )
    if samples.shape[1] == 0:
        raise InvalidArgumentError("nothing to write: the waveform has 0 samples")
    return samples


def _set_level(samples: np.ndarray, normalize: str, subtype: str) -> np.ndarray:
    peak = float(np.abs(samples).max())
    if normalize == "safe":
        return samples * (PEAK_CEILING / peak) if peak > 1.0 else samples
    if normalize == "peak":
        return samples * (PEAK_CEILING / peak) if peak > 0.0 else samples
    if normalize == "none":
        if peak > 1.0 and subtype not in ("FLOAT", "DOUBLE"):
            raise InvalidArgumentError(
                f"the waveform peaks at {peak:.3g} > 1 and would clip as {subtype}; use normalize='safe'"
            )
        return samples
    raise InvalidArgumentError(f"normalize must be 'safe', 'peak' or 'none', got {normalize!r}")


def _write_atomically(path: Path, write_to: Callable[[Path], None]) -> None:
    """Run ``write_to(tmp)`` on a new temporary file beside ``path``, then rename it to ``path``."""
    folder = path.parent
    if not folder.exists():
        raise AudioFileError(f"cannot write '{path}': folder '{folder}' does not exist")
    if not folder.is_dir():
        raise AudioFileError(f"cannot write '{path}': '{folder}' is not a folder")
    if path.is_dir():
        raise AudioFileError(f"cannot write '{path}': it is a folder")
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 less the umask, as open()
    except OSError as e:
        raise AudioFileError(f"cannot write '{path}': {e.strerror or e}") from e
    try:
        write_to(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise AudioFileError(f"cannot write '{path}': {e.strerror or e}") from e
        if isinstance(e, sf.SoundFileError):
            raise AudioFileError(f"cannot write '{path}': {_soundfile_reason(e)}") from e
        raise


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False) -> tuple[torch.Tensor, int]:
    """Load an audio file as a float32 tensor [C, T] in [-1, 1] and its sample rate.

    ``mono`` averages the channels into one ([1, T]); ``sample_rate`` resamples to that rate (see
    :func:`resample`) and is then the rate returned. Raises AudioFileError, in one line, for a missing, empty,
    corrupt or undecodable file.
    """
    path = _existing_file(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
        samples = data.T
    except sf.SoundFileError as e:
        samples, sr = _read_with_pyav(path, e)
    if samples.shape[1] == 0:
        raise AudioFileError(f"cannot read '{path}': it contains no audio samples")
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if mono:
        wav = wav.mean(dim=0, keepdim=True)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels, length and format of an audio file, without decoding it."""
    path = _existing_file(path)
    try:
        meta = sf.info(path)
    except sf.SoundFileError as e:
        return _info_with_pyav(path, e)
    return AudioInfo(path, int(meta.samplerate), int(meta.channels), int(meta.frames), meta.format, meta.subtype)


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"audio file not found: '{path}'")
    if path.is_dir():
        raise AudioFileError(f"cannot read '{path}': it is a folder, not an audio file")
    return path


def _soundfile_reason(error: sf.SoundFileError) -> str:
    reason = getattr(error, "error_string", None) or str(error)
    return reason.strip().rstrip(".")


def _import_pyav(path: Path, error: sf.SoundFileError):
    """PyAV if installed; else the AudioFileError that says what went wrong and what to install, if anything."""
    try:
        import av
    except ImportError:
        suffix = path.suffix.lower()
        if suffix in _NEEDS_PYAV:
            raise AudioFileError(
                f"cannot read '{path}': soundfile cannot decode {suffix} files; "
                "install PyAV to read them (pip install av)"
            ) from None
        raise AudioFileError(
            f"cannot read '{path}': the file is corrupt or not in a format soundfile decodes "
            f"({_soundfile_reason(error)})"
        ) from None
    return av


def _read_with_pyav(path: Path, error: sf.SoundFileError) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with PyAV: float32 [C, T] and its sample rate."""
    av = _import_pyav(path, error)
    try:
        with av.open(str(path)) as container:
            stream = next(s for s in container.streams if s.type == "audio")
            to_float = av.AudioResampler(format="fltp")  # planar float: frame.to_ndarray() is [C, n]
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in to_float.resample(frame))
            chunks.extend(f.to_ndarray() for f in to_float.resample(None))  # flush
            sr = stream.codec_context.sample_rate
    except Exception as e:  # whatever FFmpeg makes of a file it cannot decode
        raise AudioFileError(
            f"cannot read '{path}': the file is corrupt or in a format neither soundfile nor PyAV decodes "
            f"({_soundfile_reason(error)}; PyAV: {type(e).__name__})"
        ) from e
    if not chunks:
        raise AudioFileError(f"cannot read '{path}': it contains no audio samples")
    return np.concatenate(chunks, axis=1), int(sr)


def _info_with_pyav(path: Path, error: sf.SoundFileError) -> AudioInfo:
    av = _import_pyav(path, error)
    try:
        with av.open(str(path)) as container:
            stream = next(s for s in container.streams if s.type == "audio")
            sr = stream.codec_context.sample_rate
            if stream.duration is not None and stream.time_base is not None:
                frames = round(float(stream.duration * stream.time_base) * sr)
            else:
                frames = round((container.duration or 0) / 1_000_000 * sr)  # container.duration is in µs
            names = container.format.name.split(",")  # e.g. "mov,mp4,m4a,3gp,3g2,mj2"
            suffix = path.suffix.lower().lstrip(".")
            fmt = (suffix if suffix in names else names[0]).upper()
            channels, codec = int(stream.codec_context.channels), stream.codec_context.name
            return AudioInfo(path, int(sr), channels, int(frames), fmt, codec)
    except Exception as e:
        raise AudioFileError(
            f"cannot read '{path}': the file is corrupt or in a format neither soundfile nor PyAV decodes "
            f"({_soundfile_reason(error)}; PyAV: {type(e).__name__})"
        ) from e


# ---------------------------------------------------------------------------------------------------------------
# Resampling
#
# Output sample n lies at input time t = n * down / up (in input samples), with up/down = new_sr/old_sr reduced by
# their gcd. It is the input filtered by a windowed sinc low-pass, evaluated at t:
#     y[n] = sum_j x[j] * h(t - j),   h(tau) = 2 fc sinc(2 fc tau) * kaiser(tau / half_width)
# with the cut-off fc at ROLLOFF times the lower of the two Nyquist frequencies (anti-aliasing when downsampling,
# anti-imaging when upsampling). Writing n = m * up + p, the fractional part of t depends only on the phase p,
# so the taps form a table [up, taps] computed once; each phase's taps are normalised to sum to 1 (unit DC gain).
#
# With ZEROS = 32, ROLLOFF = 0.95 and BETA = 10: a sine below 0.8 x Nyquist comes out within 1e-5 of the exact
# sine, and a tone above 1.05 x the new Nyquist is attenuated by more than 100 dB.

ZEROS = 32  # zero crossings of the sinc on each side of the centre
ROLLOFF = 0.95  # cut-off as a fraction of the lower Nyquist frequency
BETA = 10.0  # Kaiser window shape


@functools.lru_cache(maxsize=8)
def _sinc_taps(up: int, down: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(first input index per phase [up], taps [up, 2 * width], width) for resampling by up/down."""
    fc = 0.5 * min(1.0, up / down) * ROLLOFF  # cycles per input sample
    half_width = ZEROS / (2 * fc)  # in input samples
    width = math.ceil(half_width)
    phase = torch.arange(up, dtype=torch.float64)
    base = torch.div(phase * down, up, rounding_mode="floor")  # [up] floor(t) for each phase
    frac = phase * down / up - base  # [up] in [0, 1)
    k = torch.arange(2 * width, dtype=torch.float64)
    tau = frac[:, None] + (width - 1) - k[None, :]  # [up, 2w] t - j for inputs j = floor(t) - w + 1 + k
    x = (tau / half_width).clamp(-1.0, 1.0)
    window = torch.special.i0(BETA * torch.sqrt(1.0 - x**2)) / torch.special.i0(torch.tensor(BETA, dtype=torch.float64))
    taps = 2 * fc * torch.sinc(2 * fc * tau) * window
    taps = taps / taps.sum(dim=1, keepdim=True)
    return base.long(), taps, width


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``wav`` [..., T] from ``orig_sr`` to ``new_sr`` Hz: [..., ceil(T * new_sr / orig_sr)].

    Band-limited (Kaiser-windowed sinc): frequencies below the lower Nyquist frequency are kept, those above it
    removed rather than aliased. The signal is taken as silent outside [0, T), so the first and last
    ZEROS / (2 x cut-off) input samples see an edge. Any pair of integer rates works; the work is
    O(T_out x taps) with about 2 x ZEROS / ROLLOFF x max(1, orig_sr / new_sr) taps per output sample.
    """
    for name, rate in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {rate!r}")
    if not wav.is_floating_point():
        raise InvalidArgumentError(f"resample expects a float waveform, got {wav.dtype}")
    if orig_sr == new_sr:
        return wav
    if wav.shape[-1] == 0:
        return wav.new_zeros(*wav.shape[:-1], 0)
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    base, taps, width = _sinc_taps(up, down)

    dtype = wav.dtype if wav.dtype in (torch.float32, torch.float64) else torch.float32
    x = wav.to(dtype)
    length = x.shape[-1]
    n_out = math.ceil(length * up / down)
    n_blocks = math.ceil(n_out / up)  # block m holds outputs m * up ... m * up + up - 1
    block_len = int(base[-1]) + 2 * width  # inputs one block reads, from m * down - width + 1
    left = width - 1
    right = max(0, (n_blocks - 1) * down + block_len - length - left)
    blocks = torch.nn.functional.pad(x, (left, right)).unfold(-1, block_len, down)[..., :n_blocks, :]  # [..., M, L]

    base, taps = base.to(x.device), taps.to(device=x.device, dtype=dtype)
    out = x.new_zeros(*x.shape[:-1], n_blocks, up)  # [..., M, up]
    for k in range(2 * width):
        out += blocks[..., base + k] * taps[:, k]
    return out.flatten(-2)[..., :n_out].to(wav.dtype)
