"""yuefu.checkpoints.safetensors_read against the safetensors library (the reference), and on corrupt files."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from yuefu.checkpoints.safetensors_read import read_safetensors
from yuefu.errors import CheckpointError


def test_reads_what_the_library_reads(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(7, 5, generator=g),
        "bf16": torch.randn(3, 4, generator=g).bfloat16(),
        "f16": torch.randn(9, generator=g).half(),
        "i64": torch.arange(-5, 6),
        "i8": torch.randint(-128, 127, (4, 4), dtype=torch.int8, generator=g),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ref, got = load_file(str(path)), read_safetensors(path)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape
        assert torch.equal(got[k], ref[k]), k
        assert got[k].untyped_storage().nbytes() == ref[k].numel() * ref[k].element_size()  # owned, one tensor


def _file(tmp_path, header: object, data: bytes = b"", raw_header: bytes | None = None):
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


@pytest.mark.parametrize("case", ["short", "huge_header", "not_json", "not_mapping", "bad_dtype", "size_mismatch",
                                  "past_end", "overlap", "negative_shape"])
def test_corrupt_files_are_refused_in_one_line(tmp_path, case):
    t = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    path = {
        "short": lambda: (tmp_path / "s.safetensors").write_bytes(b"\x01\x02") and tmp_path / "s.safetensors",
        "huge_header": lambda: (tmp_path / "h.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
        and tmp_path / "h.safetensors",
        "not_json": lambda: _file(tmp_path, None, raw_header=b"\xff\xfe not json"),
        "not_mapping": lambda: _file(tmp_path, [1, 2, 3]),
        "bad_dtype": lambda: _file(tmp_path, {"a": {**t, "dtype": "Q7"}}, b"\0" * 8),
        "size_mismatch": lambda: _file(tmp_path, {"a": {**t, "shape": [3]}}, b"\0" * 8),
        "past_end": lambda: _file(tmp_path, {"a": {**t, "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
        "overlap": lambda: _file(tmp_path, {"a": t, "b": {**t, "data_offsets": [4, 12]}}, b"\0" * 12),
        "negative_shape": lambda: _file(tmp_path, {"a": {**t, "shape": [-2, -1]}}, b"\0" * 8),
    }[case]()
    with pytest.raises(CheckpointError) as e:
        read_safetensors(path)
    assert "\n" not in str(e.value)


def test_a_lazy_read_gives_the_same_tensors_when_loaded(tmp_path):
    from yuefu.checkpoints.safetensors_read import LazyTensor, cat, materialize

    g = torch.Generator().manual_seed(1)
    tensors = {"a": torch.randn(3, 5, generator=g), "b": torch.randn(2, 5, generator=g), "h": torch.randn(4).half(),
               "empty": torch.zeros(0, 5)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    lazy = read_safetensors(path, lazy=True)
    assert all(isinstance(v, LazyTensor) for v in lazy.values())
    assert lazy["a"].shape == (3, 5) and lazy["h"].dtype == torch.float16
    ref = load_file(str(path))
    for k in ref:
        assert torch.equal(materialize(lazy[k]), ref[k]), k
    joined = cat([lazy["a"], lazy["b"], lazy["empty"]], dim=0)
    assert isinstance(joined, LazyTensor) and joined.shape == (5, 5)
    assert torch.equal(joined.load(), torch.cat([ref["a"], ref["b"]]))
    assert torch.equal(cat([ref["a"], ref["b"]]), torch.cat([ref["a"], ref["b"]]))  # eager parts: plain cat


def test_a_lazy_read_refuses_a_file_cut_after_its_header_was_read(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(64), "b": torch.randn(64)}, str(path))
    lazy = read_safetensors(path, lazy=True)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        lazy["b"].load()
    path.unlink()
    with pytest.raises(CheckpointError, match="cannot read weights"):
        lazy["a"].load()
