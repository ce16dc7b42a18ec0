"""LoRA adapters for fine-tuning: low-rank updates W + (alpha / r) * B @ A on the LM's attention and FFN weights.

Adapters are torch parametrizations of the ``weight`` of the target ``nn.Linear`` modules, so every use of that weight
sees the update (also code that reads ``.weight`` directly, e.g. the cached cross-attention keys) and the LM's own code
needs no LoRA branch. B starts at zero: a freshly adapted model computes exactly what the base model does. Adapters are
saved on their own (``adapter_config.json`` + ``adapters.safetensors``, a few MB) and can be merged into the weights,
after which the model is a plain LMModel again.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from yuefu.errors import CheckpointError
from yuefu.train.config import LORA_TARGETS, LoRAConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapters.safetensors"
_PARAM = ".parametrizations.weight."


class LoRA(nn.Module):
    """The parametrization W -> W + scale * B @ A, with A [rank, in] and B [out, rank]."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float,
                 device: torch.device | None = None):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and PEFT) initialise A
        self.scale = alpha / rank

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.lora_B @ self.lora_A).to(weight.dtype) * self.scale


def target_modules(lm: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The LM's Linear modules named ``layers.{i}.{target}``."""
    found = {}
    for name, module in lm.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("layers.") and name.split(".", 2)[-1] in targets:
            found[name] = module
    return found


def apply_lora(lm: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Freeze ``lm`` and add trainable adapters on ``cfg.targets``; returns the adapted module names."""
    unknown = [t for t in cfg.targets if t not in LORA_TARGETS]
    if unknown:
        raise ValueError(f"unknown LoRA targets {unknown} (known: {LORA_TARGETS})")
    lm.requires_grad_(False)
    modules = target_modules(lm, cfg.targets)
    for module in modules.values():
        w = module.weight
        parametrize.register_parametrization(
            module, "weight", LoRA(w.shape[0], w.shape[1], cfg.rank, cfg.alpha, device=w.device))
        module.parametrizations.weight.original.requires_grad_(False)
    return sorted(modules)


def lora_state_dict(lm: nn.Module) -> dict[str, Tensor]:
    """{``{module}.lora_A``, ``{module}.lora_B``} of every adapted module."""
    out = {}
    for name, module in lm.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            lora = module.parametrizations.weight[0]
            if isinstance(lora, LoRA):
                out[f"{name}.lora_A"] = lora.lora_A.detach().cpu().clone()
                out[f"{name}.lora_B"] = lora.lora_B.detach().cpu().clone()
    return out


def load_lora_state_dict(lm: nn.Module, sd: dict[str, Tensor]) -> None:
    own = {}
    for name, module in lm.named_modules():
        if parametrize.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], LoRA):
            own[name] = module.parametrizations.weight[0]
    expected = {f"{n}.lora_{x}" for n in own for x in "AB"}
    if set(sd) != expected:
        missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
        raise CheckpointError(f"adapters do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, lora in own.items():
            lora.lora_A.copy_(sd[f"{name}.lora_A"])
            lora.lora_B.copy_(sd[f"{name}.lora_B"])


def merge_lora(lm: nn.Module) -> nn.Module:
    """Fold every adapter into its weight, in place; the result has plain LMModel parameters."""
    for module in lm.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return lm


def merged_state_dict(sd: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """A state dict of an adapted LM with the adapters folded in (``X.weight = W + scale * B @ A``), leaving the
    model itself untouched; a state dict without adapters is returned as is."""
    out = {}
    for key, value in sd.items():
        if _PARAM not in key:
            out[key] = value
        elif key.endswith(_PARAM + "original"):
            base = key[: -len(_PARAM + "original")]
            a, b = sd[f"{base}{_PARAM}0.lora_A"], sd[f"{base}{_PARAM}0.lora_B"]
            out[f"{base}.weight"] = (value.float() + scale * (b.float() @ a.float())).to(value.dtype)
    return out


def save_adapters(folder: str | os.PathLike, lm: nn.Module, cfg: LoRAConfig, base_model: str | None) -> Path:
    """Write the adapters alone: ``adapter_config.json`` + ``adapters.safetensors``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "yuefu-lora", "rank": cfg.rank, "alpha": cfg.alpha, "targets": list(cfg.targets),
            "base_model": base_model}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))
    save_file({k: v.contiguous() for k, v in lora_state_dict(lm).items()}, str(folder / ADAPTER_WEIGHTS))
    return folder


def read_adapters(folder: str | os.PathLike) -> tuple[LoRAConfig, dict[str, Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / ADAPTER_CONFIG).read_text())
        cfg = LoRAConfig(use=True, rank=int(meta["rank"]), alpha=float(meta["alpha"]), targets=list(meta["targets"]))
        sd = load_file(str(folder / ADAPTER_WEIGHTS))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder}: not a LoRA adapter folder ({e.__class__.__name__}: {e})") from None
    return cfg, sd, meta


def load_adapters(lm: nn.Module, folder: str | os.PathLike) -> LoRAConfig:
    """Add the adapters saved in ``folder`` to ``lm`` (which must be their base architecture)."""
    cfg, sd, _ = read_adapters(folder)
    apply_lora(lm, cfg)
    load_lora_state_dict(lm, sd)
    return cfg


def merge_adapters(base: str, adapters: str | os.PathLike, out: str | os.PathLike, fmt: str = "yuefu") -> Path:
    """Load ``base`` (any checkpoint MusicGen loads), merge the adapters into its LM, save to ``out``."""
    from yuefu.musicgen import MusicGen

    model = MusicGen.from_pretrained(base, device="cpu")
    load_adapters(model.lm, adapters)
    merge_lora(model.lm)
    return model.save_pretrained(out, format=fmt)
