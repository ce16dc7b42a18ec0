"""Read a ``.safetensors`` file into ordinary tensors with plain reads: no memory map, no second copy.

``safetensors.torch.load_file`` memory-maps the file. Every page it touches stays resident while any tensor of the
file lives, so a converted tensor (a q/k/v concatenation, a dtype change) costs its mmap pages on top of its copy:
about 1 GB more peak memory for musicgen-small. Reading each tensor straight into its own storage makes the
checkpoint cost its size once. The header is validated before anything is allocated (known dtypes, offsets inside
the file, sizes that match the shapes, no overlaps), so a corrupt or hostile file is refused in one line.

The format: 8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets":
[begin, end]}, "__metadata__": {...}}``, then the data; offsets count from the first byte after the header.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from pathlib import Path

import torch

from yuefu.errors import CheckpointError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER = 100 * 1024 * 1024  # as the safetensors library


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of ``path`` (CPU, contiguous, owned). Raises CheckpointError on any malformed file."""
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
            out: dict[str, torch.Tensor] = {}
            for name, dtype, shape, begin, end in sorted(entries, key=lambda e: e[3]):
                t = torch.empty(shape, dtype=dtype)
                if end > begin:
                    f.seek(8 + n + begin)
                    view = memoryview(t.view(-1).view(torch.uint8).numpy())
                    if f.readinto(view) != end - begin:
                        raise CheckpointError(f"{path}: truncated (tensor {name!r} ends past the file)")
                out[name] = t
            return out
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read weights ({e.strerror or e})") from None


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
