"""Checkpoint formats: adapters at the edge that map foreign files onto a :class:`Checkpoint`."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path

from yuefu.atomic import atomic_folder
from yuefu.checkpoints import audiocraft_format, transformers_format, yuefu_format
from yuefu.checkpoints.bundle import Checkpoint
from yuefu.errors import CheckpointError

FORMATS = ("yuefu", "transformers", "audiocraft")


def detect_format(folder: str | os.PathLike) -> str:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: not valid JSON ({e.__class__.__name__})") from None
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{cfg_path}: expected a JSON object")
        if yuefu_format.is_yuefu(cfg):
            return "yuefu"
        return "transformers"
    if (folder / audiocraft_format.LM_FILE).exists():
        return "audiocraft"
    raise CheckpointError(f"{folder}: no checkpoint here (expected config.json + model.safetensors/"
                          "pytorch_model.bin, or state_dict.bin + compression_state_dict.bin)")


def read_checkpoint(folder: str | os.PathLike, lazy: bool = False) -> Checkpoint:
    """The checkpoint in ``folder``, in whichever format. ``lazy``: the LM's tensors may be
    :class:`~yuefu.checkpoints.safetensors_read.LazyTensor` placeholders, read when loaded (safetensors files)."""
    fmt = detect_format(folder)
    if fmt == "audiocraft":
        return audiocraft_format.read(folder)
    return {"yuefu": yuefu_format.read, "transformers": transformers_format.read}[fmt](folder, lazy=lazy)


ENCODER_DIR = "text_encoder"  # a sentence encoder inside a model folder (yuefu_format.read resolves it there)
_ENCODER_SUFFIXES = (".json", ".txt", ".model", ".safetensors")  # config, tokenizer, weights; never pickles


def with_local_encoder_inside(ckpt: Checkpoint, folder: Path) -> Checkpoint:
    """A sentence encoder that was loaded from a local folder (a built-in model's copy, yuefu's cache) is copied into
    ``folder`` and named relative to it, so that the written model still loads once that path is gone (another
    machine, another install). A hub or package name (MiniLM's) stays a name."""
    name = ckpt.config.text.name
    if ckpt.config.text.kind != "sentence" or not name or not Path(name).is_absolute() or not Path(name).is_dir():
        return ckpt
    target = folder / ENCODER_DIR
    target.mkdir()
    for src in sorted(Path(name).iterdir()):
        if src.is_file() and src.suffix in _ENCODER_SUFFIXES:
            shutil.copy2(src, target / src.name)
    ckpt = dataclasses.replace(ckpt, config=copy.deepcopy(ckpt.config))
    ckpt.config.text.name = ENCODER_DIR
    return ckpt


def write_checkpoint(ckpt: Checkpoint, folder: str | os.PathLike, fmt: str = "yuefu") -> Path:
    """Write ``ckpt`` in ``fmt`` atomically: into a temporary sibling folder, then renamed into place."""
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CheckpointError(f"{folder}: exists and is not an empty folder")
    if fmt != "yuefu" and ckpt.config.text.tempo:
        # transformers' and audiocraft's MusicGen have no tempo input: the written model is this one without its
        # tempo token and beat clock, which generates the same for prompts that state no tempo
        warnings.warn(f"the {fmt} format has no tempo condition: the model is written without it", stacklevel=3)
        ckpt = dataclasses.replace(ckpt, config=copy.deepcopy(ckpt.config), tempo_proj=None)
        ckpt.config.text.tempo = ckpt.config.text.beat_clock = False
    try:
        with atomic_folder(folder) as tmp:
            if fmt == "yuefu":
                yuefu_format.write(with_local_encoder_inside(ckpt, tmp), tmp)
            elif fmt == "transformers":
                transformers_format.write(ckpt, tmp)
            else:
                audiocraft_format.write(ckpt, tmp)
            if ckpt.tokenizer_dir and fmt != "audiocraft":
                for name in transformers_format.TOKENIZER_FILES:
                    src = Path(ckpt.tokenizer_dir) / name
                    if src.exists():
                        shutil.copy2(src, tmp / name)
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot write here ({e.strerror or e})") from None
    return folder


__all__ = ["Checkpoint", "FORMATS", "detect_format", "read_checkpoint", "with_local_encoder_inside", "write_checkpoint"]
