"""Per-file metadata ("sidecars") and the text descriptions the LM is conditioned on.

A sidecar is a JSON file beside the audio with the same stem (``song.flac`` -> ``song.json``) holding the fields of
audiocraft's ``MusicInfo``: description, genre, bpm, key, instruments, moods (also accepted: ``instrument``,
``mood``, ``keywords``). During LM training, :func:`training_text` turns them into the text of one example, with
audiocraft's augmentations (merge the tags into the description, drop the description or some tags), word dropout
and condition dropout (the null text, for classifier-free guidance), all drawn from the generator it is given.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

META_FIELDS = ("description", "genre", "bpm", "key", "instruments", "moods", "captions")
_ALIASES = {"instrument": "instruments", "mood": "moods", "keywords": "moods"}
_TAG_FIELDS = ("genre", "bpm", "key", "instruments", "moods")


class SidecarError(ValueError):
    """A sidecar that exists but cannot be used (invalid JSON, wrong field types)."""


@dataclass
class MusicInfo:
    """The metadata of one audio file; every field is optional."""

    description: str | None = None
    genre: str | None = None
    bpm: float | None = None
    key: str | None = None
    instruments: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    # Other phrasings of the description (e.g. the renderer's English and Chinese captions); training draws one of
    # them or the description, so the LM learns language rather than one template.
    captions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that are set (what the manifest stores)."""
        out: dict[str, Any] = {}
        for name in META_FIELDS:
            value = getattr(self, name)
            if value not in (None, "", []):
                out[name] = value
        return out

    def tags(self) -> list[str]:
        """``"genre: rock"``-style phrases for every tag that is set, in a fixed order."""
        out = []
        for name in _TAG_FIELDS:
            value = getattr(self, name)
            if value in (None, "", []):
                continue
            if isinstance(value, list):
                value = ", ".join(value)
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            out.append(f"{name}: {value}")
        return out


def sidecar_path(audio_path: Path) -> Path:
    return audio_path.with_suffix(".json")


def parse_info(data: dict[str, Any], where: str = "metadata") -> MusicInfo:
    """Normalise a metadata dict (sidecar or manifest line): lists may be given as comma-separated strings."""
    if not isinstance(data, dict):
        raise SidecarError(f"{where}: expected a JSON object, got {type(data).__name__}")
    info = MusicInfo()
    for raw_name, value in data.items():
        name = _ALIASES.get(raw_name, raw_name)
        if name not in META_FIELDS or value is None:
            continue  # other fields (title, artist, ...) are allowed and ignored
        if name == "captions":
            if isinstance(value, dict):  # {"en": [...], "zh": [...]}: every language's phrasings
                value = [c for texts in value.values() for c in (texts if isinstance(texts, list) else [texts])]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SidecarError(f"{where}: captions must be a list of strings, or a mapping of language to lists")
            info.captions.extend(v.strip() for v in value if v.strip())
        elif name in ("instruments", "moods"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, (str, int, float)) for v in items):
                raise SidecarError(f"{where}: {raw_name} must be a list of strings or a comma-separated string")
            getattr(info, name).extend(s for s in (str(v).strip() for v in items) if s)
        elif name == "bpm":
            try:
                info.bpm = float(value)
            except (TypeError, ValueError):
                raise SidecarError(f"{where}: bpm must be a number, got {value!r}") from None
        else:
            if not isinstance(value, (str, int, float)):
                raise SidecarError(f"{where}: {raw_name} must be a string, got {type(value).__name__}")
            setattr(info, name, str(value).strip() or None)
    return info


def read_sidecar(audio_path: Path) -> MusicInfo:
    """The sidecar of ``audio_path`` (an empty MusicInfo if it has none); SidecarError if it is unusable."""
    path = sidecar_path(audio_path)
    if not path.exists():
        return MusicInfo()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SidecarError(f"sidecar {path.name}: not valid JSON ({str(e).splitlines()[0]})") from None
    return parse_info(data, where=f"sidecar {path.name}")


@dataclass
class TextAugment:
    """How training texts are drawn from metadata (audiocraft's defaults for MusicGen)."""

    merge_text_p: float = 0.25  # probability of appending the tags to the description
    drop_desc_p: float = 0.5  # when merging: probability of dropping the description itself
    drop_other_p: float = 0.5  # when merging: probability of dropping each tag
    word_dropout: float = 0.3  # probability of dropping each word (audiocraft's T5 conditioner word_dropout)
    cond_dropout: float = 0.2  # probability of the null text (classifier-free guidance training)
    caption_p: float = 0.5  # probability of one of the other captions (when there are some) instead of the description


def _prompt_text(text: str) -> str:
    """A training text as the text encoder will see it at generation time: Chinese music vocabulary translated by
    the same normaliser that ``MusicGen.prepare_prompts`` applies, so Chinese captions teach what Chinese prompts
    will look like."""
    from yuefu.conditioners.normalize import needs_normalization, normalize_prompt

    if needs_normalization(text):
        return normalize_prompt(text).text_used or text
    return text


def training_text(info: MusicInfo, rng: random.Random, aug: TextAugment) -> str | None:
    """One example's text; None is the null condition. All randomness comes from ``rng``."""
    if rng.random() < aug.cond_dropout:
        return None
    description = info.description or ""
    if info.captions and rng.random() < aug.caption_p:
        description = _prompt_text(rng.choice(info.captions))
    tags = info.tags()
    if tags and rng.random() < aug.merge_text_p:
        rng.shuffle(tags)
        kept = [t for t in tags if rng.random() >= aug.drop_other_p]
        if description and rng.random() < aug.drop_desc_p and kept:
            description = ""
        description = ". ".join(p for p in [description, *kept] if p)
    elif not description:
        description = ". ".join(tags)  # no description at all: the tags are the text
    if aug.word_dropout > 0 and description:
        words = [w for w in description.split(" ") if rng.random() >= aug.word_dropout]
        description = " ".join(words)
    return description or None


def plain_text(info: MusicInfo) -> str | None:
    """The text of an example without augmentation (validation, samples)."""
    return info.description or (". ".join(info.tags()) or None)
