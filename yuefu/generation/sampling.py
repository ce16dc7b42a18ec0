"""Next-token sampling: greedy, temperature, top-k and top-p (nucleus), seeded through a torch.Generator.

Definitions follow audiocraft: top-p keeps the smallest prefix of the sorted distribution whose mass reaches p
(a token is dropped when the mass before it already exceeds p); top_p > 0 takes precedence over top_k; 0 turns a
filter off. Drawing uses the exponential-race form of categorical sampling (argmax of p / E, E ~ Exp(1)), which
needs no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    use_sampling: bool = True
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """probs [..., V] (need not be normalised) -> indices [...] drawn in proportion to probs."""
    e = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return torch.argmax(probs / e, dim=-1)


def top_k_filter(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the k largest probabilities (ties at the k-th value are kept)."""
    k = min(k, probs.shape[-1])
    kth = torch.topk(probs, k, dim=-1).values[..., -1:]
    return probs * (probs >= kth)


def top_p_filter(probs: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nucleus filter; returns (filtered sorted probs, sort indices)."""
    sorted_probs, idx = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    return sorted_probs * (mass_before <= p), idx


def sample_next_token(logits: torch.Tensor, params: SamplingParams,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [..., V] (float32) -> tokens [...]."""
    if not params.use_sampling or params.temperature <= 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p > 0:
        filtered, idx = top_p_filter(probs, params.top_p)
        choice = categorical(filtered, generator)
        return torch.gather(idx, -1, choice.unsqueeze(-1)).squeeze(-1)
    if params.top_k > 0:
        probs = top_k_filter(probs, params.top_k)
    return categorical(probs, generator)
