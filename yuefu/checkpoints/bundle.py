"""The in-memory form every checkpoint format reads into and writes from.

Formats (audiocraft, transformers, yuefu) are adapters: each maps its files and key names onto a
:class:`Checkpoint` in our module names; the models are built from that alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from yuefu.config import MusicGenConfig
from yuefu.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


@dataclass
class Checkpoint:
    config: MusicGenConfig
    lm: StateDict  # LMModel keys
    text_proj: StateDict  # output_proj.{weight,bias}: text encoder dim -> LM dim
    codec: StateDict | None = None  # CompressionModel keys; None when the checkpoint only names a codec
    codec_ref: str | None = None  # e.g. "facebook/encodec_32khz" when ``codec`` is None
    text_encoder: StateDict | None = None  # T5EncoderModel keys when the encoder ships inside the checkpoint
    tokenizer_dir: str | None = None  # folder holding the tokenizer files, if the checkpoint has them
    source_format: str = ""
    extra: dict[str, Any] | None = None
    melody_proj: StateDict | None = None  # {weight, bias}: chroma bins -> LM dim (melody models only)
    tempo_proj: StateDict | None = None  # TempoEmbedding keys (models with config.text.tempo only)


Rule = tuple[str, str]  # (regex over the full key, replacement)


def rename_keys(sd: StateDict, rules: list[Rule], what: str, drop: tuple[str, ...] = ()) -> StateDict:
    """Rename every key by the first matching rule; a key no rule matches is an error (no silent partial load)."""
    compiled = [(re.compile(p + r"\Z"), r) for p, r in rules]
    dropped = [re.compile(p + r"\Z") for p in drop]
    out: StateDict = {}
    unknown = []
    for key, value in sd.items():
        if any(d.match(key) for d in dropped):
            continue
        for pat, repl in compiled:
            if pat.match(key):
                out[pat.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{what}: {len(unknown)} unexpected keys, e.g. {unknown[:3]}")
    return out


def split_prefix(sd: StateDict, prefix: str) -> StateDict:
    """Entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def check_keys(expected: set[str], got: set[str], what: str, optional: set[str] = frozenset()) -> None:
    missing = sorted(expected - got - set(optional))
    extra = sorted(got - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if extra:
            parts.append(f"unexpected {len(extra)} (e.g. {extra[:3]})")
        raise CheckpointError(f"{what} does not match the architecture: " + "; ".join(parts))
