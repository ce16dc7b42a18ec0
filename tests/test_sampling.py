"""Sampling checked statistically against the definitions of temperature, top-k and top-p."""

from __future__ import annotations

import pytest
import torch

from yuefu.generation.sampling import SamplingParams, sample_next_token

N = 40000  # draws per test; the tolerance below is ~5 standard errors of a frequency


def frequencies(logits: torch.Tensor, params: SamplingParams, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    draws = sample_next_token(logits.expand(N, -1).contiguous(), params, g)
    return torch.bincount(draws, minlength=logits.shape[-1]).float() / N


def assert_close_freq(freq: torch.Tensor, expected: torch.Tensor) -> None:
    se = (expected * (1 - expected) / N).sqrt()
    assert ((freq - expected).abs() <= 5 * se + 1e-4).all(), (freq, expected)


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_is_softmax_of_scaled_logits(temperature):
    freq = frequencies(LOGITS, SamplingParams(temperature=temperature, top_k=0, top_p=0.0))
    assert_close_freq(freq, torch.softmax(LOGITS / temperature, -1))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_renormalises_the_k_most_likely(k):
    freq = frequencies(LOGITS, SamplingParams(top_k=k))
    p = torch.softmax(LOGITS, -1)
    expected = torch.zeros_like(p)
    expected[:k] = p[:k] / p[:k].sum()  # LOGITS are sorted, so the k most likely are the first k
    assert_close_freq(freq, expected)


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9])
def test_top_p_keeps_the_smallest_nucleus_reaching_p(top_p):
    p = torch.softmax(LOGITS, -1)
    cum = torch.cumsum(p, 0)
    n = int((cum < top_p).sum()) + 1  # smallest prefix whose mass reaches top_p
    expected = torch.zeros_like(p)
    expected[:n] = p[:n] / p[:n].sum()
    freq = frequencies(LOGITS, SamplingParams(top_k=250, top_p=top_p))  # top_p takes precedence over top_k
    assert_close_freq(freq, expected)


def test_unsorted_vocabulary_top_p_maps_back_to_token_ids():
    perm = torch.tensor([5, 2, 7, 0, 3, 1, 6, 4])
    logits = LOGITS[perm]
    freq = frequencies(logits, SamplingParams(top_p=0.6))
    p = torch.softmax(logits, -1)
    order = torch.argsort(p, descending=True)
    keep = order[: int((torch.cumsum(p[order], 0) < 0.6).sum()) + 1]
    expected = torch.zeros_like(p)
    expected[keep] = p[keep] / p[keep].sum()
    assert_close_freq(freq, expected)


def test_greedy_is_argmax():
    logits = torch.randn(6, 4, 2048)
    out = sample_next_token(logits, SamplingParams(use_sampling=False))
    assert torch.equal(out, logits.argmax(-1))


def test_same_seed_same_tokens_other_seed_other_tokens():
    logits = torch.randn(4, 2048)
    params = SamplingParams(top_k=250)
    a = [sample_next_token(logits, params, torch.Generator().manual_seed(7)) for _ in range(2)]
    b = sample_next_token(logits.repeat(50, 1), params, torch.Generator().manual_seed(8))
    c = sample_next_token(logits.repeat(50, 1), params, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], a[1])
    assert not torch.equal(b, c)
