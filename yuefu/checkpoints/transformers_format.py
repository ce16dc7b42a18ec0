"""transformers' MusicGen format: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``, maybe sharded).

Key map (transformers -> ours), from ``MusicgenForConditionalGeneration``:
``decoder.model.decoder.embed_tokens.{k}`` -> ``emb.{k}``; ``...layers.{i}.self_attn.{q,k,v}_proj`` -> stacked
``layers.{i}.self_attn.in_proj``; ``encoder_attn`` -> ``cross_attention``; ``self_attn_layer_norm`` / ``encoder_attn_
layer_norm`` / ``final_layer_norm`` -> ``norm1`` / ``norm_cross`` / ``norm2``; ``fc1`` / ``fc2`` -> ``ffn.linear1`` /
``ffn.linear2``; ``decoder.model.decoder.layer_norm`` -> ``out_norm``; ``decoder.lm_heads.{k}`` -> ``heads.{k}``;
``enc_to_dec_proj`` -> text projection; ``audio_encoder.*`` -> codec; ``text_encoder.*`` -> T5 encoder.

Sentence-encoder models (``text.kind == "sentence"``, e.g. yuefu-mini with all-MiniLM-L6-v2) are written with the
BERT-like encoder inside: its config.json as the ``text_encoder`` sub-config, its weights as ``text_encoder.*`` (the
keys of its own ``model.safetensors``, which are those transformers' MusicGen gives an ``AutoModelForTextEncoding``
BertModel) and its tokenizer files beside config.json; transformers builds the encoder from that sub-config with
``AutoModelForTextEncoding``. It masks padded text positions where yuefu (like audiocraft) zeroes them and attends
to them, so the two agree exactly on unpadded prompts.
On reading, such a folder's encoder (sub-config, ``text_encoder.*`` weights, tokenizer) is written once into
yuefu's cache as a plain transformers folder named by a hash of its contents, which the sentence conditioner loads
like any other local encoder folder (:func:`sentence_encoder_folder`).

Melody models (``model_type: musicgen_melody``, ``MusicgenMelodyForConditionalGeneration``) have the same decoder
keys without ``encoder_attn``, plus ``audio_enc_to_dec_proj`` (Linear(num_chroma, dim)) -> melody projection; the
config adds ``num_chroma`` and ``chroma_length``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from yuefu.atomic import atomic_folder
from yuefu.checkpoints.bundle import Checkpoint, StateDict, check_keys, rename_keys, split_prefix
from yuefu.checkpoints.codec_keys import (
    codec_config_from_transformers,
    codec_config_to_transformers,
    codec_state_from_transformers,
    codec_state_to_transformers,
)
from yuefu.checkpoints.safe_load import load_torch_pickle
from yuefu.checkpoints.safetensors_read import cat as lazy_cat
from yuefu.checkpoints.safetensors_read import materialize_all, read_safetensors
from yuefu.config import LMConfig, MusicGenConfig, TextConfig
from yuefu.errors import CheckpointError, ModelNotFoundError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json")
# Tokenizer files a BERT-like sentence encoder may have (WordPiece vocab.txt; BPE vocab.json + merges.txt).
ENCODER_TOKENIZER_FILES = (*TOKENIZER_FILES, "vocab.txt", "vocab.json", "merges.txt")
# text_encoder model types read as a sentence-encoder conditioner (per-token states of an AutoModel).
SENTENCE_ENCODER_TYPES = ("bert", "roberta", "xlm-roberta")

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
    text_type = text.get("model_type", "t5")
    if text_type == "t5":
        width = text["d_model"]
        text_cfg = TextConfig(kind="t5", name=text.get("_name_or_path") or "t5-base", encoder_dim=width,
                              encoder_config=text)
    elif text_type in SENTENCE_ENCODER_TYPES:
        width = text["hidden_size"]
        # The encoder ships inside the folder: read() points ``name`` at it (see sentence_encoder_folder).
        text_cfg = TextConfig(kind="sentence", name=text.get("_name_or_path") or "", encoder_dim=width)
    else:
        raise CheckpointError(f"unsupported text encoder model_type {text_type!r} "
                              f"(expected t5 or one of {', '.join(SENTENCE_ENCODER_TYPES)})")
    if width == dec["hidden_size"] or dec.get("cross_attention_hidden_size") is not None:
        raise CheckpointError("unsupported: text encoder without the enc_to_dec projection")
    extra: dict[str, Any] = {}
    if melody:
        extra = {"melody": True, "num_chroma": int(cfg.get("num_chroma", 12)),
                 "chroma_frames": int(cfg.get("chroma_length", 235))}
    return MusicGenConfig(codec=codec_config_from_transformers(audio), lm=lm, text=text_cfg, channels=channels,
                          max_duration=30.0, name=cfg.get("_name_or_path", ""), **extra)


def config_to_transformers(cfg: MusicGenConfig, text_encoder_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """transformers' MusicgenConfig as a dict. ``text_encoder_config``: the encoder's config.json (a sentence
    encoder's is read from its folder when not given; a T5 encoder's is ``cfg.text.encoder_config``)."""
    if text_encoder_config is not None:
        text = text_encoder_config
    elif cfg.text.kind == "sentence":
        text = _read_encoder_config(_sentence_encoder_dir(cfg.text.name))
    elif cfg.text.encoder_config is not None:
        text = cfg.text.encoder_config
    else:
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
            "decoder": dec, "text_encoder": text,
            "audio_encoder": codec_config_to_transformers(cfg.codec), "is_encoder_decoder": True,
            "num_chroma": cfg.num_chroma, "chroma_length": cfg.chroma_frames,
        }
    return {
        "model_type": "musicgen", "architectures": ["MusicgenForConditionalGeneration"],
        "decoder": dec, "text_encoder": text,
        "audio_encoder": codec_config_to_transformers(cfg.codec), "is_encoder_decoder": True,
    }


# --- sentence encoders ------------------------------------------------------------------------------------------
def _sentence_encoder_dir(name: str) -> Path:
    """The local folder of a sentence encoder named in a yuefu config (folder, packaged MiniLM or hub snapshot)."""
    from yuefu.conditioners.sentence import resolve_sentence_encoder

    folder = resolve_sentence_encoder(name)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: the sentence encoder has no model.safetensors (only safetensors weights "
                              "are exported)")
    return folder


def _read_encoder_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: cannot read the text encoder's config "
                              f"({e.__class__.__name__})") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type not in SENTENCE_ENCODER_TYPES:
        raise CheckpointError(f"{folder}: not a BERT-like sentence encoder (model_type={model_type!r}, expected one "
                              f"of {', '.join(SENTENCE_ENCODER_TYPES)})")
    return cfg


def _encoder_keys(cfg: dict[str, Any]) -> set[str]:
    """State-dict keys of the encoder transformers' MusicGen builds from sub-config ``cfg`` (built on meta)."""
    from transformers import AutoConfig, AutoModelForTextEncoding

    d = dict(cfg)
    try:
        config = AutoConfig.for_model(d.pop("model_type"), **d)
        with torch.device("meta"):
            model = AutoModelForTextEncoding.from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"invalid text encoder config ({str(e).splitlines()[0][:160]})") from None
    return set(model.state_dict())


def _encoder_state(cfg: dict[str, Any], sd: StateDict, what: str) -> StateDict:
    """``sd`` checked against the architecture of ``cfg``, without the index buffers (``embeddings.position_ids``)
    older transformers saved; floating weights in float32, the precision yuefu runs the encoder in."""
    expected = _encoder_keys(cfg)
    sd = {k: v for k, v in sd.items() if k in expected or not k.endswith("_ids")}
    check_keys(expected, set(sd), what)
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def sentence_encoder_folder(folder: Path, cfg: dict[str, Any], sd: StateDict) -> Path:
    """A plain transformers folder for the sentence encoder inside MusicGen folder ``folder`` (sub-config ``cfg``,
    weights ``sd`` without their ``text_encoder.`` prefix, the tokenizer files beside config.json), written once
    into yuefu's cache under a hash of those contents, so that a read-only folder (a hub snapshot) loads too."""
    from safetensors.torch import save_file

    from yuefu.conditioners.sentence import cache_dir

    tokenizer = [name for name in ENCODER_TOKENIZER_FILES if (folder / name).is_file()]
    if not tokenizer:
        raise CheckpointError(f"{folder}: no tokenizer files for its {cfg.get('model_type')} text encoder "
                              f"(expected some of {', '.join(ENCODER_TOKENIZER_FILES)})")
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    for name in tokenizer:
        digest.update(f"\0{name}\0".encode())
        digest.update((folder / name).read_bytes())
    for key in sorted(sd):
        t = sd[key].detach().cpu().contiguous()
        digest.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    target = cache_dir() / "text-encoders" / f"{cfg['model_type']}-{digest.hexdigest()[:24]}"
    if (target / "model.safetensors").is_file():
        return target  # complete: the folder only appears by the rename below
    try:
        with atomic_folder(target, shared=True) as tmp:
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
            for name in tokenizer:
                shutil.copyfile(folder / name, tmp / name)
            save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"))
    except OSError as e:
        raise ModelNotFoundError(f"cannot write the text encoder of {folder} into {target.parent} "
                                 f"({e.strerror or e}); set YUEFU_CACHE to a writable folder") from None
    return target


# --- weights ----------------------------------------------------------------------------------------------------
def lm_state_from_transformers(sd: StateDict) -> StateDict:
    sd = dict(sd)
    out: StateDict = {}
    layer_ids = {int(k.split(".")[4]) for k in sd if k.startswith("decoder.model.decoder.layers.")}
    for i in sorted(layer_ids):
        p = f"decoder.model.decoder.layers.{i}."
        names = [f"{p}self_attn.{x}.weight" for x in _QKV]
        if all(n in sd for n in names):
            out[f"layers.{i}.self_attn.in_proj.weight"] = lazy_cat([sd.pop(n) for n in names], dim=0)
        if f"{p}encoder_attn.q_proj.weight" in sd:
            out[f"layers.{i}.cross_attention.q_proj.weight"] = sd.pop(f"{p}encoder_attn.q_proj.weight")
            out[f"layers.{i}.cross_attention.kv_proj.weight"] = lazy_cat(
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


def read_weights(folder: Path, lazy: bool = False) -> StateDict:
    """All tensors of a transformers checkpoint folder: safetensors or torch bin, single or sharded. With ``lazy``
    safetensors entries are :class:`LazyTensor` placeholders (torch bin files are read whole)."""
    def read_st(path: str) -> StateDict:
        return read_safetensors(path, lazy=lazy)

    for single, index, loader in (("model.safetensors", "model.safetensors.index.json", read_st),
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


def read(folder: str | os.PathLike, lazy: bool = False) -> Checkpoint:
    """The checkpoint in ``folder``; with ``lazy`` the LM's tensors stay :class:`LazyTensor` placeholders."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: cannot read ({e.__class__.__name__})") from None
    config = config_from_transformers(cfg)
    sd = read_weights(folder, lazy)
    lm = lm_state_from_transformers({k: v for k, v in sd.items() if k.startswith("decoder.")})
    sd = materialize_all({k: v for k, v in sd.items() if not k.startswith("decoder.")})
    text_proj = split_prefix(sd, "enc_to_dec_proj.")
    codec = codec_state_from_transformers(split_prefix(sd, "audio_encoder."))
    text_encoder = split_prefix(sd, "text_encoder.")
    if config.text.kind == "sentence":
        encoder_cfg = cfg["text_encoder"]
        encoder_sd = _encoder_state(encoder_cfg, text_encoder, f"{folder}: text encoder weights (text_encoder.*)")
        config.text.name = str(sentence_encoder_folder(folder, encoder_cfg, encoder_sd))
        text_encoder = {}  # Checkpoint.text_encoder holds T5 weights; this encoder loads from its own folder
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

    if ckpt.codec is None:
        raise CheckpointError("the transformers format needs the codec weights inside")
    encoder_dir = None
    if ckpt.config.text.kind == "sentence":
        encoder_dir = _sentence_encoder_dir(ckpt.config.text.name)
        encoder_cfg = _read_encoder_config(encoder_dir)
        if encoder_cfg.get("hidden_size") != ckpt.config.text.encoder_dim:
            raise CheckpointError(f"{encoder_dir}: hidden_size {encoder_cfg.get('hidden_size')} is not the model's "
                                  f"text encoder width {ckpt.config.text.encoder_dim}")

        text_encoder = _encoder_state(encoder_cfg, _load_file(read_safetensors, encoder_dir / "model.safetensors"),
                                      f"{encoder_dir}: sentence encoder weights")
        cfg = config_to_transformers(ckpt.config, encoder_cfg)
    elif ckpt.text_encoder is None:
        raise CheckpointError("the transformers format needs the T5 encoder weights inside")
    else:
        text_encoder = ckpt.text_encoder
        cfg = config_to_transformers(ckpt.config)
    sd: StateDict = {}
    sd.update(lm_state_to_transformers(ckpt.lm))
    sd.update({f"enc_to_dec_proj.{k}": v for k, v in ckpt.text_proj.items()})
    sd.update({f"audio_encoder.{k}": v for k, v in codec_state_to_transformers(ckpt.codec).items()})
    sd.update({f"text_encoder.{k}": v for k, v in text_encoder.items()})
    if ckpt.config.melody:
        if ckpt.melody_proj is None:
            raise CheckpointError("a melody model needs its chroma projection to be written")
        sd.update({f"audio_enc_to_dec_proj.{k}": v for k, v in ckpt.melody_proj.items()})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    if encoder_dir is not None:  # the encoder's tokenizer; the caller may overwrite it with an equal saved copy
        for name in ENCODER_TOKENIZER_FILES:
            if (encoder_dir / name).is_file():
                shutil.copyfile(encoder_dir / name, folder / name)
