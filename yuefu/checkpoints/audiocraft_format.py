"""audiocraft's exported format: ``state_dict.bin`` (LM) + ``compression_state_dict.bin`` (codec).

Each file is a torch pickle ``{'best_state': state_dict, 'xp.cfg': <YAML string>, 'version', 'exported'}``, read
without executing code. The compression file may instead only name a codec (``{'pretrained':
'facebook/encodec_32khz'}``), which the loader then fetches in transformers' EnCodec format. The T5 encoder is not
inside: the config names it (``t5-base``).

Melody models list ``fuser.prepend: [self_wav, description]`` (chroma frames first, then text, then audio) and
store ``condition_provider.conditioners.self_wav.output_proj.*`` (Linear(n_chroma, dim)) beside a fixed STFT
window buffer (``...self_wav.chroma.spec.window``), which is dropped: it is always a periodic Hann window.
"""

from __future__ import annotations

import copy
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from yuefu.checkpoints.bundle import Checkpoint, StateDict, rename_keys
from yuefu.checkpoints.codec_keys import (
    codec_config_from_audiocraft,
    codec_config_to_audiocraft,
    codec_state_from_audiocraft,
    codec_state_to_audiocraft,
)
from yuefu.checkpoints.safe_load import load_torch_pickle
from yuefu.config import LMConfig, MusicGenConfig, TextConfig
from yuefu.errors import CheckpointError

LM_FILE = "state_dict.bin"
CODEC_FILE = "compression_state_dict.bin"
TEXT_PROJ = "condition_provider.conditioners.description.output_proj."
MELODY_PROJ = "condition_provider.conditioners.self_wav.output_proj."
_MELODY_BUFFERS = (r"condition_provider\.conditioners\.self_wav\.chroma\..*",)  # STFT window: recomputed

_L = r"transformer\.layers\.(\d+)\."
_LM_RULES = [
    (r"emb\.(\d+)\.weight", r"emb.\1.weight"),
    (_L + r"self_attn\.in_proj_weight", r"layers.\1.self_attn.in_proj.weight"),
    (_L + r"self_attn\.out_proj\.weight", r"layers.\1.self_attn.out_proj.weight"),
    (_L + r"cross_attention\.in_proj_weight", r"layers.\1.cross_attention.in_proj.weight"),  # split below
    (_L + r"cross_attention\.out_proj\.weight", r"layers.\1.cross_attention.out_proj.weight"),
    (_L + r"(norm1|norm_cross|norm2)\.(weight|bias)", r"layers.\1.\2.\3"),
    (_L + r"linear(1|2)\.weight", r"layers.\1.ffn.linear\2.weight"),
    (r"out_norm\.(weight|bias)", r"out_norm.\1"),
    (r"linears\.(\d+)\.weight", r"heads.\1.weight"),
]
_LM_RULES_BACK = [
    (r"emb\.(\d+)\.weight", r"emb.\1.weight"),
    (r"layers\.(\d+)\.(self_attn|cross_attention)\.in_proj\.weight", r"transformer.layers.\1.\2.in_proj_weight"),
    (r"layers\.(\d+)\.(self_attn|cross_attention)\.out_proj\.weight", r"transformer.layers.\1.\2.out_proj.weight"),
    (r"layers\.(\d+)\.(norm1|norm_cross|norm2)\.(weight|bias)", r"transformer.layers.\1.\2.\3"),
    (r"layers\.(\d+)\.ffn\.linear(1|2)\.weight", r"transformer.layers.\1.linear\2.weight"),
    (r"out_norm\.(weight|bias)", r"out_norm.\1"),
    (r"heads\.(\d+)\.weight", r"linears.\1.weight"),
]


# --- xp.cfg -----------------------------------------------------------------------------------------------------
def parse_xp_cfg(text: Any, where: str) -> dict[str, Any]:
    """The ``xp.cfg`` YAML string -> dict, with ``${a.b}`` references to other keys resolved."""
    if isinstance(text, dict):
        cfg = text
    else:
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise CheckpointError(f"{where}: xp.cfg is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: xp.cfg is not a mapping")
    return _resolve(cfg, cfg)


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _resolve(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root) for v in node]
    if isinstance(node, str):
        m = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", node)
        if m:
            value: Any = root
            for part in m.group(1).split("."):
                if not isinstance(value, dict) or part not in value:
                    return node
                value = value[part]
            return _resolve(value, root)
    return node


def _get(cfg: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def config_from_xp_cfg(cfg: dict[str, Any], text_proj_in: int) -> MusicGenConfig:
    """The LM's xp.cfg -> our config (codec part filled in later from the compression file)."""
    tl = cfg.get("transformer_lm")
    if not isinstance(tl, dict):
        raise CheckpointError("xp.cfg has no transformer_lm section: not an audiocraft LM checkpoint")
    if not tl.get("norm_first", True) or tl.get("positional_embedding", "sin") != "sin":
        raise CheckpointError("unsupported transformer_lm variant (needs norm_first and sin positions)")
    if tl.get("activation", "gelu") != "gelu" or any(tl.get(b) for b in ("bias_ff", "bias_attn", "bias_proj")):
        raise CheckpointError("unsupported transformer_lm variant (needs gelu and no biases)")
    fuser = cfg.get("fuser") or {}
    prepend = list(fuser.get("prepend") or [])
    melody = "self_wav" in prepend
    if prepend and sorted(prepend) != ["description", "self_wav"]:
        raise CheckpointError(f"unsupported prepended conditions {prepend} (melody models prepend self_wav and "
                              "description)")
    if melody and _get(cfg, "conditioners.self_wav.model", "chroma_stem") != "chroma_stem":
        raise CheckpointError(f"unsupported melody conditioner {_get(cfg, 'conditioners.self_wav.model')!r}")
    cross = "description" in (fuser.get("cross") or [])
    modeling = _get(cfg, "codebooks_pattern.modeling", "delay")
    delays = _get(cfg, f"codebooks_pattern.{modeling}.delays")
    n_q = int(tl["n_q"])
    stereo = bool(_get(cfg, "interleave_stereo_codebooks.use", False))
    lm = LMConfig(dim=int(tl["dim"]), num_heads=int(tl["num_heads"]), num_layers=int(tl["num_layers"]),
                  ffn_dim=int(tl.get("hidden_scale", 4) * tl["dim"]), n_q=n_q, card=int(tl["card"]),
                  cross_attention=cross, pattern=modeling,
                  delays=list(delays) if delays is not None else list(range(n_q)))
    t5_name = _get(cfg, "conditioners.description.t5.name", "t5-base")
    if _get(cfg, "conditioners.description.model", "t5") != "t5":
        raise CheckpointError(f"unsupported text conditioner {_get(cfg, 'conditioners.description.model')!r}")
    extra: dict[str, Any] = {}
    if melody:
        chroma = _get(cfg, "conditioners.self_wav.chroma_stem", {}) or {}
        sr = int(chroma.get("sample_rate", cfg.get("sample_rate", 32000)))
        hop = 2 ** int(chroma.get("radix2_exp", 14)) // 4
        duration = float(chroma.get("duration", _get(cfg, "dataset.segment_duration", 30.0)))
        extra = {"melody": True, "num_chroma": int(chroma.get("n_chroma", 12)),
                 "chroma_frames": int(duration * sr) // hop + 1}  # 30 s at 32 kHz: 235
    return MusicGenConfig(lm=lm, text=TextConfig(kind="t5", name=t5_name, encoder_dim=text_proj_in),
                          channels=2 if stereo else int(cfg.get("channels", 1)),
                          max_duration=float(_get(cfg, "dataset.segment_duration", 30.0)), **extra)


def _template(name: str) -> dict[str, Any]:
    text = resources.files("yuefu.checkpoints").joinpath(f"templates/{name}").read_text()
    return yaml.safe_load(text)


def config_to_xp_cfg(cfg: MusicGenConfig) -> dict[str, Any]:
    x = copy.deepcopy(_template("audiocraft_lm.yaml"))
    lm = cfg.lm
    x["transformer_lm"].update(dim=lm.dim, num_heads=lm.num_heads, num_layers=lm.num_layers,
                               hidden_scale=lm.ffn_dim // lm.dim, n_q=lm.n_q, card=lm.card)
    x["codebooks_pattern"]["modeling"] = lm.pattern
    x["codebooks_pattern"].setdefault(lm.pattern, {})["delays"] = list(lm.delays)
    x["fuser"]["cross"] = ["description"] if lm.cross_attention else []
    if cfg.melody:
        x["fuser"]["prepend"] = ["self_wav", "description"]
        x["conditioners"]["self_wav"] = {
            "model": "chroma_stem",
            "chroma_stem": {"sample_rate": "${sample_rate}", "n_chroma": cfg.num_chroma, "radix2_exp": 14,
                            "argmax": True, "match_len_on_eval": True, "eval_wavs": None, "n_eval_wavs": 100,
                            "cache_path": None, "duration": cfg.max_duration},
        }
    x["conditioners"]["description"]["t5"]["name"] = cfg.text.name
    x["sample_rate"] = cfg.codec.sample_rate
    x["channels"] = cfg.channels
    x["interleave_stereo_codebooks"]["use"] = cfg.channels == 2
    x["dataset"]["segment_duration"] = cfg.max_duration
    return x


# --- files ------------------------------------------------------------------------------------------------------
def _load_pkg(path: Path) -> dict[str, Any]:
    pkg = load_torch_pickle(path)
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{path}: not an audiocraft checkpoint (expected a dict)")
    return pkg


def read(folder: str | os.PathLike) -> Checkpoint:
    folder = Path(folder)
    pkg = _load_pkg(folder / LM_FILE)
    if "best_state" not in pkg or "xp.cfg" not in pkg:
        raise CheckpointError(f"{folder / LM_FILE}: not an exported audiocraft LM (no best_state / xp.cfg)")
    best = {k: v for k, v in pkg["best_state"].items() if isinstance(v, torch.Tensor)}
    text_proj = {k[len(TEXT_PROJ):]: v for k, v in best.items() if k.startswith(TEXT_PROJ)}
    if not text_proj:
        raise CheckpointError(f"{folder / LM_FILE}: no text conditioner projection ({TEXT_PROJ}*)")
    config = config_from_xp_cfg(parse_xp_cfg(pkg["xp.cfg"], str(folder / LM_FILE)),
                                text_proj["weight"].shape[1])
    melody_proj = {k[len(MELODY_PROJ):]: v for k, v in best.items() if k.startswith(MELODY_PROJ)} or None
    if config.melody and melody_proj is None:
        raise CheckpointError(f"{folder / LM_FILE}: a melody model without its chroma projection ({MELODY_PROJ}*)")
    lm_sd = {k: v for k, v in best.items() if not k.startswith((TEXT_PROJ, MELODY_PROJ))}
    lm = _split_cross_in_proj(rename_keys(lm_sd, _LM_RULES, f"{folder / LM_FILE}", drop=_MELODY_BUFFERS))
    ckpt = Checkpoint(config=config, lm=lm, text_proj=text_proj, source_format="audiocraft",
                      melody_proj=melody_proj)

    if not (folder / CODEC_FILE).exists():
        raise CheckpointError(f"{folder}: {CODEC_FILE} is missing (the audiocraft format needs both files)")
    cpkg = _load_pkg(folder / CODEC_FILE)
    if "pretrained" in cpkg and "best_state" not in cpkg:
        ckpt.codec_ref = str(cpkg["pretrained"])
    elif "best_state" in cpkg and "xp.cfg" in cpkg:
        ccfg = parse_xp_cfg(cpkg["xp.cfg"], str(folder / CODEC_FILE))
        config.codec = codec_config_from_audiocraft(ccfg)
        ckpt.codec = codec_state_from_audiocraft(cpkg["best_state"])
    else:
        raise CheckpointError(f"{folder / CODEC_FILE}: neither a codec state nor a 'pretrained' reference")
    return ckpt


def write(ckpt: Checkpoint, folder: Path) -> None:
    """Write both files into ``folder`` (created by the caller, moved into place afterwards)."""
    if ckpt.codec is None:
        raise CheckpointError("no codec weights to write")
    best = rename_keys(_join_cross_in_proj(ckpt.lm), _LM_RULES_BACK, "LM weights")
    best.update({TEXT_PROJ + k: v for k, v in ckpt.text_proj.items()})
    if ckpt.config.melody:
        if ckpt.melody_proj is None:
            raise CheckpointError("a melody model needs its chroma projection to be written")
        best.update({MELODY_PROJ + k: v for k, v in ckpt.melody_proj.items()})
        best["condition_provider.conditioners.self_wav.chroma.spec.window"] = torch.hann_window(2**14)
    xp = config_to_xp_cfg(ckpt.config)
    torch.save({"best_state": best, "xp.cfg": yaml.safe_dump(xp, sort_keys=False), "version": "1.0",
                "exported": True}, folder / LM_FILE)
    cx = copy.deepcopy(_template("audiocraft_compression.yaml"))
    _merge(cx, codec_config_to_audiocraft(ckpt.config.codec))
    torch.save({"best_state": codec_state_to_audiocraft(ckpt.codec), "xp.cfg": yaml.safe_dump(cx, sort_keys=False),
                "version": "1.0", "exported": True}, folder / CODEC_FILE)


def _split_cross_in_proj(sd: StateDict) -> StateDict:
    """audiocraft stacks cross-attention q|k|v in one matrix; we keep q (per step) apart from k|v (once)."""
    out: StateDict = {}
    for k, v in sd.items():
        m = re.fullmatch(r"(layers\.\d+\.cross_attention)\.in_proj\.weight", k)
        if m:
            dim = v.shape[1]
            out[f"{m.group(1)}.q_proj.weight"], out[f"{m.group(1)}.kv_proj.weight"] = v[:dim], v[dim:]
        else:
            out[k] = v
    return out


def _join_cross_in_proj(sd: StateDict) -> StateDict:
    out = {k: v for k, v in sd.items() if not re.fullmatch(r"layers\.\d+\.cross_attention\.(q|kv)_proj\.weight", k)}
    for k, v in sd.items():
        m = re.fullmatch(r"(layers\.\d+\.cross_attention)\.q_proj\.weight", k)
        if m:
            out[f"{m.group(1)}.in_proj.weight"] = torch.cat([v, sd[f"{m.group(1)}.kv_proj.weight"]], dim=0)
    return out


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
