"""Tempo of a clip from librosa's beat tracker, and its error against the prompt's BPM.

librosa is an optional dependency (``pip install yuefu[eval]`` or ``pip install librosa``).

The reference is the sidecar's ``bpm``, the number the prompt states: beats per minute of the notated beat (a
quarter note, or a dotted quarter in 6/8 and 12/8). The renderer's drums and accents follow that beat: in compound
meter the kick/snare (or wood-block) pattern accents every dotted quarter (every 6 sixteenths), while the MIDI
tempo, ``render.quarter_bpm`` = 1.5 x bpm, marks no event in the audio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from yuefu.errors import InvalidArgumentError

HOP = 512  # samples between onset-strength frames (16 ms at 32 kHz)
OCTAVE_FACTORS = (1.0, 2.0, 0.5)


def require_librosa() -> Any:
    """The librosa module, or a one-line InvalidArgumentError saying how to install it."""
    try:
        import librosa
    except ImportError:
        raise InvalidArgumentError("tempo evaluation needs librosa: pip install librosa "
                                   "(or pip install 'yuefu[eval]')") from None
    return librosa


def estimate_tempo(wav: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """Waveform [T] or [C, T] -> tempo in BPM from ``librosa.beat.beat_track`` (hop 512 samples, librosa's
    defaults otherwise, at the audio's own rate); 0.0 when no beat is found."""
    librosa = require_librosa()
    x = torch.as_tensor(wav, dtype=torch.float32)
    y = x.reshape(-1, x.shape[-1]).mean(0).numpy()  # [T] mono
    if not np.any(y):
        return 0.0
    tempo, _ = librosa.beat.beat_track(y=y, sr=int(sample_rate), hop_length=HOP)
    value = float(np.atleast_1d(tempo)[0])
    return value if np.isfinite(value) else 0.0


def tempo_error(estimate: float, reference: float) -> float:
    """|estimate - reference| in BPM."""
    return abs(float(estimate) - float(reference))


def octave_tempo_error(estimate: float, reference: float) -> float:
    """The smallest |f x estimate - reference| over f in (1, 2, 1/2): octave (double/half-time) errors forgiven."""
    return min(abs(f * float(estimate) - float(reference)) for f in OCTAVE_FACTORS)


__all__ = ["estimate_tempo", "octave_tempo_error", "require_librosa", "tempo_error"]
