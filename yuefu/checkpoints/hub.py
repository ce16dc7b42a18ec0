"""Model names -> local folders, through huggingface_hub and its cache (``HF_HUB_OFFLINE=1`` is honoured)."""

from __future__ import annotations

import os
from pathlib import Path

from yuefu.errors import ModelNotFoundError

# Official ids: text models (cross-attention), stereo models, and melody models (chroma + text prepended).
TEXT_MODELS = ("facebook/musicgen-small", "facebook/musicgen-medium", "facebook/musicgen-large")
STEREO_MODELS = ("facebook/musicgen-stereo-small", "facebook/musicgen-stereo-medium",
                 "facebook/musicgen-stereo-large")
MELODY_MODELS = ("facebook/musicgen-melody", "facebook/musicgen-melody-large",
                 "facebook/musicgen-stereo-melody", "facebook/musicgen-stereo-melody-large")
KNOWN_MODELS = TEXT_MODELS + STEREO_MODELS + MELODY_MODELS
ALIASES = {name.split("/", 1)[1].removeprefix("musicgen-"): name for name in KNOWN_MODELS}
ALIASES.update({name.split("/", 1)[1]: name for name in KNOWN_MODELS})
T5_ALIASES = {"t5-small": "google-t5/t5-small", "t5-base": "google-t5/t5-base", "t5-large": "google-t5/t5-large"}

# Files of the transformers layout (self-contained: T5 and tokenizer inside), then of the audiocraft layout.
TRANSFORMERS_PATTERNS = ["*.json", "*.safetensors", "spiece.model"]
AUDIOCRAFT_PATTERNS = ["state_dict.bin", "compression_state_dict.bin"]


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download(repo_id: str, patterns: list[str], what: str = "model") -> Path:
    """Snapshot of ``repo_id`` restricted to ``patterns``, from the cache or the hub; a one-line error if neither."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except HFValidationError:
        raise ModelNotFoundError(f"{what} {repo_id!r} is neither a local folder nor a valid hub id") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelNotFoundError(f"{what} {repo_id!r} was not found on the Hugging Face hub") from None
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if is_offline() else "the hub cannot be reached"
        raise ModelNotFoundError(
            f"{what} {repo_id!r} is not in the local Hugging Face cache and {how}; "
            f"download it on a connected machine (yuefu download {repo_id}) or pass a local folder") from None
    except Exception as e:  # network errors of every flavour
        raise ModelNotFoundError(f"{what} {repo_id!r} could not be downloaded ({e.__class__.__name__}: "
                                 f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def resolve_model(name_or_path: str) -> Path:
    """A local checkpoint folder for ``name_or_path`` (a folder, an official id or alias, or any hub repo id)."""
    from yuefu.checkpoints.builtin import BUILTIN_MODELS, builtin_folder

    if name_or_path in BUILTIN_MODELS:
        folder = builtin_folder(name_or_path)
        if folder is None:
            raise ModelNotFoundError(f"the built-in model {name_or_path} is not in this installation of yuefu")
        return folder
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"{name_or_path}: a model is a folder (config.json + weights, or "
                                     "state_dict.bin + compression_state_dict.bin), not a file")
        return path
    repo = canonical_name(name_or_path)
    if "/" not in repo:
        known = ", ".join(BUILTIN_MODELS + KNOWN_MODELS)
        raise ModelNotFoundError(f"unknown model {name_or_path!r}: no such folder, and not a hub id such as {known}")
    folder = download(repo, TRANSFORMERS_PATTERNS)
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    return download(repo, AUDIOCRAFT_PATTERNS)


def resolve_codec(ref: str) -> Path:
    """A folder with transformers' EnCodec files for a codec reference such as ``facebook/encodec_32khz``."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    return download(ref, ["config.json", "*.safetensors"], what="codec")


def resolve_text_encoder(name_or_path: str) -> str:
    """A local folder (or cached hub snapshot) with a T5 encoder and its tokenizer."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    repo = T5_ALIASES.get(name_or_path, name_or_path)
    return str(download(repo, ["*.json", "*.safetensors", "spiece.model"], what="text encoder"))
