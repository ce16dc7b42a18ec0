"""A rendered corpus (``yuefu data render``) as evaluation data: clips, their sidecars and their targets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yuefu.errors import AudioFileError, InvalidArgumentError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class Clip:
    """One rendered clip: its audio file and what its sidecar says."""

    path: Path
    sidecar: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def prompt_en(self) -> str:
        return str(self.sidecar["description"])

    @property
    def prompt_zh(self) -> str:
        return str(self.sidecar.get("description_zh") or self.sidecar["description"])

    @property
    def lead(self) -> str:
        """The melody instrument's key (``render.lead``, e.g. ``"square_lead"``)."""
        return str(self.sidecar["render"]["lead"])

    @property
    def bpm(self) -> float:
        """Beats per minute of the notated beat, as the prompt states it."""
        return float(self.sidecar["bpm"])

    @property
    def key(self) -> str:
        """``"Eb major"``."""
        return str(self.sidecar["key"])


_REQUIRED = ("description", "bpm", "key", "render")


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InvalidArgumentError(f"{path}: not a readable JSON sidecar ({e.__class__.__name__})") from None
    missing = [k for k in _REQUIRED if k not in data] if isinstance(data, dict) else list(_REQUIRED)
    if missing or not isinstance(data.get("render"), dict) or "lead" not in data["render"]:
        what = ", ".join(missing) or "render.lead"
        raise InvalidArgumentError(f"{path}: not a yuefu render sidecar (missing {what})")
    return data


def load_split(corpus_dir: str | Path, split: str) -> list[Clip]:
    """The clips of ``corpus_dir/split`` (audio files with a JSON sidecar beside them), sorted by name."""
    folder = Path(corpus_dir).expanduser() / split
    if not folder.is_dir():
        raise InvalidArgumentError(f"{folder}: no such folder; --corpus must be a folder that `yuefu data render` "
                                   f"wrote (with train/ and valid/)")
    clips = []
    for audio in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        sidecar = audio.with_suffix(".json")
        if sidecar.is_file():
            clips.append(Clip(audio, _read_sidecar(sidecar)))
    if not clips:
        raise InvalidArgumentError(f"{folder}: no audio files with JSON sidecars in it")
    return clips


def read_clip(clip: Clip, sample_rate: int, seconds: float | None = None) -> torch.Tensor:
    """A clip's audio as mono float32 [T] at ``sample_rate``, cut to its first ``seconds`` if given."""
    from yuefu import audio

    wav, _ = audio.read(clip.path, sample_rate=sample_rate, mono=True)  # [1, T]
    if not bool(torch.isfinite(wav).all()):
        raise AudioFileError(f"{clip.path}: contains NaN or infinite samples")
    if seconds is not None:
        wav = wav[:, : int(round(seconds * sample_rate))]
    return wav[0]


__all__ = ["Clip", "load_split", "read_clip"]
