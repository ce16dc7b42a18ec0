"""Specification of scale-out and robustness: the same entry point under ``torchrun``, and resuming a killed run.

A reference LM run on one process (global batch 4, 8 steps, with condition dropout, word dropout, text merging and
weight EMA all on) is compared with:
  - ``torchrun --nproc-per-node 2`` (gloo) with DDP, and with FSDP: same weights within 1e-5 (measured: 1.4e-6 to
    4.8e-6, float32 summation order; each process takes half of every global batch), while training moves them
    over 100x more (measured: 7.5e-3 from step 3 to step 8), so a no-op update cannot pass;
  - one process accumulating gradients over 2 micro-batches: same weights within 1e-5, same movement check;
  - a run killed with SIGKILL right after step 7 (last checkpoint: step 6) and continued with ``--resume``: the
    very same weights, bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train_lm import lm_config, make_codec, make_noise_clips

from yuefu.train.common import KILL_AT_STEP_ENV
from yuefu.train.config import LMTrainConfig, from_dict
from yuefu.train.lm_trainer import train_lm

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
DESCRIPTIONS = ["lo-fi hip hop with a warm piano", "rock band", "calm ambient pads with strings and a soft choir",
                "jazz trio", "a cheerful erhu melody over a rock beat", "traditional chinese folk music"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, t5_dir):
    root = tmp_path_factory.mktemp("dist")
    make_noise_clips(root / "data", DESCRIPTIONS, seconds=1.0)
    codec = make_codec(root / "codec")
    d = lm_config(root / "reference", root / "data", codec, t5_dir, **{
        "train.max_steps": STEPS, "checkpoint.every": 3, "ema.use": True, "ema.decay": 0.9,
        "data.token_cache": str(root / "tokens"), "data.cond_dropout": 0.3, "data.word_dropout": 0.3,
        "data.merge_text_p": 0.5, "optim.warmup_steps": 2, "log.num_samples": 0})
    path = root / "lm.yaml"
    path.write_text(yaml.safe_dump(d))
    train_lm(from_dict(LMTrainConfig, d))
    return root, path


def _weights(run: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / f"step_{step:08d}" / "state.pt", weights_only=True)
    return {**state["model"], **{f"ema.{k}": v for k, v in state["ema"].items()}}


def _cli(args: list[str], env: dict[str, str] | None = None, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "yuefu.train.cli", "train", "lm", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_end_with_the_weights_of_one(setup, mode):
    root, config = setup
    run = root / mode
    result = _cli([str(config), "--set", f"run_dir={run}", "--set", f"train.distributed={mode}"], processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 process(es)" in result.stdout
    one, two = _weights(root / "reference"), _weights(run)
    assert one.keys() == two.keys()
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    moved = max(float((one[k] - _weights(root / "reference", 3)[k]).abs().max()) for k in one)
    print(f"\n{mode}: 2 processes vs 1, max weight difference {diff:.2g} (weights moved {moved:.2g} since step 3)")
    assert diff < 1e-5
    assert moved > 100 * diff and moved > 1e-3  # the runs trained: agreement is not that of a no-op update


def test_gradient_accumulation_matches_one_batch(setup):
    root, config = setup
    d = yaml.safe_load(config.read_text())
    d["run_dir"], d["train"]["grad_accum"] = str(root / "accum"), 2
    train_lm(from_dict(LMTrainConfig, d))
    one, two = _weights(root / "reference"), _weights(root / "accum")
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    moved = max(float((one[k] - _weights(root / "reference", 3)[k]).abs().max()) for k in one)
    print(f"\n2 micro-batches of 2 vs 1 batch of 4: max weight difference {diff:.2g} (weights moved {moved:.2g} "
          "since step 3)")
    assert diff < 1e-5
    assert moved > 100 * diff and moved > 1e-3


def test_a_killed_run_resumes_exactly(setup):
    root, config = setup
    run = root / "killed"
    killed = _cli([str(config), "--set", f"run_dir={run}"], env={KILL_AT_STEP_ENV: "7"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no clean-up of any kind
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    assert not (run / "model").exists()

    resumed = _cli([str(config), "--set", f"run_dir={run}", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "(step 6)" in resumed.stdout
    one, two = _weights(root / "reference"), _weights(run)
    different = [k for k in one if not torch.equal(one[k], two[k])]
    print(f"\nkilled at step 7, resumed from step 6: {len(different)} of {len(one)} tensors differ")
    assert different == []
    # the exported model of the resumed run is the reference's, and loadable
    from yuefu.musicgen import MusicGen

    a = MusicGen.from_pretrained(str(root / "reference" / "model"), device="cpu").lm.state_dict()
    b = MusicGen.from_pretrained(str(run / "model"), device="cpu").lm.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
