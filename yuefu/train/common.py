"""What both trainers share around their loops: the run folder, seeding, resuming, stopping cleanly, data loaders."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from yuefu.data.dataset import GlobalBatchSampler
from yuefu.data.manifest import AudioEntry, load_entries, split_entries
from yuefu.errors import InvalidArgumentError
from yuefu.train import state as ckpt_state
from yuefu.train.config import DataConfig, to_dict
from yuefu.train.distributed import DistInfo, any_rank, barrier, gather_objects

# Test hook: the process kills itself (SIGKILL, no clean-up) right after this training step, to prove that a run
# killed at any moment resumes from its last checkpoint as if it had never stopped.
KILL_AT_STEP_ENV = "YUEFU_TRAIN_KILL_AT_STEP"


def setup(cfg: Any, info: DistInfo, resume: bool, log: Any = print) -> tuple[Path, dict[str, Any] | None]:
    """Threads, seed, the run folder (with ``config.yaml``), and the state to resume from (None: a fresh run)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    run_dir = Path(cfg.run_dir).expanduser()
    resume_state = None
    if resume:
        folder = ckpt_state.latest_checkpoint(run_dir)
        if folder is None:
            if info.is_main:
                log(f"--resume: no checkpoint in {run_dir} yet, starting a new run")
        else:
            resume_state = ckpt_state.load_state(folder)
            _warn_config_changes(resume_state.get("config", {}), to_dict(cfg), log if info.is_main else None)
            if info.is_main:
                log(f"resuming from {folder} (step {resume_state['step']})")
    elif ckpt_state.latest_checkpoint(run_dir) is not None:
        raise InvalidArgumentError(f"{run_dir} already holds a run: pass --resume to continue it, or choose "
                                   "another run_dir")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    barrier()
    return run_dir, resume_state


def _warn_config_changes(old: dict[str, Any], new: dict[str, Any], log: Any, prefix: str = "") -> None:
    if log is None:
        return
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            _warn_config_changes(a, b, log, f"{prefix}{key}.")
        elif a != b:
            log(f"warning: config {prefix}{key} changed since the checkpoint ({a!r} -> {b!r}); the run will "
                "not continue exactly as before")


def restore_rng(resume_state: dict[str, Any], info: DistInfo, log: Any = print) -> None:
    states = resume_state.get("rng") or []
    if len(states) == info.world:
        ckpt_state.set_rng_state(states[info.rank])
    elif info.is_main:
        log(f"warning: checkpoint written by {len(states)} processes, now {info.world}: random streams restart")


def gathered_rng() -> list[dict[str, Any]]:
    return gather_objects(ckpt_state.rng_state())


def datasets(data: DataConfig, seed: int, info: DistInfo, log: Any = print) -> tuple[list[AudioEntry],
                                                                                      list[AudioEntry]]:
    """(train, valid) entries: the valid set from ``valid_path``, else a deterministic split by file."""
    quiet = (lambda _msg: None) if not info.is_main else log
    entries, root = load_entries(data.path, report=quiet)
    if data.valid_path:
        valid, _ = load_entries(data.valid_path, report=quiet)
        train = entries
    else:
        train, valid = split_entries(entries, root, data.valid_fraction, seed)
    if not train:
        raise InvalidArgumentError(f"data.path {data.path}: no readable audio files")
    return train, valid


def loader(dataset: torch.utils.data.Dataset, sampler: GlobalBatchSampler | list, collate: Any,
           num_workers: int) -> torch.utils.data.DataLoader:
    # its own generator: creating a loader must not draw from the global RNG that the training state restores
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                                       persistent_workers=False, generator=torch.Generator().manual_seed(0),
                                       worker_init_fn=_worker_ignores_sigterm if num_workers else None)


def _worker_ignores_sigterm(_worker_id: int) -> None:
    """Schedulers and ``timeout`` send SIGTERM to the whole process group. A loader worker that died of it would make
    the main process fail ("DataLoader worker ... killed by signal") before it could checkpoint; so workers ignore
    it, and the main process (``StopRequest``) stops them with the loader when it has saved."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def valid_batches(num_items: int, global_batch: int, batches: int, info: DistInfo) -> list[list[tuple[int, int]]]:
    """Fixed validation batches (this rank's share): item i of the set is (i mod N, position i)."""
    local = global_batch // info.world
    out = []
    for b in range(min(batches, max(1, -(-num_items // global_batch)))):
        first = b * global_batch + info.rank * local
        out.append([(p % num_items, p) for p in range(first, first + local)])
    return out


class SkipCounter:
    """Counts files skipped mid-run (corrupt, truncated, vanished) and reports each one once."""

    def __init__(self, info: DistInfo, log: Any, total: int = 0):
        self.info, self.log, self.total = info, log, total
        self.seen: set[str] = set()

    def add(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            self.total += 1
            if path not in self.seen:
                self.seen.add(path)
                msg = f"skipped {path}: {reason}"
                if self.info.is_main:
                    self.log(msg)
                else:
                    print(f"[rank {self.info.rank}] {msg}", file=sys.stderr, flush=True)


class StopRequest:
    """SIGTERM (cluster pre-emption, ``kill``) asks the run to checkpoint after the current step and stop."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def check(self) -> bool:
        return any_rank(self.requested)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def maybe_kill(step: int) -> None:
    target = os.environ.get(KILL_AT_STEP_ENV)
    if target is not None and int(target) == step:
        os.kill(os.getpid(), signal.SIGKILL)
