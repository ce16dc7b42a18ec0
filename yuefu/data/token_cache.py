"""Audio encoded to codec tokens once and kept on disk, so that LM training never runs the codec.

Each file's codes [K, frames] are one ``.npy`` file named by a hash of the audio file (path, size, mtime) and of
the codec (its config and weights): a changed file or a different codec is encoded afresh, nothing is reused by
mistake. Writes are atomic. A file that cannot be encoded gets a ``.bad`` note with the reason instead, is
reported, and is left out of training. Under ``torchrun`` each rank encodes its share of the missing files.

LM examples are random crops of the cached codes (memory-mapped, so a crop reads only its frames).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yuefu.data.dataset import example_rng
from yuefu.data.manifest import AudioEntry
from yuefu.data.sidecar import TextAugment, plain_text, training_text
from yuefu.errors import AudioFileError

EncodeFn = Callable[[AudioEntry], torch.Tensor]  # entry -> codes [K, frames]


def state_fingerprint(*parts: Any) -> str:
    """A short hash of configs (anything JSON-serialisable) and state dicts (tensors hashed by their bytes)."""
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, dict) and all(isinstance(v, torch.Tensor) for v in part.values()):
            for k in sorted(part):
                h.update(k.encode())
                h.update(part[k].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class TokenCache:
    """A folder of per-file codes for one codec (``fingerprint``)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str):
        self.folder = Path(folder).expanduser()
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, entry: AudioEntry) -> str:
        try:
            st = os.stat(entry.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        return hashlib.sha1(f"{entry.path}|{stamp}|{self.fingerprint}".encode()).hexdigest()

    def path(self, entry: AudioEntry) -> Path:
        return self.folder / f"{self.key(entry)}.npy"

    def has(self, entry: AudioEntry) -> bool:
        return self.path(entry).exists()

    def bad_reason(self, entry: AudioEntry) -> str | None:
        note = self.folder / f"{self.key(entry)}.bad"
        if not note.exists():
            return None
        try:
            return json.loads(note.read_text())["reason"]
        except (OSError, ValueError, KeyError):
            return "could not be encoded"

    def put(self, entry: AudioEntry, codes: torch.Tensor) -> None:
        """Store codes [K, frames] (int16 when they fit)."""
        arr = codes.cpu().numpy()
        arr = arr.astype(np.int16 if arr.max(initial=0) < 2**15 else np.int32)
        _atomic(self.path(entry), lambda f: np.save(f, arr))

    def mark_bad(self, entry: AudioEntry, reason: str) -> None:
        note = json.dumps({"path": str(entry.path), "reason": reason}).encode()
        _atomic(self.folder / f"{self.key(entry)}.bad", lambda f: f.write(note))

    def get(self, entry: AudioEntry) -> np.ndarray:
        """Codes [K, frames], memory-mapped; raises AudioFileError when the cache file is damaged."""
        path = self.path(entry)
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise AudioFileError(f"token cache {path.name} of '{entry.path}': unreadable ({e})") from None
        if arr.ndim != 2:
            raise AudioFileError(f"token cache {path.name} of '{entry.path}': expected [K, frames], got {arr.shape}")
        return arr


def _atomic(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class CacheReport:
    entries: list[AudioEntry]  # encoded and usable
    skipped: list[tuple[str, str]]  # (file, reason)
    encoded: int  # files this process encoded now


def fill_cache(entries: list[AudioEntry], cache: TokenCache, encode: EncodeFn, rank: int = 0, world: int = 1,
               progress: Callable[[Iterable, int], Iterable] | None = None,
               barrier: Callable[[], None] | None = None) -> CacheReport:
    """Encode the entries missing from ``cache`` (this rank's share), then list what every rank can use."""
    missing = [e for e in entries if not cache.has(e) and cache.bad_reason(e) is None]
    mine = missing[rank::world]
    for entry in progress(mine, len(mine)) if progress else mine:
        try:
            cache.put(entry, encode(entry))
        except (AudioFileError, OSError, RuntimeError, ValueError) as e:
            cache.mark_bad(entry, str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__)
    if barrier is not None:
        barrier()
    usable, skipped = [], []
    for e in entries:
        if cache.has(e):
            usable.append(e)
        else:
            skipped.append((str(e.path), cache.bad_reason(e) or "not encoded"))
    return CacheReport(usable, skipped, len(mine))


@dataclass
class TokenExample:
    codes: torch.Tensor  # [K, F] long, padded with 0 after ``length`` frames
    length: int
    text: str | None
    skipped: list[tuple[str, str]]
    start: int = 0  # the crop's first frame in its file


class TokenDataset(torch.utils.data.Dataset):
    """Random ``segment_frames`` crops of cached codes, with the example's training text."""

    def __init__(self, entries: list[AudioEntry], cache: TokenCache, segment_frames: int, seed: int = 0,
                 text: TextAugment | None = None):
        self.entries, self.cache = entries, cache
        self.segment_frames, self.seed, self.text = segment_frames, seed, text

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, index: int, position: int) -> TokenExample:
        entry = self.entries[index]
        codes = self.cache.get(entry)
        rng = example_rng(self.seed, position)
        start = rng.randrange(max(1, codes.shape[1] - self.segment_frames + 1))
        crop = torch.from_numpy(np.array(codes[:, start:start + self.segment_frames], dtype=np.int64))
        length = crop.shape[1]
        if length < self.segment_frames:
            crop = torch.nn.functional.pad(crop, (0, self.segment_frames - length))
        text = plain_text(entry.info) if self.text is None else training_text(entry.info, rng, self.text)
        return TokenExample(crop, length, text, [], start)

    def __getitem__(self, item: tuple[int, int]) -> TokenExample:
        index, position = item
        skipped: list[tuple[str, str]] = []
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            try:
                example = self._load(i, position)
                example.skipped = skipped
                return example
            except (AudioFileError, OSError, ValueError) as e:
                skipped.append((str(self.entries[i].path), str(e).splitlines()[0]))
        raise AudioFileError(f"no readable token file: all {len(self.entries)} failed (first: {skipped[0][1]})")


def collate_tokens(examples: list[TokenExample]) -> dict[str, Any]:
    return {"codes": torch.stack([e.codes for e in examples]),  # [B, K, F]
            "length": torch.tensor([e.length for e in examples]),
            "text": [e.text for e in examples],
            "start": torch.tensor([e.start for e in examples]),  # [B] first frame of each crop in its file
            "skipped": [s for e in examples for s in e.skipped]}
