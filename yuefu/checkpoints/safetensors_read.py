"""Read a ``.safetensors`` file into ordinary tensors with plain reads: no memory map, no second copy.

``safetensors.torch.load_file`` memory-maps the file. Every page it touches stays resident while any tensor of the
file lives, so a converted tensor (a q/k/v concatenation, a dtype change) costs its mmap pages on top of its copy:
about 1 GB more peak memory for musicgen-small. Reading each tensor straight into its own storage makes the
checkpoint cost its size once. The header is validated before anything is allocated (known dtypes, offsets inside
the file, sizes that match the shapes, no overlaps), so a corrupt or hostile file is refused in one line.

``lazy=True`` validates the header and returns :class:`LazyTensor` placeholders (shape and dtype now, the bytes when
``load()`` is called): a loader that converts or quantizes the LM one tensor at a time then never holds the whole
file, so loading musicgen-small in int8 peaks near its int8 size instead of its fp32 size.

The format: 8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {...}}``, then the data; offsets count from the first byte after the header.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from yuefu.errors import CheckpointError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER = 100 * 1024 * 1024  # as the safetensors library


class LazyTensor:
    """A checkpoint tensor not read yet: ``shape`` and ``dtype`` now, the data from ``load()`` (each call reads)."""

    __slots__ = ("shape", "dtype", "_read")

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, read: Callable[[], torch.Tensor]):
        self.shape, self.dtype, self._read = torch.Size(shape), dtype, read

    def load(self) -> torch.Tensor:
        return self._read()

    def __repr__(self) -> str:
        return f"LazyTensor({list(self.shape)}, {self.dtype})"


def materialize(v: torch.Tensor | LazyTensor) -> torch.Tensor:
    """The tensor itself: ``v`` if it is one, else what ``v.load()`` reads."""
    return v.load() if isinstance(v, LazyTensor) else v


def materialize_all(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: materialize(v) for k, v in sd.items()}


def cat(parts: list[torch.Tensor | LazyTensor], dim: int = 0) -> torch.Tensor | LazyTensor:
    """``torch.cat`` that stays lazy when any part is: the parts are read when the result is loaded."""
    if not any(isinstance(p, LazyTensor) for p in parts):
        return torch.cat(parts, dim)  # type: ignore[arg-type]
    shape = list(parts[0].shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    return LazyTensor(tuple(shape), parts[0].dtype, lambda: torch.cat([materialize(p) for p in parts], dim))


def read_safetensors(path: str | os.PathLike, lazy: bool = False) -> dict[str, Any]:
    """All tensors of ``path`` (CPU, contiguous, owned), or with ``lazy`` :class:`LazyTensor` placeholders for
    them. Raises CheckpointError on any malformed file (for a lazy read: the header now, the data at load)."""
    path = Path(path)
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        from safetensors.torch import load_file

        return {k: v.clone() for k, v in load_file(str(path)).items()}
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than its header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} does not fit the file)")
            try:
                header = json.loads(f.read(n))
            except (ValueError, UnicodeDecodeError):
                raise CheckpointError(f"{path}: corrupt safetensors header (not JSON)") from None
            entries = _check_header(header, size - 8 - n, path)
            if lazy:
                return {name: LazyTensor(tuple(shape), dtype,
                                         _reader(path, name, dtype, shape, 8 + n + begin, end - begin))
                        for name, dtype, shape, begin, end in entries}
            out: dict[str, Any] = {}
            for name, dtype, shape, begin, end in sorted(entries, key=lambda e: e[3]):
                out[name] = _read_into(f, path, name, dtype, shape, 8 + n + begin, end - begin)
            return out
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read weights ({e.strerror or e})") from None


def _read_into(f: Any, path: Path, name: str, dtype: torch.dtype, shape: list[int], offset: int,
               nbytes: int) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype)
    if nbytes:
        f.seek(offset)
        if f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy())) != nbytes:
            raise CheckpointError(f"{path}: truncated (tensor {name!r} ends past the file)")
    return t


def _reader(path: Path, name: str, dtype: torch.dtype, shape: list[int], offset: int,
            nbytes: int) -> Callable[[], torch.Tensor]:
    def read() -> torch.Tensor:
        try:
            with path.open("rb") as f:
                return _read_into(f, path, name, dtype, shape, offset, nbytes)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read weights ({e.strerror or e})") from None

    return read


def _check_header(header: object, data_size: int, path: Path) -> list[tuple[str, torch.dtype, list[int], int, int]]:
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a mapping)")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header entry {name!r}") from None
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_size or end - begin != nbytes:
            raise CheckpointError(f"{path}: tensor {name!r} has inconsistent offsets or size (corrupt file)")
        entries.append((name, dtype, shape, begin, end))
    last = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: e[3]):
        if begin < last:
            raise CheckpointError(f"{path}: tensor {name!r} overlaps another one (corrupt file)")
        last = max(last, end)
    return entries
