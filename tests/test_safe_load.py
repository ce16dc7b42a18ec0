"""yuefu.checkpoints.safe_load: plain checkpoints load; pickles that run code are refused before they run."""

from __future__ import annotations

import argparse
import os
import pickle
import shlex

import numpy as np
import pytest
import torch

from yuefu.checkpoints.safe_load import load_torch_pickle
from yuefu.errors import CheckpointError


class RunsAShellCommand:
    """Unpickling this calls os.system(command): what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def audiocraft_like_checkpoint() -> dict:
    """The layout of audiocraft's exported state_dict.bin."""
    return {
        "best_state": {
            "emb.0.weight": torch.randn(2049, 16),
            "transformer.layers.0.norm1.weight": torch.ones(16, dtype=torch.float16),
            "step": torch.tensor(7),
        },
        "xp.cfg": "lm:\n  dim: 16\n  num_heads: 2\n",
        "version": "1.0",
        "exported": True,
    }


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message and len(message) < 400
    return message


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_plain_checkpoint_loads_with_its_tensors_and_strings(tmp_path, zip_format):
    saved = audiocraft_like_checkpoint()
    path = tmp_path / "state_dict.bin"
    torch.save(saved, path, _use_new_zipfile_serialization=zip_format)

    loaded = load_torch_pickle(path)

    assert loaded.keys() == saved.keys()
    assert {k: loaded[k] for k in ("xp.cfg", "version", "exported")} == {
        k: saved[k] for k in ("xp.cfg", "version", "exported")
    }
    for name, tensor in saved["best_state"].items():
        assert loaded["best_state"][name].dtype == tensor.dtype
        assert loaded["best_state"][name].device.type == "cpu"
        assert torch.equal(loaded["best_state"][name], tensor)


def test_the_payload_is_live_an_unrestricted_unpickle_runs_it(tmp_path):
    # Guards the tests below: they prove something only if loading the file the ordinary way runs the command.
    marker = tmp_path / "ran"
    data = pickle.dumps(RunsAShellCommand(f"touch {shlex.quote(str(marker))}"))
    pickle.loads(data)  # deliberately unsafe
    assert marker.exists()


def save_with_torch_zip(obj, path):
    torch.save(obj, path)


def save_with_torch_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def save_as_pickle_protocol_2(obj, path):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def save_as_pickle_default_protocol(obj, path):
    path.write_bytes(pickle.dumps(obj))


@pytest.mark.parametrize(
    "save",
    [save_with_torch_zip, save_with_torch_legacy, save_as_pickle_protocol_2, save_as_pickle_default_protocol],
)
@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-state-dict"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, save, nested):
    marker = tmp_path / "ran"
    payload = RunsAShellCommand(f"touch {shlex.quote(str(marker))}")
    obj = {"best_state": {"w": torch.zeros(2), "x": payload}, "version": "1.0"} if nested else payload
    path = tmp_path / "evil.th"
    save(obj, path)

    with pytest.raises(CheckpointError) as error:
        load_torch_pickle(path)

    assert not marker.exists()
    message = one_line(error)
    assert str(path) in message
    if save in (save_with_torch_zip, save_with_torch_legacy):
        assert "refused" in message and "system" in message
    elif save is save_as_pickle_protocol_2:  # refused at the first global it meets: a tensor's or os.system
        assert "refused" in message
    # Protocol 4+ pickles stop even earlier, at an opcode the safe loader does not read.


@pytest.mark.parametrize(
    "obj",
    [argparse.Namespace(lr=0.1), np.float32(1.0), np.zeros(3)],
    ids=["argparse-namespace", "numpy-scalar", "numpy-array"],
)
def test_objects_other_than_tensors_and_containers_are_refused(tmp_path, obj):
    path = tmp_path / "state.pt"
    torch.save({"best_state": {"w": torch.zeros(2)}, "extra": obj}, path)
    with pytest.raises(CheckpointError) as error:
        load_torch_pickle(path)
    assert "refused" in one_line(error)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.5, 0.02, 0.0])
def test_a_truncated_checkpoint_raises_a_clear_error(tmp_path, zip_format, keep):
    path = tmp_path / "state_dict.bin"
    torch.save(audiocraft_like_checkpoint(), path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(CheckpointError) as error:
        load_torch_pickle(path)
    message = one_line(error)
    assert "truncated or corrupt" in message and "refused" not in message


def test_a_missing_checkpoint_raises_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError) as error:
        load_torch_pickle(tmp_path / "nope.bin")
    assert "not found" in one_line(error)
