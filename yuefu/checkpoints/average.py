"""Weight averaging of fine-tunes of one model (``yuefu train average``): a "model soup".

Two runs fine-tuned from the same weights lie in one basin, so a weighted mean of their parameters is a model too,
which may keep what each run learned (measured on yuefu-mini, the even mean of the shipped weights and a longer
beat-clock stage kept that stage's tempo, not the shipped instrument accuracy; README). Only models that can be
averaged are: the same configuration, the same tensors (names and shapes), the same codec encoder and codebooks (an
LM's tokens must keep their sounds), and the same frozen text encoder.

    average_models(["runs/a/model", "yuefu-mini"], "runs/soup", weights=[0.5, 0.5])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from yuefu.checkpoints.bundle import Checkpoint, StateDict
from yuefu.errors import CheckpointError, InvalidArgumentError

_PARTS = ("lm", "text_proj", "melody_proj", "tempo_proj")  # trained by the LM stage: averaged
_FP16_RTOL, _FP16_ATOL = 2e-3, 1e-5  # "equal" for tensors one of which may have been stored in float16


def _config_key(ckpt: Checkpoint) -> dict:
    """The configuration with what does not change the network left out (its name, where its encoder lies)."""
    cfg = dataclasses.asdict(ckpt.config)
    cfg.pop("name", None)
    cfg["text"].pop("name", None)
    return cfg


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=_FP16_RTOL, atol=_FP16_ATOL)


def _encoder_weights(ckpt: Checkpoint) -> StateDict:
    from safetensors.torch import load_file

    from yuefu.conditioners.sentence import resolve_sentence_encoder

    if ckpt.config.text.kind != "sentence":
        return dict(ckpt.text_encoder or {})
    folder = resolve_sentence_encoder(ckpt.config.text.name)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors weights for the text encoder")
    return load_file(str(files[0]))


def _check_same_frozen(name: str, first: StateDict, other: StateDict, src: str, what: str) -> None:
    if first.keys() != other.keys():
        raise InvalidArgumentError(f"{src}: its {what} has other tensors than the first model's; not a fine-tune of it")
    for key, t in first.items():
        if t.is_floating_point() and not _same(t, other[key]):
            raise InvalidArgumentError(f"{src}: its {what} differs from the first model's ({name}{key}); only "
                                       "fine-tunes that kept it frozen can be averaged")


def average_models(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
                   weights: Sequence[float] | None = None) -> Path:
    """Write the weighted mean of models ``sources`` (folders or built-in names) to the new folder ``out`` (yuefu
    format, float32). ``weights`` (default equal) are normalised to sum to 1. The LM, its text / melody / tempo
    projections are averaged; the codec and text encoder, which LM fine-tuning keeps frozen, must agree to float16
    precision and are taken from the first model."""
    from yuefu.checkpoints import read_checkpoint, write_checkpoint
    from yuefu.checkpoints.hub import resolve_model

    if len(sources) < 2:
        raise InvalidArgumentError("averaging needs at least two models")
    weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sources):
        raise InvalidArgumentError(f"{len(weights)} weights for {len(sources)} models")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InvalidArgumentError("weights must be non-negative and not all zero")
    total = sum(weights)
    weights = [w / total for w in weights]
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidArgumentError(f"{out}: exists and is not an empty folder")

    names = [str(s) for s in sources]
    ckpts = [read_checkpoint(resolve_model(name)) for name in names]  # folders, built-in names (or hub ids)
    first = ckpts[0]
    if first.codec is None:
        raise CheckpointError(f"{names[0]}: the codec weights are not inside; average models that hold them")
    encoder = _encoder_weights(first)
    for name, ckpt in zip(names[1:], ckpts[1:]):
        if _config_key(ckpt) != _config_key(first):
            raise InvalidArgumentError(f"{name}: its configuration differs from {names[0]}'s; only fine-tunes of one "
                                       "model can be averaged")
        if ckpt.codec is None:
            raise CheckpointError(f"{name}: the codec weights are not inside; average models that hold them")
        _check_same_frozen("codec.", first.codec, ckpt.codec, name, "codec")
        _check_same_frozen("text.encoder.", encoder, _encoder_weights(ckpt), name, "text encoder")

    merged: dict[str, StateDict | None] = {}
    for part in _PARTS:
        dicts = [getattr(c, part) for c in ckpts]
        if dicts[0] is None:
            merged[part] = None
            continue
        if any(d is None or d.keys() != dicts[0].keys() for d in dicts):
            raise InvalidArgumentError(f"the models' {part} tensors differ; not fine-tunes of one model")
        mean: StateDict = {}
        for key, t in dicts[0].items():
            others = [d[key] for d in dicts]  # type: ignore[index]
            if any(o.shape != t.shape for o in others):
                raise InvalidArgumentError(f"the models' {part}.{key} differ in shape or presence; not fine-tunes of "
                                           "one model")
            if not t.is_floating_point():
                mean[key] = t
                continue
            # float64 accumulation: the mean of float16-stored and float32 tensors, rounded once
            mean[key] = sum(w * o.double() for w, o in zip(weights, others)).to(torch.float32)
        merged[part] = mean
    result = dataclasses.replace(first, lm=merged["lm"], text_proj=merged["text_proj"],
                                 melody_proj=merged["melody_proj"], tempo_proj=merged["tempo_proj"],
                                 codec={k: v.float() if v.is_floating_point() else v for k, v in first.codec.items()})
    return write_checkpoint(result, out, "yuefu")


__all__ = ["average_models"]
