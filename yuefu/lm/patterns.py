"""Codebook interleaving patterns: how K parallel code streams become one sequence of LM steps.

A pattern is data: ``timestep[k, s]`` says which frame of codebook ``k`` sits at sequence step ``s`` (-1: the
cell is empty and holds the special token). Step 0 is always empty: it is the start step the LM conditions on.
Every pattern (delay, parallel, flattening, coarse-first) is such a table; ``build`` and ``revert`` are the only
operations, so the LM, training loss and generation loop never special-case one pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CodebookPattern:
    timestep: torch.Tensor  # [K, S] long: frame index at (k, s), -1 if the cell is empty
    num_frames: int  # T

    @property
    def num_codebooks(self) -> int:
        return self.timestep.shape[0]

    @property
    def num_steps(self) -> int:
        """S: sequence steps, the empty start step included."""
        return self.timestep.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        """[K, S] bool: cells that hold a code."""
        return self.timestep >= 0

    def step_of(self) -> torch.Tensor:
        """[K, T] long: the step at which each (k, t) code sits."""
        K, S = self.timestep.shape
        out = torch.full((K, self.num_frames), -1, dtype=torch.long)
        k_idx, s_idx = torch.nonzero(self.valid, as_tuple=True)
        out[k_idx, self.timestep[k_idx, s_idx]] = s_idx
        return out

    def build(self, codes: torch.Tensor, special_token: int) -> torch.Tensor:
        """codes [B, K, T] -> sequence [B, K, S], empty cells set to ``special_token``."""
        B, K, T = codes.shape
        assert K == self.num_codebooks and T == self.num_frames, (codes.shape, self.timestep.shape)
        t = self.timestep.to(codes.device)
        seq = torch.gather(codes, 2, t.clamp(min=0).unsqueeze(0).expand(B, -1, -1))
        return torch.where(t.unsqueeze(0) >= 0, seq, torch.full_like(seq, special_token))

    def revert(self, sequence: torch.Tensor) -> torch.Tensor:
        """sequence [B, K, S] -> codes [B, K, T]."""
        B, K, S = sequence.shape
        assert K == self.num_codebooks and S == self.num_steps, (sequence.shape, self.timestep.shape)
        steps = self.step_of().to(sequence.device)
        return torch.gather(sequence, 2, steps.unsqueeze(0).expand(B, -1, -1))

    def first_step_with_frame(self, t: int) -> int:
        """First step that holds a cell of frame >= t (the first step to generate after a t-frame prompt)."""
        hits = torch.nonzero((self.timestep >= t).any(dim=0))
        return int(hits[0]) if len(hits) else self.num_steps


def _from_cells(cells_per_step: list[list[tuple[int, int]]], num_codebooks: int, num_frames: int) -> CodebookPattern:
    """Layout from a list of steps, each a list of (t, k) cells; an empty start step is prepended."""
    timestep = torch.full((num_codebooks, len(cells_per_step) + 1), -1, dtype=torch.long)
    for s, cells in enumerate(cells_per_step, start=1):
        for t, k in cells:
            assert timestep[k, s] < 0, f"two cells of codebook {k} at step {s}"
            timestep[k, s] = t
    return CodebookPattern(timestep, num_frames)


def delay_pattern(num_codebooks: int, num_frames: int, delays: list[int]) -> CodebookPattern:
    """MusicGen's pattern: codebook k is shifted right by delays[k]; S = T + max(delays) + 1."""
    assert len(delays) == num_codebooks
    S = num_frames + max(delays) + 1
    s = torch.arange(S).unsqueeze(0)  # [1, S]
    t = s - 1 - torch.tensor(delays).unsqueeze(1)  # [K, S]
    t = torch.where((t >= 0) & (t < num_frames), t, torch.full_like(t, -1))
    return CodebookPattern(t, num_frames)


def parallel_pattern(num_codebooks: int, num_frames: int) -> CodebookPattern:
    """All codebooks of a frame predicted at the same step."""
    return delay_pattern(num_codebooks, num_frames, [0] * num_codebooks)


def flatten_pattern(num_codebooks: int, num_frames: int) -> CodebookPattern:
    """One code per step, frame by frame: K*T steps."""
    steps = [[(t, k)] for t in range(num_frames) for k in range(num_codebooks)]
    return _from_cells(steps, num_codebooks, num_frames)


def coarse_first_pattern(num_codebooks: int, num_frames: int, delays: list[int] | None = None) -> CodebookPattern:
    """VALL-E-like: the whole first codebook, then the other codebooks in parallel (optionally delayed)."""
    rest = num_codebooks - 1
    delays = delays or [0] * rest
    assert len(delays) == rest
    steps: list[list[tuple[int, int]]] = [[(t, 0)] for t in range(num_frames)]
    for s in range(num_frames + max(delays, default=0)):
        cells = [(s - d, k + 1) for k, d in enumerate(delays) if 0 <= s - d < num_frames]
        steps.append(cells)
    return _from_cells(steps, num_codebooks, num_frames)


def make_pattern(name: str, num_codebooks: int, num_frames: int, delays: list[int] | None = None) -> CodebookPattern:
    """Pattern by name, as in the checkpoint config (``codebooks_pattern.modeling``)."""
    if name == "delay":
        return delay_pattern(num_codebooks, num_frames, delays if delays is not None else list(range(num_codebooks)))
    if name == "parallel":
        return parallel_pattern(num_codebooks, num_frames)
    if name in ("flatten", "unroll"):
        return flatten_pattern(num_codebooks, num_frames)
    if name in ("coarse_first", "valle"):
        return coarse_first_pattern(num_codebooks, num_frames, delays)
    raise ValueError(f"unknown codebook pattern {name!r} (expected delay, parallel, flatten or coarse_first)")
