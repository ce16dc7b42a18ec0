"""Training examples: random crops of audio files, resampled to the model's rate, in global batches per step.

Determinism is what makes distributed training and resuming exact: the examples of training step ``s`` are the
global positions ``s * G .. s * G + G - 1`` (G the global batch) of an endless stream that walks through a fresh
seeded permutation of the files each epoch; every random choice about an example (crop offset, text dropout) is
drawn from a generator seeded by (seed, position). So step ``s`` holds the same examples whether one process
takes all G of them or N processes take G / N each, and a resumed run needs only the step number.

A file that fails to load mid-run (corrupt, truncated, deleted) is replaced by the next readable file in the list
and reported in the batch (``skipped``), so the trainer can count and log it; it is never fatal.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch

from yuefu import audio
from yuefu.data.manifest import AudioEntry
from yuefu.data.sidecar import TextAugment, plain_text, training_text
from yuefu.errors import AudioFileError


def example_rng(seed: int, position: int, salt: str = "") -> random.Random:
    """The generator of every random choice about the example at global ``position``."""
    digest = hashlib.sha256(f"{seed}:{position}:{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class GlobalBatchSampler:
    """For each step from ``start_step`` to ``max_steps``: this rank's share of the step's global batch, as a list
    of (file index, global position) pairs. Rank r takes positions [r * G/N, (r + 1) * G/N) of the step."""

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 start_step: int = 0, max_steps: int | None = None):
        if num_items <= 0:
            raise ValueError("no items to sample from")
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by the {world} processes")
        self.num_items, self.global_batch, self.rank, self.world = num_items, global_batch, rank, world
        self.local_batch = global_batch // world
        self.seed, self.start_step, self.max_steps = seed, start_step, max_steps
        self._perms: OrderedDict[int, list[int]] = OrderedDict()

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.num_items, generator=gen).tolist()
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
        return self._perms[epoch]

    def epoch_of(self, step: int) -> int:
        return step * self.global_batch // self.num_items

    def indices(self, step: int) -> list[tuple[int, int]]:
        first = step * self.global_batch + self.rank * self.local_batch
        n = self.num_items
        return [(self._perm(p // n)[p % n], p) for p in range(first, first + self.local_batch)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.max_steps is None or step < self.max_steps:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:
        if self.max_steps is None:
            raise TypeError("endless sampler")
        return max(0, self.max_steps - self.start_step)


def to_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """[C, T] -> [channels, T]: mono is the mean, stereo from mono duplicates it, extra channels are dropped."""
    if wav.shape[0] == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if wav.shape[0] == 1:
        return wav.expand(channels, -1).contiguous()
    if wav.shape[0] > channels:
        return wav[:channels]
    raise AudioFileError(f"cannot make {channels} channels from {wav.shape[0]}")


def read_segment(path, start: float, seconds: float | None, sample_rate: int, channels: int,
                 expected_seconds: float | None = None) -> torch.Tensor:
    """``seconds`` of audio from ``start`` (None: to the end) as [channels, n] at ``sample_rate``.

    Seeks where soundfile can (no full decode for a crop). AudioFileError for a file that yields fewer samples than
    its header promises, or is shorter than ``expected_seconds`` (its length when it was indexed): truncated.
    """
    try:
        with sf.SoundFile(path) as f:
            sr, total = f.samplerate, f.frames
            if expected_seconds is not None and total < (expected_seconds - 0.01) * sr:
                raise AudioFileError(f"cannot read '{path}': truncated or changed since indexing ({total / sr:.2f} s, "
                                     f"indexed as {expected_seconds:.2f} s)")
            first = min(int(round(start * sr)), max(total - 1, 0))
            n = total - first if seconds is None else min(math.ceil(seconds * sr) + 1, total - first)
            f.seek(first)
            data = f.read(n, dtype="float32", always_2d=True)  # [n, C]
        if data.shape[0] < n:
            raise AudioFileError(f"cannot read '{path}': truncated (header promises {total} samples, got "
                                 f"{first + data.shape[0]})")
        wav = torch.from_numpy(np.ascontiguousarray(data.T))
    except AudioFileError:
        raise
    except (sf.SoundFileError, RuntimeError, ValueError):
        wav, sr = audio.read(path)  # not seekable by soundfile: decode whole (PyAV) or one-line error
        first = int(round(start * sr))
        wav = wav[:, first:] if seconds is None else wav[:, first:first + math.ceil(seconds * sr) + 1]
    if wav.shape[-1] == 0:
        raise AudioFileError(f"cannot read '{path}': no samples at {start:.2f} s")
    wav = to_channels(wav, channels)
    if sr != sample_rate:
        wav = audio.resample(wav, sr, sample_rate)
    if seconds is not None:
        wav = wav[:, : int(round(seconds * sample_rate))]
    return wav


@dataclass
class Example:
    wav: torch.Tensor  # [C, T] at the model rate, zero-padded to the segment
    length: int  # samples before padding
    text: str | None
    skipped: list[tuple[str, str]]  # files that failed on the way to this example: (path, reason)


class AudioDataset(torch.utils.data.Dataset):
    """Random ``segment_seconds`` crops of ``entries`` at ``sample_rate``; indexed by (file index, position)."""

    def __init__(self, entries: list[AudioEntry], sample_rate: int, channels: int, segment_seconds: float,
                 seed: int = 0, text: TextAugment | None = None):
        self.entries = entries
        self.sample_rate, self.channels = sample_rate, channels
        self.segment_seconds = segment_seconds
        self.segment = int(round(segment_seconds * sample_rate))
        self.seed = seed
        self.text = text  # None: plain descriptions, no augmentation

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, index: int, position: int) -> Example:
        entry = self.entries[index]
        rng = example_rng(self.seed, position)
        offset = rng.random() * max(0.0, entry.duration - self.segment_seconds)
        wav = read_segment(entry.path, offset, self.segment_seconds, self.sample_rate, self.channels, entry.duration)
        length = wav.shape[-1]
        if length < self.segment:
            wav = torch.nn.functional.pad(wav, (0, self.segment - length))
        text = plain_text(entry.info) if self.text is None else training_text(entry.info, rng, self.text)
        return Example(wav, length, text, [])

    def __getitem__(self, item: tuple[int, int]) -> Example:
        index, position = item
        skipped: list[tuple[str, str]] = []
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            try:
                example = self._load(i, position)
                example.skipped = skipped
                return example
            except (AudioFileError, OSError, RuntimeError, ValueError) as e:
                skipped.append((str(self.entries[i].path), _one_line(e)))
        raise AudioFileError(f"no readable audio: all {len(self.entries)} files failed (first: {skipped[0][1]})")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


def collate_audio(examples: list[Example]) -> dict[str, Any]:
    return {"wav": torch.stack([e.wav for e in examples]),  # [B, C, T]
            "length": torch.tensor([e.length for e in examples]),
            "text": [e.text for e in examples],
            "skipped": [s for e in examples for s in e.skipped]}
