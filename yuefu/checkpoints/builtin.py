"""Models shipped inside the yuefu package (``yuefu-mini``): found without any network, and packaged from a
trained run by ``yuefu train package``.

A packaged model is a yuefu-format folder under ``yuefu/builtin/NAME/``: ``config.json``, ``model.safetensors`` in
float16, the frozen sentence encoder it was trained with in ``text_encoder/`` (float16 safetensors and its
tokenizer, so nothing else needs installing), and ``MODEL_CARD.md``. Weights load back into float32 modules.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

import torch

from yuefu.atomic import atomic_folder
from yuefu.checkpoints import ENCODER_DIR
from yuefu.errors import CheckpointError, InvalidArgumentError

BUILTIN_MODELS = ("yuefu-mini",)
TEXT_ENCODER_DIR = ENCODER_DIR  # the sentence encoder's folder inside a model folder
_ENCODER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def builtin_folder(name: str) -> Path | None:
    """The packaged folder of built-in model ``name``, or None when it is not built in or not shipped."""
    if name not in BUILTIN_MODELS:
        return None
    folder = Path(str(resources.files("yuefu"))) / "builtin" / name
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def available() -> list[str]:
    """The built-in models this installation has."""
    return [name for name in BUILTIN_MODELS if builtin_folder(name) is not None]


def package_model(src: str | os.PathLike, dst: str | os.PathLike, card: str | None = None,
                  codec: str | os.PathLike | None = None) -> Path:
    """Write trained model ``src`` (any loadable folder with a sentence-encoder conditioner, or a built-in name) as
    a self-contained float16 folder ``dst``: weights, config, the text encoder and a model card; atomically (temp
    folder, rename). ``codec``: a codec folder (``yuefu train codec``'s RUN/model) whose weights replace the
    model's; only a codec with the model's encoder and codebooks (a decoder-only fine-tune) is taken."""
    from safetensors.torch import load_file, save_file

    from yuefu.checkpoints import read_checkpoint, yuefu_format
    from yuefu.conditioners.sentence import resolve_sentence_encoder

    shipped = builtin_folder(str(src)) if not Path(src).exists() else None
    src, dst = shipped or Path(src), Path(dst)
    ckpt = read_checkpoint(src)
    if ckpt.config.text.kind != "sentence":
        raise InvalidArgumentError(f"{src}: only models with a sentence-encoder conditioner can be packaged")
    if ckpt.codec is None:
        raise CheckpointError(f"{src}: the codec weights are not inside; package a model that holds them")
    if codec is not None:
        ckpt.codec = same_codes_codec(ckpt.codec, ckpt.config.codec, codec)
    if dst.exists() and any(dst.iterdir()):
        raise InvalidArgumentError(f"{dst}: exists and is not empty")
    encoder_dir = resolve_sentence_encoder(ckpt.config.text.name)
    with atomic_folder(dst) as tmp:
        half = {k: {n: t.to(torch.float16) if t.is_floating_point() else t for n, t in part.items()}
                for k, part in (("lm", ckpt.lm), ("codec", ckpt.codec), ("text_proj", ckpt.text_proj))}
        ckpt.lm, ckpt.codec, ckpt.text_proj = half["lm"], half["codec"], half["text_proj"]
        if ckpt.tempo_proj is not None:  # a tempo condition's token (config.text.tempo)
            ckpt.tempo_proj = {n: t.to(torch.float16) if t.is_floating_point() else t
                               for n, t in ckpt.tempo_proj.items()}
        ckpt.config.text.name = TEXT_ENCODER_DIR  # relative: resolved against the model folder on load
        ckpt.config.name = dst.name
        yuefu_format.write(ckpt, tmp, extra_meta={"dtype": "float16"})
        enc = tmp / TEXT_ENCODER_DIR
        enc.mkdir()
        for name in _ENCODER_FILES:
            if (encoder_dir / name).is_file():
                shutil.copy2(encoder_dir / name, enc / name)
        weights = load_file(str(encoder_dir / "model.safetensors"))
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
                  str(enc / "model.safetensors"))
        if card is not None:
            (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp makes it private; a shipped model is world-readable
            path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


def same_codes_codec(current: dict[str, torch.Tensor], config: object,
                     codec: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``current`` with its decoder replaced by that of codec folder ``codec`` (weight norm folded), after checking
    that the folder encodes and quantizes as ``current`` does (same config, encoder weights and codebooks, to float16
    precision), so that an LM trained on the current codes still means the same sounds."""
    import dataclasses

    from yuefu.codec.model import CompressionModel
    from yuefu.train.models import load_codec

    model = load_codec(codec).remove_weight_norm()
    if dataclasses.asdict(model.config) != dataclasses.asdict(config):
        raise InvalidArgumentError(f"--codec {codec}: its configuration differs from the model's codec")
    own = CompressionModel(model.config).remove_weight_norm()  # both in plain weights, however each was stored
    try:
        own.load_state_dict({k: v.float() for k, v in current.items()})
    except ValueError as e:
        raise CheckpointError(f"the model's codec: {str(e)[:200]}") from None
    new = {k: v.detach().float() for k, v in model.state_dict().items()}
    for name, old in own.state_dict().items():
        if (name.startswith("encoder.") or name.endswith(".embed")) and not torch.allclose(
                new[name], old, rtol=2e-3, atol=1e-5):
            raise InvalidArgumentError(
                f"--codec {codec}: its encoder or codebooks differ from the model's ({name}), so the LM's tokens "
                "would sound as other audio; train the decoder alone (model.freeze: [encoder, quantizer])")
    # Only the decoder is taken: the encoder and codebooks stay the model's own tensors, bit for bit, rather than the
    # codec folder's copies, which may differ by rounding (each weight spelling loads; see CompressionModel).
    return {**{k: v for k, v in current.items() if not k.startswith("decoder.")},
            **{k: v for k, v in new.items() if k.startswith("decoder.")}}


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def describe(name: str) -> dict:
    """Name, folder and size of a built-in model (for ``yuefu models``)."""
    folder = builtin_folder(name)
    meta = json.loads((folder / "config.json").read_text()) if folder else {}
    return {"id": name, "folder": str(folder) if folder else None, "size_on_disk": folder_size(folder) if folder else 0,
            "dtype": meta.get("dtype")}
