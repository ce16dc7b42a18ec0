"""yuefu's own format: ``config.json`` (``{"format": "yuefu", "config": ...}``) + ``model.safetensors`` with keys
``lm.*``, ``codec.*``, ``text.output_proj.*``, ``melody.output_proj.*`` (melody models), ``text.tempo_proj.*``
(tempo models) and, when the text encoder ships inside, ``text.encoder.*``; tokenizer files beside them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from yuefu.checkpoints.bundle import Checkpoint, StateDict, split_prefix
from yuefu.checkpoints.safetensors_read import materialize
from yuefu.checkpoints.transformers_format import TOKENIZER_FILES, read_weights
from yuefu.config import MusicGenConfig
from yuefu.errors import CheckpointError

FORMAT = "yuefu"
FORMAT_VERSION = 1


def is_yuefu(cfg: dict[str, Any]) -> bool:
    return cfg.get("format") == FORMAT


def read(folder: str | os.PathLike, lazy: bool = False) -> Checkpoint:
    """The checkpoint in ``folder``; with ``lazy`` the LM's tensors stay :class:`LazyTensor` placeholders."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        config = MusicGenConfig.from_dict(meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: not a valid yuefu config ({e})") from None
    name = config.text.name
    if name and not Path(name).is_absolute() and (folder / name).is_dir():
        # a text encoder shipped inside the model folder, named absolutely: the model loads from any working folder,
        # and what is written from it copies the encoder in (checkpoints.with_local_encoder_inside)
        config.text.name = str((folder / name).resolve())
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise CheckpointError(f"{folder}: written by a newer yuefu (format {meta['format_version']})")
    sd = read_weights(folder, lazy)
    sd = {k: v if k.startswith("lm.") else materialize(v) for k, v in sd.items()}
    has_tok = any((folder / f).exists() for f in TOKENIZER_FILES)
    return Checkpoint(config=config, lm=split_prefix(sd, "lm."), text_proj=split_prefix(sd, "text.output_proj."),
                      codec=split_prefix(sd, "codec.") or None, text_encoder=split_prefix(sd, "text.encoder.") or None,
                      tokenizer_dir=str(folder) if has_tok else None, source_format="yuefu",
                      melody_proj=split_prefix(sd, "melody.output_proj.") or None,
                      tempo_proj=split_prefix(sd, "text.tempo_proj.") or None)


def write(ckpt: Checkpoint, folder: Path, extra_meta: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    if ckpt.codec is None:
        raise CheckpointError("no codec weights to write")
    sd: StateDict = {}
    for prefix, part in (("lm.", ckpt.lm), ("codec.", ckpt.codec), ("text.output_proj.", ckpt.text_proj),
                         ("text.encoder.", ckpt.text_encoder or {}), ("melody.output_proj.", ckpt.melody_proj or {}),
                         ("text.tempo_proj.", ckpt.tempo_proj or {})):
        sd.update({prefix + k: v.contiguous() for k, v in part.items()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **(extra_meta or {}), "config": ckpt.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": FORMAT})
