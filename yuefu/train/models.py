"""Building what the trainers train and exporting what they produce.

- Codec folders (``yuefu train codec`` output): ``config.json`` (``{"format": "yuefu-codec", "config": ...}``) and
  ``model.safetensors`` with :class:`CompressionModel` keys. :func:`load_codec` also takes any MusicGen checkpoint
  (its codec) and transformers' EnCodec folders.
- Text conditioners are built by :func:`build_text_conditioner` from a :class:`TextConfig`: ``kind: t5`` (a local
  folder or hub id) or ``kind: sentence`` (any frozen sentence encoder with the TextConditioner interface).
- :func:`musicgen_checkpoint` assembles a yuefu :class:`Checkpoint` from state dicts, so a trained LM is saved in
  the format ``MusicGen.from_pretrained`` reads.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yuefu.checkpoints import Checkpoint
from yuefu.codec import CompressionModel
from yuefu.conditioners.text import T5Conditioner, TextConditioner
from yuefu.config import CodecConfig, MusicGenConfig, TextConfig
from yuefu.errors import CheckpointError, InvalidArgumentError, ModelNotFoundError

CODEC_FORMAT = "yuefu-codec"


def save_codec(model: CompressionModel, folder: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a codec folder (``state`` overrides the model's own weights, e.g. EMA weights)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = state if state is not None else model.state_dict()
    meta = {"format": CODEC_FORMAT, "format_version": 1, "config": _asdict(model.config)}
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    return folder


def _asdict(cfg: CodecConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)


def load_codec(source: str | os.PathLike) -> CompressionModel:
    """A codec from a yuefu codec folder, a transformers EnCodec folder, or any MusicGen checkpoint / hub id."""
    from safetensors.torch import load_file

    path = Path(source).expanduser()
    meta = _read_json(path / "config.json") if path.is_dir() else None
    if meta is not None and meta.get("format") == CODEC_FORMAT:
        try:
            cfg = CodecConfig(**meta["config"])
            model = CompressionModel(cfg)
            model.load_state_dict(load_file(str(path / "model.safetensors")))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"codec {path}: {str(e).splitlines()[0][:200]}") from None
        return model
    if meta is not None and meta.get("model_type") == "encodec":
        from yuefu.checkpoints.codec_keys import codec_config_from_transformers, codec_state_from_transformers
        from yuefu.checkpoints.transformers_format import read_weights

        model = CompressionModel(codec_config_from_transformers(meta))
        model.load_state_dict(codec_state_from_transformers(read_weights(path)))
        return model
    from yuefu.musicgen import MusicGen

    try:
        return MusicGen.from_pretrained(str(source), device="cpu").compression_model
    except ModelNotFoundError:
        raise ModelNotFoundError(f"codec {source}: neither a codec folder nor a loadable MusicGen checkpoint"
                                 ) from None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build_text_conditioner(text: TextConfig, dim: int) -> TextConditioner:
    """A frozen text encoder with a fresh projection to ``dim``; ``text.kind`` picks the encoder family.

    ``t5``: ``text.name`` is a local folder or a hub id (e.g. ``t5-base``); ``sentence``: a frozen sentence encoder
    (``yuefu.conditioners.sentence``, all-MiniLM-L6-v2 by default). Both have the TextConditioner interface
    (``cond, mask = conditioner(texts)``).
    """
    if text.kind not in ("t5", "sentence"):
        raise InvalidArgumentError(f"model.text.kind must be t5 or sentence, got {text.kind!r}")
    from yuefu.musicgen import _build_conditioner  # the loader's own construction: training and loading agree

    cfg = MusicGenConfig(text=TextConfig(kind=text.kind, name=text.name, encoder_dim=text.encoder_dim))
    cfg.lm.dim = dim
    return _build_conditioner(Checkpoint(config=cfg, lm={}, text_proj={}), None)


def text_encoder_parts(conditioner: TextConditioner, cfg: MusicGenConfig) -> tuple[dict | None, str | None]:
    """The encoder weights and a folder with the tokenizer files to ship inside a checkpoint (as
    ``MusicGen.to_checkpoint`` does); the caller removes the folder."""
    encoder_sd = None
    if isinstance(conditioner, T5Conditioner):
        encoder_sd = {k: v.detach().cpu() for k, v in conditioner.encoder.state_dict().items()}
        if "shared.weight" in encoder_sd:
            encoder_sd.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight; re-tied on load
        cfg.text.encoder_config = conditioner.encoder.config.to_dict()
    tok_dir = None
    tokenizer = getattr(conditioner, "tokenizer", None)
    if tokenizer is not None:
        tok_dir = tempfile.mkdtemp(prefix="yuefu-tok-")
        tokenizer.save_pretrained(tok_dir)
    return encoder_sd, tok_dir


def write_musicgen(folder: Path, cfg: MusicGenConfig, lm_sd: dict[str, torch.Tensor],
                   text_proj_sd: dict[str, torch.Tensor], codec: CompressionModel,
                   conditioner: TextConditioner, tempo_proj_sd: dict[str, torch.Tensor] | None = None) -> Path:
    """Save a MusicGen checkpoint (yuefu format) from the trained state dicts."""
    import shutil

    from yuefu.checkpoints import with_local_encoder_inside, yuefu_format
    from yuefu.checkpoints.transformers_format import TOKENIZER_FILES

    encoder_sd, tok_dir = text_encoder_parts(conditioner, cfg)
    try:
        ckpt = Checkpoint(config=cfg, lm={k: v.detach().cpu() for k, v in lm_sd.items()},
                          text_proj={k: v.detach().cpu() for k, v in text_proj_sd.items()},
                          codec={k: v.detach().cpu() for k, v in codec.state_dict().items()},
                          text_encoder=encoder_sd, tokenizer_dir=tok_dir, source_format="yuefu",
                          tempo_proj=None if tempo_proj_sd is None else {
                              k: v.detach().cpu() for k, v in tempo_proj_sd.items()})
        folder.mkdir(parents=True, exist_ok=True)
        # a sentence encoder from a local folder (a packaged model's) is copied in: the folder loads anywhere
        yuefu_format.write(with_local_encoder_inside(ckpt, folder), folder)
        for name in TOKENIZER_FILES:
            if tok_dir and (Path(tok_dir) / name).exists():
                shutil.copy2(Path(tok_dir) / name, folder / name)
    finally:
        if tok_dir:
            shutil.rmtree(tok_dir, ignore_errors=True)
    return folder


def count_parameters(module: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
