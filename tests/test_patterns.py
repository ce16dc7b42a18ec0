"""Codebook patterns: layouts follow their definitions, and build/revert are inverse."""

from __future__ import annotations

import pytest
import torch

from yuefu.lm.patterns import make_pattern

SPECIAL = 2048


def test_delay_pattern_follows_its_definition():
    """Step 0 is empty; step s holds code (t = s - 1 - delay_k, k) where t is in range (facts file)."""
    K, T, delays = 4, 7, [0, 1, 2, 3]
    p = make_pattern("delay", K, T, delays)
    assert p.num_steps == T + max(delays) + 1
    codes = torch.arange(K * T).view(1, K, T)
    seq = p.build(codes, SPECIAL)[0]
    for k in range(K):
        for s in range(p.num_steps):
            t = s - 1 - delays[k]
            assert seq[k, s].item() == (codes[0, k, t].item() if 0 <= t < T else SPECIAL)


def test_stereo_delays_interleave_channels():
    p = make_pattern("delay", 8, 5, [0, 0, 1, 1, 2, 2, 3, 3])
    assert torch.equal(p.timestep[0], p.timestep[1])  # L1 and R1 at the same steps
    assert torch.equal(p.timestep[2][1:], p.timestep[0][:-1])  # L2 one step behind L1


@pytest.mark.parametrize("name,K", [("delay", 4), ("parallel", 4), ("flatten", 4), ("coarse_first", 4),
                                    ("delay", 8)])
def test_build_then_revert_is_identity(name, K):
    T = 9
    p = make_pattern(name, K, T)
    codes = torch.randint(0, SPECIAL, (3, K, T))
    seq = p.build(codes, SPECIAL)
    assert seq.shape == (3, K, p.num_steps)
    assert (seq[..., 0] == SPECIAL).all()  # the start step is empty
    assert torch.equal(p.revert(seq), codes)
    # every code appears exactly once
    assert int(p.valid.sum()) == K * T


def test_flatten_is_one_code_per_step_and_coarse_first_puts_codebook_0_first():
    K, T = 4, 5
    flat = make_pattern("flatten", K, T)
    assert flat.num_steps == K * T + 1
    assert (flat.valid.sum(0)[1:] == 1).all()
    cf = make_pattern("coarse_first", K, T)
    assert (cf.timestep[0, 1:T + 1] == torch.arange(T)).all()
    assert (cf.timestep[1:, 1:T + 1] < 0).all()


def test_first_step_with_frame():
    p = make_pattern("delay", 4, 10)
    assert p.first_step_with_frame(0) == 1
    assert p.first_step_with_frame(6) == 7  # codebook 0, frame 6
    assert p.first_step_with_frame(10) == p.num_steps
