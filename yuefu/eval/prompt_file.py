"""Prompts of one's own for ``yuefu eval --prompt-file``: free text, each with what it asks for.

The corpus's held-out prompts come from the renderer's caption templates. A prompt file tests language the
templates never wrote. It is JSON Lines, one prompt per line (blank lines and lines starting with ``#`` are
skipped; a UTF-8 byte-order mark is allowed). A line, wrapped here::

    {"en": "a lonely solo cello, slow, around 66 bpm", "zh": "孤独的大提琴独奏，每分钟66拍", "instrument": "cello",
     "bpm": 66, "key": "D minor"}

- ``en`` / ``zh``: the prompt in each language the evaluation runs (``--languages``); at least one;
- ``instrument``: what should lead, judged by the instrument-family classifier: a lead of
  :data:`yuefu.eval.classifier.FAMILIES` (``"cello"``, ``"koto"``) or a family name (``"bowed strings"``), in any
  case;
- ``bpm`` (optional): the tempo the prompt asks for, 20-400; prompts without one are left out of the tempo error;
- ``key`` (optional): ``"D minor"``, ``"Eb major"``; prompts without one are left out of key and mode accuracy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yuefu.errors import InvalidArgumentError
from yuefu.eval import classifier as clf
from yuefu.eval.key import parse_key

FIELDS = ("en", "zh", "instrument", "bpm", "key")
BPM_RANGE = (20.0, 400.0)


@dataclass(frozen=True)
class FilePrompt:
    """One line of a prompt file: its texts by language and its targets (``bpm`` and ``key`` may be None)."""

    texts: dict[str, str]
    family: str
    bpm: float | None
    key: str | None
    instrument: str

    def target(self) -> dict[str, Any]:
        """What the clip is judged against, as :func:`yuefu.eval.run.adherence` takes it."""
        return {"family": self.family, "bpm": self.bpm, "key": self.key}


def _family(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{where}: 'instrument' must name a lead or a family (e.g. 'cello', "
                                   f"'bowed strings')")
    name = value.strip()
    families = {f.lower(): f for f in clf.FAMILIES}
    if name.lower() in families:
        return families[name.lower()]
    lead = name.replace(" ", "_").lower()  # "Pan Flute" -> "pan_flute"
    if lead in clf.FAMILY_OF:
        return clf.FAMILY_OF[lead]
    raise InvalidArgumentError(f"{where}: unknown instrument {name!r}; use a lead of the judge (e.g. "
                               f"{', '.join(sorted(clf.FAMILY_OF)[:4])}, ...) or a family: "
                               f"{', '.join(clf.FAMILIES)}")


def _prompt(data: Any, where: str, languages: tuple[str, ...]) -> FilePrompt:
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    texts = {}
    for lang in ("en", "zh"):
        text = data.get(lang)
        if text is None:
            continue
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError(f"{where}: {lang!r} must be a non-empty string")
        texts[lang] = text.strip()
    missing = [lang for lang in languages if lang not in texts]
    if missing:
        have = ",".join(texts) or "none"
        raise InvalidArgumentError(f"{where}: no {missing[0]!r} prompt (it has: {have}); give one, or evaluate "
                                   f"fewer languages with --languages")
    bpm = data.get("bpm")
    if bpm is not None:
        if isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not BPM_RANGE[0] <= bpm <= BPM_RANGE[1] \
                or not math.isfinite(bpm):  # the range first: isfinite overflows on a huge int
            raise InvalidArgumentError(f"{where}: 'bpm' must be a number from {BPM_RANGE[0]:g} to "
                                       f"{BPM_RANGE[1]:g}, got {bpm!r}")
        bpm = float(bpm)
    key = data.get("key")
    if key is not None:
        try:
            parse_key(key)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{where}: {e}") from None
    return FilePrompt(texts, _family(data.get("instrument"), where), bpm, key, str(data.get("instrument")).strip())


def read_prompt_file(path: str | os.PathLike, languages: tuple[str, ...] = ("en", "zh")) -> list[FilePrompt]:
    """The prompts of a JSON Lines prompt file; every prompt must have a text in each of ``languages``.

    Raises a one-line :class:`~yuefu.errors.InvalidArgumentError` naming the file and line of what is wrong.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidArgumentError(f"--prompt-file {p}: no such file")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"--prompt-file {p}: cannot read it as UTF-8 text ({e.__class__.__name__})") \
            from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{p.name} line {number}"
        try:
            data = json.loads(line)
        except ValueError as e:
            raise InvalidArgumentError(f"{where}: not JSON ({str(e).splitlines()[0]})") from None
        prompts.append(_prompt(data, where, languages))
    if len(prompts) < 2:
        raise InvalidArgumentError(f"--prompt-file {p}: {len(prompts)} prompt(s); the shuffled-prompt baseline "
                                   f"needs at least 2")
    return prompts


__all__ = ["FilePrompt", "read_prompt_file"]
