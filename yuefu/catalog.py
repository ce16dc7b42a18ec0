"""What models exist and what files hold: ``yuefu models``, ``yuefu download`` and ``yuefu info``.

Nothing here downloads unless asked (:func:`download`): the cache is read with huggingface_hub's own scanner, and a
hub id is described only when its files are already cached.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yuefu.checkpoints import hub
from yuefu.errors import AudioFileError, ModelNotFoundError

# LM sizes of the official checkpoints (the paper and the model cards): parameters of the language model.
_LM_PARAMS = {"small": "300M", "medium": "1.5B", "large": "3.3B", "melody": "1.5B", "melody-large": "3.3B"}


def known_models() -> list[dict[str, Any]]:
    """The official ids with their kind and LM size, and whether (and how much of) each is cached here."""
    from yuefu.checkpoints import builtin

    cached = cached_repos()
    rows = []
    for name in builtin.available():
        info = builtin.describe(name)
        rows.append({"id": name, "alias": name, "kind": "built-in, text", "lm_params": _builtin_params(name),
                     "cached": True, "size_on_disk": info["size_on_disk"], "path": info["folder"]})
    for repo in hub.KNOWN_MODELS:
        short = repo.split("/", 1)[1].removeprefix("musicgen-")
        stereo = short.startswith("stereo-")
        size_key = short.removeprefix("stereo-")
        kind = ("melody" if "melody" in short else "text") + (", stereo" if stereo else "")
        entry = cached.get(repo)
        rows.append({"id": repo, "alias": short, "kind": kind, "lm_params": _LM_PARAMS.get(size_key, "?"),
                     "cached": entry is not None, "size_on_disk": entry["size_on_disk"] if entry else 0,
                     "path": entry["path"] if entry else None})
    return rows


def _builtin_params(name: str) -> str:
    from safetensors import safe_open

    from yuefu.checkpoints.builtin import builtin_folder

    folder = builtin_folder(name)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        n = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("lm."))
    return f"{n / 1e6:.0f}M"


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def cached_repos() -> dict[str, dict[str, Any]]:
    """Model repos in the local Hugging Face cache (``HF_HUB_CACHE``): size on disk and newest snapshot."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return {}
    out = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified, default=None)
        out[repo.repo_id] = {"size_on_disk": repo.size_on_disk,
                             "path": str(newest.snapshot_path) if newest is not None else None}
    return out


def download(name: str, audiocraft: bool = False) -> Path:
    """Fill the cache with ``name``'s files (transformers layout, self-contained; or audiocraft's two files)."""
    repo = hub.canonical_name(name)
    if "/" not in repo:
        raise ModelNotFoundError(f"unknown model {name!r}: not a hub id such as {', '.join(hub.KNOWN_MODELS[:3])}")
    patterns = hub.AUDIOCRAFT_PATTERNS if audiocraft else hub.TRANSFORMERS_PATTERNS
    return hub.download(repo, patterns)


def local_model_folder(name: str) -> Path:
    """A folder for ``name`` without downloading: a local path, or the cached snapshot of a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{name}: a model is a folder, not a file")
    repo = hub.canonical_name(name)
    entry = cached_repos().get(repo)
    if entry is None or entry["path"] is None:
        raise ModelNotFoundError(f"{name!r} is neither a local folder nor a cached model (yuefu download {repo})")
    return Path(entry["path"])


def describe_model(name: str) -> dict[str, Any]:
    """Format, architecture and parameter counts of a checkpoint folder or cached hub id."""
    from yuefu.checkpoints import detect_format, read_checkpoint

    folder = local_model_folder(name)
    fmt = detect_format(folder)
    ckpt = read_checkpoint(folder)
    cfg = ckpt.config

    def count(sd: dict | None) -> int:
        return sum(t.numel() for t in sd.values()) if sd else 0

    return {
        "model": name, "folder": str(folder), "format": fmt,
        "kind": ("melody" if cfg.melody else "text") + (", stereo" if cfg.channels == 2 else ""),
        "sample_rate": cfg.codec.sample_rate, "channels": cfg.channels, "frame_rate": cfg.codec.frame_rate,
        "max_duration": cfg.max_duration,
        "lm": {"dim": cfg.lm.dim, "layers": cfg.lm.num_layers, "heads": cfg.lm.num_heads, "codebooks": cfg.lm.n_q,
               "card": cfg.lm.card, "pattern": cfg.lm.pattern, "delays": cfg.lm.delays,
               "cross_attention": cfg.lm.cross_attention, "params": count(ckpt.lm)},
        "codec": {"params": count(ckpt.codec), "codebooks": cfg.codec.n_q, "bins": cfg.codec.bins,
                  "reference": ckpt.codec_ref},
        "text_encoder": {"kind": cfg.text.kind, "name": cfg.text.name, "inside": ckpt.text_encoder is not None,
                         "params": count(ckpt.text_encoder)},
        "size_on_disk": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
    }


def describe_file(path: str) -> dict[str, Any]:
    """An audio file's format, rate, channels and length, with its sidecar (``song.json``) when there is one;
    or a sidecar itself."""
    from yuefu import audio

    p = Path(path)
    if p.suffix.lower() == ".json" and p.is_file():
        return {"sidecar": _read_json(p)}
    meta = audio.info(p)
    out: dict[str, Any] = {"file": str(p), "format": meta.format, "subtype": meta.subtype,
                           "sample_rate": meta.sample_rate, "channels": meta.channels, "frames": meta.frames,
                           "duration": round(meta.duration, 4)}
    side = p.with_suffix(".json")
    if side.is_file():
        out["sidecar"] = _read_json(side)
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AudioFileError(f"{path}: not a readable JSON file ({e.__class__.__name__})") from None


def describe(target: str) -> dict[str, Any]:
    """``yuefu info``: a file (audio or sidecar) if ``target`` is one, else a model."""
    p = Path(target).expanduser()
    if p.is_file():
        return describe_file(target)
    return describe_model(target)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
