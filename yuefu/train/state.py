"""Checkpoints of a training run, and resuming from them.

A run folder holds ``checkpoints/step_00001000/`` folders, each with ``model/`` (the exported model, loadable on
its own) and ``state.pt`` (everything needed to continue exactly: weights as trained, optimizer, scheduler, loss
scaler, EMA, every rank's RNG states, the data position, counters). A checkpoint folder is assembled under a
temporary name and renamed into place, then ``checkpoints/latest`` (written the same way) names it: a run killed at
any moment leaves the previous checkpoint intact, and ``--resume`` finds the newest complete one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yuefu.errors import CheckpointError

STATE_FILE = "state.pt"
MODEL_DIR = "model"


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)}  # tensors: loadable with weights_only
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def write_checkpoint_folder(run_dir: Path, step: int, state: dict[str, Any],
                            write_model: Callable[[Path], None], keep_last: int) -> Path:
    """Atomically create ``checkpoints/step_N`` with ``write_model(folder / "model")`` and ``state.pt``."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        write_model(tmp / MODEL_DIR)
        torch.save(state, tmp / STATE_FILE)
        _fsync_tree(tmp)
        if final.exists():  # the same step written by an earlier attempt of this run
            old = root / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(root / "latest", final.name + "\n")
    _prune(root, keep_last, keep=final.name)
    return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prune(root: Path, keep_last: int, keep: str) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step_*"):  # temporaries of a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of the run (``latest`` if it is valid, else the highest step)."""
    root = checkpoint_dir(run_dir)
    pointer = root / "latest"
    if pointer.exists():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    complete = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return complete[-1] if complete else None


def load_state(folder: Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder (loaded without executing code)."""
    path = folder / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or not ours
        raise CheckpointError(f"{path}: cannot load the training state ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def replace_folder(src_writer: Callable[[Path], None], dest: Path) -> Path:
    """Write a folder with ``src_writer(tmp)`` and swap it in for ``dest`` (which may exist)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        src_writer(tmp_root / "x")
        if dest.exists():
            old = dest.parent / f".{dest.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp_root / "x", dest)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return dest
