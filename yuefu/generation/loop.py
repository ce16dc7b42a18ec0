"""The generation loop: one loop for every mode.

It prefills the conditions (and any fixed prompt tokens), then steps through the codebook pattern, sampling one
pattern step per LM call, with conditional and unconditional rows in one batch for classifier-free guidance.
Modes are parameters: a continuation is a ``prompt``; melody and other prepended conditions are ``prefix``
tensors; a beat clock is a per-step ``clock`` tensor; long-form calls it once per window with the previous
window's tail as ``prompt``; streaming reads the frames that :func:`iter_generate` reports complete after each
step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from yuefu.generation.sampling import SamplingParams, sample_next_token
from yuefu.lm.model import LMModel
from yuefu.lm.patterns import CodebookPattern
from yuefu.memory import release_free_memory

ProgressCallback = Callable[[int, int], None]  # (generated_steps, total_steps)

UNKNOWN = -1  # token value of cells not generated yet


@dataclass
class Conditions:
    """Encoded conditions of a batch of B items, and their null versions for CFG (same shapes)."""

    cross: torch.Tensor | None = None  # [B, L, D] cross-attention source
    prefix: torch.Tensor | None = None  # [B, P, D] prepended to the sequence
    null_cross: torch.Tensor | None = None
    null_prefix: torch.Tensor | None = None
    clock_bpm: torch.Tensor | None = None  # [B] the beat clock's BPM per row (NaN: none); None: no clock
    clock: torch.Tensor | None = None  # [B, S, D] this window's beat clock per sequence step (null: zeros)

    def for_cfg(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """[cond; null] stacked on the batch dimension (2B rows)."""
        cross = None if self.cross is None else torch.cat([self.cross, _null(self.null_cross, self.cross)])
        prefix = None if self.prefix is None else torch.cat([self.prefix, _null(self.null_prefix, self.prefix)])
        return cross, prefix


def _null(null: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(cond) if null is None else null


@dataclass
class StepState:
    step: int  # the pattern step just filled
    sequence: torch.Tensor  # [B, K, S] pattern sequence (UNKNOWN where not generated yet)
    frames_done: int  # frames t < frames_done are complete in every codebook


def iter_generate(lm: LMModel, pattern: CodebookPattern, conditions: Conditions, batch_size: int,
                  params: SamplingParams, prompt: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> Iterator[StepState]:
    """Generate ``pattern.num_frames`` frames, yielding after every pattern step.

    prompt [B, K, P] holds frames that are kept fixed (continuation, the previous long-form window).
    """
    K, S, T = pattern.num_codebooks, pattern.num_steps, pattern.num_frames
    device = next(lm.parameters()).device
    special = lm.special_token
    codes = torch.full((batch_size, K, T), UNKNOWN, dtype=torch.long, device=device)
    P = 0
    if prompt is not None and prompt.shape[-1] > 0:
        P = prompt.shape[-1]
        if P > T:
            raise ValueError(f"prompt has {P} frames, more than the {T} to generate")
        codes[..., :P] = prompt.to(device)
    seq = pattern.build(codes, special)  # [B, K, S]; UNKNOWN in valid cells not yet known
    valid = pattern.valid.to(device)  # [K, S]
    frame_done_at = pattern.step_of().max(dim=0).values.tolist()  # step after which frame t is complete

    use_cfg = params.cfg_coef != 1.0 and (conditions.cross is not None or conditions.prefix is not None)
    if use_cfg:
        cross, prefix = conditions.for_cfg()
    else:
        cross, prefix = conditions.cross, conditions.prefix
    clock = conditions.clock  # [B, S, D] or None
    if clock is not None:
        if clock.shape[1] < S:
            raise ValueError(f"the beat clock covers {clock.shape[1]} steps, the pattern {S}")
        if use_cfg:
            clock = torch.cat([clock, torch.zeros_like(clock)])  # the null condition has no clock
    rows = 2 * batch_size if use_cfg else batch_size
    prefix_len = 0 if prefix is None else prefix.shape[1]
    start_step = pattern.first_step_with_frame(P)

    lm.setup_cache(rows, prefix_len + S)
    try:
        lm.set_cross_source(cross)
        pos = 0
        prev = 0
        frames_done = 0
        for s in range(start_step, S):
            inp = seq[..., prev:s]  # [B, K, s - prev]: the prefill, then one step at a time
            if use_cfg:
                inp = inp.repeat(2, 1, 1)
            logits = lm(inp, prefix=prefix if pos == 0 else None, start=pos, last_only=True,
                        frame_cond=None if clock is None else clock[:, prev:s])  # [rows, K, 1, card]
            pos += inp.shape[-1] + (prefix_len if pos == 0 else 0)
            logits = logits[:, :, -1].float()  # [rows, K, card]
            if use_cfg:
                cond, uncond = logits.split(batch_size)
                logits = uncond + (cond - uncond) * params.cfg_coef
            nxt = sample_next_token(logits, params, generator)  # [B, K]
            nxt = torch.where(valid[:, s], nxt, torch.full_like(nxt, special))
            cur = seq[:, :, s]
            seq[:, :, s] = torch.where(cur == UNKNOWN, nxt, cur)
            prev = s
            while frames_done < T and frame_done_at[frames_done] <= s:
                frames_done += 1
            yield StepState(step=s, sequence=seq, frames_done=frames_done)
    finally:
        lm.clear_cache()
        release_free_memory()  # the cache's pages, before the codec decode needs its own


def generate_tokens(lm: LMModel, pattern: CodebookPattern, conditions: Conditions, batch_size: int,
                    params: SamplingParams, prompt: torch.Tensor | None = None,
                    generator: torch.Generator | None = None,
                    callback: ProgressCallback | None = None) -> torch.Tensor:
    """Run the loop to the end; returns codes [B, K, T]."""
    P = 0 if prompt is None else prompt.shape[-1]
    first = pattern.first_step_with_frame(P)
    total = pattern.num_steps - first
    state = None
    for state in iter_generate(lm, pattern, conditions, batch_size, params, prompt, generator):
        if callback is not None:
            callback(state.step - first + 1, total)
    if state is None:  # nothing to generate: the prompt fills the whole request
        assert prompt is not None
        return prompt.clone()
    codes = pattern.revert(state.sequence)
    assert (codes >= 0).all() and (codes < lm.special_token).all(), "generation left empty cells"
    return codes
