"""transformers' MusicGen format: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``, maybe sharded).

Key map (transformers -> ours), from ``MusicgenForConditionalGeneration``:
``decoder.model.decoder.embed_tokens.{k}`` -> ``emb.{k}``; ``...layers.{i}.self_attn.{q,k,v}_proj`` -> stacked
``layers.{i}.self_attn.in_proj``; ``encoder_attn`` -> ``cross_attention``; ``self_attn_layer_norm`` / ``encoder_attn_
layer_norm`` / ``final_layer_norm`` -> ``norm1`` / ``norm_cross`` / ``norm2``; ``fc1`` / ``fc2`` -> ``ffn.linear1`` /
``ffn.linear2``; ``decoder.model.decoder.layer_norm`` -> ``out_norm``; ``decoder.lm_heads.{k}`` -> ``heads.{k}``;
``enc_to_dec_proj`` -> text projection; ``audio_encoder.*`` -> codec; ``text_encoder.*`` -> T5 encoder.

Melody models (``model_type: musicgen_melody``, ``MusicgenMelodyForConditionalGeneration``) have the same decoder
keys without ``encoder_attn``, plus ``audio_enc_to_dec_proj`` (Linear(num_chroma, dim)) -> melody projection; the
config adds ``num_chroma`` and ``chroma_length``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from yuefu.checkpoints.bundle import Checkpoint, StateDict, rename_keys, split_prefix
from yuefu.checkpoints.codec_keys import (
    codec_config_from_transformers,
    codec_config_to_transformers,
    codec_state_from_transformers,
    codec_state_to_transformers,
)
from yuefu.checkpoints.safe_load import load_torch_pickle
from yuefu.config import LMConfig, MusicGenConfig, TextConfig
from yuefu.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json")

_DEC = r"decoder\.model\.decoder\."
_LM_RULES = [
    (_DEC + r"embed_tokens\.(\d+)\.weight", r"emb.\1.weight"),
    (_DEC + r"layers\.(\d+)\.self_attn\.out_proj\.weight", r"layers.\1.self_attn.out_proj.weight"),
    (_DEC + r"layers\.(\d+)\.encoder_attn\.out_proj\.weight", r"layers.\1.cross_attention.out_proj.weight"),
    (_DEC + r"layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"layers.\1.norm1.\2"),
    (_DEC + r"layers\.(\d+)\.encoder_attn_layer_norm\.(weight|bias)", r"layers.\1.norm_cross.\2"),
    (_DEC + r"layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"layers.\1.norm2.\2"),
    (_DEC + r"layers\.(\d+)\.fc1\.weight", r"layers.\1.ffn.linear1.weight"),
    (_DEC + r"layers\.(\d+)\.fc2\.weight", r"layers.\1.ffn.linear2.weight"),
    (_DEC + r"layer_norm\.(weight|bias)", r"out_norm.\1"),
    (r"decoder\.lm_heads\.(\d+)\.weight", r"heads.\1.weight"),
]
_QKV = ("q_proj", "k_proj", "v_proj")


# --- config -----------------------------------------------------------------------------------------------------
def config_from_transformers(cfg: dict[str, Any]) -> MusicGenConfig:
    model_type = cfg.get("model_type")
    melody = model_type == "musicgen_melody"
    if model_type not in ("musicgen", "musicgen_melody"):
        raise CheckpointError(f"config.json is not a MusicGen config (model_type={model_type!r})")
    dec, text, audio = cfg["decoder"], cfg["text_encoder"], cfg["audio_encoder"]
    channels = int(dec.get("audio_channels", 1))
    n_q = int(dec["num_codebooks"])
    if channels == 2:
        delays = [k // 2 for k in range(n_q)]  # [L1, R1, L2, R2, ...] delayed [0, 0, 1, 1, ...]
    else:
        delays = list(range(n_q))
    lm = LMConfig(
        dim=dec["hidden_size"], num_heads=dec["num_attention_heads"], num_layers=dec["num_hidden_layers"],
        ffn_dim=dec["ffn_dim"], n_q=n_q, card=dec["vocab_size"], cross_attention=not melody, delays=delays,
    )
    if dec.get("activation_function", "gelu") != "gelu" or dec.get("scale_embedding", False):
        raise CheckpointError("unsupported decoder variant (activation must be gelu, scale_embedding false)")
    if text.get("d_model") == dec["hidden_size"] or dec.get("cross_attention_hidden_size") is not None:
        raise CheckpointError("unsupported: text encoder without the enc_to_dec projection")
    text_cfg = TextConfig(kind="t5", name=text.get("_name_or_path") or "t5-base", encoder_dim=text["d_model"],
                          encoder_config=text)
    extra: dict[str, Any] = {}
    if melody:
        extra = {"melody": True, "num_chroma": int(cfg.get("num_chroma", 12)),
                 "chroma_frames": int(cfg.get("chroma_length", 235))}
    return MusicGenConfig(codec=codec_config_from_transformers(audio), lm=lm, text=text_cfg, channels=channels,
                          max_duration=30.0, name=cfg.get("_name_or_path", ""), **extra)


def config_to_transformers(cfg: MusicGenConfig) -> dict[str, Any]:
    if cfg.text.encoder_config is None:
        raise CheckpointError("the transformers format needs the text encoder's config and weights "
                              "(load the model with its T5 encoder first)")
    lm = cfg.lm
    dec = {
        "model_type": "musicgen_decoder", "vocab_size": lm.card, "max_position_embeddings": 2048,
        "num_hidden_layers": lm.num_layers, "ffn_dim": lm.ffn_dim, "num_attention_heads": lm.num_heads,
        "hidden_size": lm.dim, "num_codebooks": lm.n_q, "audio_channels": cfg.channels,
        "activation_function": "gelu", "dropout": 0.1, "scale_embedding": False,
        "pad_token_id": lm.card, "bos_token_id": lm.card,
    }
    if cfg.melody:
        dec["model_type"] = "musicgen_melody_decoder"
        return {
            "model_type": "musicgen_melody", "architectures": ["MusicgenMelodyForConditionalGeneration"],
            "decoder": dec, "text_encoder": cfg.text.encoder_config,
            "audio_encoder": codec_config_to_transformers(cfg.codec), "is_encoder_decoder": True,
            "num_chroma": cfg.num_chroma, "chroma_length": cfg.chroma_frames,
        }
    return {
        "model_type": "musicgen", "architectures": ["MusicgenForConditionalGeneration"],
        "decoder": dec, "text_encoder": cfg.text.encoder_config,
        "audio_encoder": codec_config_to_transformers(cfg.codec), "is_encoder_decoder": True,
    }


# --- weights ----------------------------------------------------------------------------------------------------
def lm_state_from_transformers(sd: StateDict) -> StateDict:
    sd = dict(sd)
    out: StateDict = {}
    layer_ids = {int(k.split(".")[4]) for k in sd if k.startswith("decoder.model.decoder.layers.")}
    for i in sorted(layer_ids):
        p = f"decoder.model.decoder.layers.{i}."
        names = [f"{p}self_attn.{x}.weight" for x in _QKV]
        if all(n in sd for n in names):
            out[f"layers.{i}.self_attn.in_proj.weight"] = torch.cat([sd.pop(n) for n in names], dim=0)
        if f"{p}encoder_attn.q_proj.weight" in sd:
            out[f"layers.{i}.cross_attention.q_proj.weight"] = sd.pop(f"{p}encoder_attn.q_proj.weight")
            out[f"layers.{i}.cross_attention.kv_proj.weight"] = torch.cat(
                [sd.pop(f"{p}encoder_attn.k_proj.weight"), sd.pop(f"{p}encoder_attn.v_proj.weight")], dim=0)
    sd.pop("decoder.model.decoder.embed_positions.weights", None)  # a fixed sinusoid table, recomputed
    out.update(rename_keys(sd, _LM_RULES, "transformers decoder weights"))
    return out


def lm_state_to_transformers(sd: StateDict) -> StateDict:
    out: StateDict = {}
    reverse = {
        r"emb\.(\d+)\.weight": "decoder.model.decoder.embed_tokens.{0}.weight",
        r"layers\.(\d+)\.self_attn\.out_proj\.weight": "decoder.model.decoder.layers.{0}.self_attn.out_proj.weight",
        r"layers\.(\d+)\.cross_attention\.out_proj\.weight":
            "decoder.model.decoder.layers.{0}.encoder_attn.out_proj.weight",
        r"layers\.(\d+)\.norm1\.(weight|bias)": "decoder.model.decoder.layers.{0}.self_attn_layer_norm.{1}",
        r"layers\.(\d+)\.norm_cross\.(weight|bias)": "decoder.model.decoder.layers.{0}.encoder_attn_layer_norm.{1}",
        r"layers\.(\d+)\.norm2\.(weight|bias)": "decoder.model.decoder.layers.{0}.final_layer_norm.{1}",
        r"layers\.(\d+)\.ffn\.linear1\.weight": "decoder.model.decoder.layers.{0}.fc1.weight",
        r"layers\.(\d+)\.ffn\.linear2\.weight": "decoder.model.decoder.layers.{0}.fc2.weight",
        r"out_norm\.(weight|bias)": "decoder.model.decoder.layer_norm.{0}",
        r"heads\.(\d+)\.weight": "decoder.lm_heads.{0}.weight",
    }
    for key, value in sd.items():
        m = re.fullmatch(r"layers\.(\d+)\.(self_attn\.in_proj|cross_attention\.q_proj|cross_attention\.kv_proj)"
                         r"\.weight", key)
        if m:
            p = f"decoder.model.decoder.layers.{m.group(1)}."
            names = {"self_attn.in_proj": ("self_attn", _QKV), "cross_attention.q_proj": ("encoder_attn", _QKV[:1]),
                     "cross_attention.kv_proj": ("encoder_attn", _QKV[1:])}[m.group(2)]
            for name, part in zip(names[1], value.chunk(len(names[1]), dim=0)):
                out[f"{p}{names[0]}.{name}.weight"] = part.contiguous()
            continue
        for pat, fmt in reverse.items():
            m = re.fullmatch(pat, key)
            if m:
                out[fmt.format(*m.groups())] = value
                break
        else:
            raise CheckpointError(f"no transformers name for LM key {key!r}")
    return out


def read_weights(folder: Path) -> StateDict:
    """All tensors of a transformers checkpoint folder: safetensors or torch bin, single or sharded."""
    from safetensors.torch import load_file

    for single, index, loader in (("model.safetensors", "model.safetensors.index.json", load_file),
                                  ("pytorch_model.bin", "pytorch_model.bin.index.json", load_torch_pickle)):
        if (folder / single).exists():
            return _load_file(loader, folder / single)
        if (folder / index).exists():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{folder / index}: not a valid shard index ({e})") from None
            sd: StateDict = {}
            for shard in shards:
                if not (folder / shard).exists():
                    raise CheckpointError(f"{folder}: shard {shard} named in {index} is missing")
                sd.update(_load_file(loader, folder / shard))
            return sd
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin (sharded or not)")


def _load_file(loader: Any, path: Path) -> StateDict:
    try:
        sd = loader(str(path))
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types on truncated/corrupt headers
        raise CheckpointError(f"{path}: cannot read weights ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return sd


def read(folder: str | os.PathLike) -> Checkpoint:
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: cannot read ({e.__class__.__name__})") from None
    config = config_from_transformers(cfg)
    sd = read_weights(folder)
    lm = lm_state_from_transformers({k: v for k, v in sd.items() if k.startswith("decoder.")})
    text_proj = split_prefix(sd, "enc_to_dec_proj.")
    codec = codec_state_from_transformers(split_prefix(sd, "audio_encoder."))
    text_encoder = split_prefix(sd, "text_encoder.")
    melody_proj = split_prefix(sd, "audio_enc_to_dec_proj.") or None
    if config.melody and melody_proj is None:
        raise CheckpointError(f"{folder}: a melody model without its chroma projection (audio_enc_to_dec_proj.*)")
    has_tok = any((folder / f).exists() for f in TOKENIZER_FILES)
    return Checkpoint(config=config, lm=lm, text_proj=text_proj, codec=codec, text_encoder=text_encoder or None,
                      tokenizer_dir=str(folder) if has_tok else None, source_format="transformers",
                      melody_proj=melody_proj)


def write(ckpt: Checkpoint, folder: Path) -> None:
    """Write into ``folder`` (which the caller creates and later moves into place)."""
    from safetensors.torch import save_file

    if ckpt.text_encoder is None or ckpt.codec is None:
        raise CheckpointError("the transformers format needs the T5 encoder and codec weights inside")
    cfg = config_to_transformers(ckpt.config)
    sd: StateDict = {}
    sd.update(lm_state_to_transformers(ckpt.lm))
    sd.update({f"enc_to_dec_proj.{k}": v for k, v in ckpt.text_proj.items()})
    sd.update({f"audio_encoder.{k}": v for k, v in codec_state_to_transformers(ckpt.codec).items()})
    sd.update({f"text_encoder.{k}": v for k, v in ckpt.text_encoder.items()})
    if ckpt.config.melody:
        if ckpt.melody_proj is None:
            raise CheckpointError("a melody model needs its chroma projection to be written")
        sd.update({f"audio_enc_to_dec_proj.{k}": v for k, v in ckpt.melody_proj.items()})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
