"""What a run shows and records: a tqdm progress bar, scalars in ``metrics.csv`` (step, split, name, value) and
optionally TensorBoard, audio samples under ``samples/step_N/``. Only rank 0 writes anything."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

from yuefu.errors import InvalidArgumentError
from yuefu.train.config import LogConfig


class IntervalMean:
    """Per-step training scalars averaged over a log interval, so that a logged row stands for every step since the
    previous row rather than for the one step that landed on it. Each name keeps its own count (the discriminator's
    loss, say, exists only on the steps it trains)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        """The means since the last ``pop``; then start over."""
        means = {name: total / self.counts[name] for name, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


class TrainLogger:
    def __init__(self, run_dir: Path, cfg: LogConfig, is_main: bool, max_steps: int, start_step: int, desc: str):
        self.run_dir, self.cfg, self.is_main = run_dir, cfg, is_main
        self.bar = None
        self.tb = None
        self.csv_path = run_dir / "metrics.csv"
        if not is_main:
            return
        if cfg.csv:
            _truncate_csv(self.csv_path, start_step)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise InvalidArgumentError("log.tensorboard needs the tensorboard package (pip install tensorboard)"
                                           ) from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step)
        if cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    def write(self, message: str) -> None:
        """A line of text above the progress bar (rank 0 only)."""
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def advance(self, postfix: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def scalars(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.is_main or not metrics:
            return
        if self.cfg.csv:
            new = not self.csv_path.exists()
            with open(self.csv_path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["step", "split", "name", "value"])
                for name, value in metrics.items():
                    w.writerow([step, split, name, f"{float(value):.6g}"])
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", float(value), step)

    def audio(self, step: int, name: str, wav: torch.Tensor, sample_rate: int) -> Path | None:
        """Save [C, T] as samples/step_N/NAME.wav (and to TensorBoard)."""
        if not self.is_main:
            return None
        from yuefu import audio

        folder = self.run_dir / "samples" / f"step_{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = audio.write(folder / f"{name}.wav", wav.detach().float().cpu(), sample_rate)
        if self.tb is not None:
            self.tb.add_audio(name, wav.detach().float().cpu().mean(0), step, sample_rate=sample_rate)
        return path

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_csv(path: Path, start_step: int) -> None:
    """On resume, drop the rows of steps after the checkpoint (the killed run's lost work)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= start_step]
    if len(keep) == len(rows):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)


def format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
