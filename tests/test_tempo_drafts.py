"""Tempo drafts (yuefu.generation.tempo_drafts): N short beginnings per prompt, the one nearest the stated BPM is
continued.

References: click tracks of known tempo (closed form) for the estimator, librosa's beat tracker on the same
signals, and a spy on the generation calls for the plumbing (the output must start with the picked draft).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import yuefu
from yuefu.errors import InvalidArgumentError
from yuefu.generation import tempo_drafts
from yuefu.generation.tempo_drafts import estimate_bpm, pick_drafts

SR = 32000


def click_track(bpm: float, seconds: float = 5.0, accent_every: int = 4, seed: int = 0) -> torch.Tensor:
    """Noise bursts on every beat, louder on the first of each bar: [T]."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(SR * seconds), np.float32)
    period = SR * 60.0 / bpm
    for i, start in enumerate(np.arange(0, len(out) - 400, period)):
        burst = rng.standard_normal(400).astype(np.float32) * np.hanning(400).astype(np.float32)
        out[int(start):int(start) + 400] += burst * (1.0 if i % accent_every == 0 else 0.5)
    return torch.from_numpy(out)


@pytest.mark.parametrize("bpm", [62.0, 85.0, 100.0, 123.0, 150.0, 176.0])
def test_estimate_bpm_on_click_tracks(bpm):
    est = estimate_bpm(click_track(bpm), SR)
    assert abs(est - bpm) / bpm < 0.015, est
    stereo = torch.stack([click_track(bpm), click_track(bpm, seed=1)])
    assert abs(estimate_bpm(stereo, SR) - bpm) / bpm < 0.015


def test_estimate_bpm_agrees_with_librosa():
    pytest.importorskip("librosa")
    from yuefu.eval.tempo import estimate_tempo

    for bpm in (75.0, 110.0, 140.0):
        wav = click_track(bpm, seconds=8.0)
        assert abs(estimate_bpm(wav, SR) - estimate_tempo(wav, SR)) / bpm < 0.03


def test_estimate_bpm_of_silence_and_tiny_clips():
    assert estimate_bpm(torch.zeros(SR * 2), SR) == 0.0
    assert estimate_bpm(torch.randn(100), SR) == 0.0


def test_pick_drafts():
    estimates = [150.0, 92.0, 120.0, 60.0, 0.0, 118.0]  # 2 prompts x 3 drafts
    assert pick_drafts(estimates, [90.0, 240.0], 3) == [1, 5 - 3]  # 118 is nearest 240 in octaves
    assert pick_drafts(estimates, [None, 60.0], 3) == [0, 0]
    assert pick_drafts([0.0, 0.0], [100.0], 2) == [0]  # nothing measurable: the first draft


@pytest.fixture(scope="module")
def model(hf_dir) -> yuefu.MusicGen:
    return yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu")


def test_output_starts_with_the_picked_draft(model, monkeypatch):
    calls: list[tuple[int, torch.Tensor | None, torch.Tensor]] = []
    real = yuefu.MusicGen.generate_tokens

    def spy(self, conditions, batch_size, params, duration, prompt=None, **kw):
        out = real(self, conditions, batch_size, params, duration, prompt=prompt, **kw)
        calls.append((batch_size, prompt, out))
        return out

    values = iter([150.0, 93.0, 120.0, 70.0, 0.0, 80.0])  # what the estimator "hears": 2 prompts x 3 drafts
    monkeypatch.setattr(yuefu.MusicGen, "generate_tokens", spy)
    monkeypatch.setattr(tempo_drafts, "estimate_bpm", lambda wav, sr: next(values))
    model.set_generation_params(duration=1.0, tempo_drafts=3, tempo_draft_seconds=0.5)
    try:
        _, tokens = model.generate(["drums at 90 BPM", "a calm folk song, tempo: 200"], return_tokens=True, seed=3)
    finally:
        model.set_generation_params()
    (n_drafts, no_prompt, drafts), (n_main, prompt, _) = calls
    assert n_drafts == 6 and no_prompt is None and n_main == 2
    frames = int(0.5 * model.frame_rate)
    assert drafts.shape[-1] == frames
    picked = drafts.view(2, 3, *drafts.shape[1:])[[0, 1], [1, 2]]  # 93 is nearest 90; 80 nearest 200
    assert torch.equal(prompt, picked)
    assert torch.equal(tokens[..., :frames], picked)
    assert model.last_tempo_drafts == ([[150.0, 93.0, 120.0], [70.0, 0.0, 80.0]], [1, 2])


def test_drafts_of_the_whole_request_return_the_picked_one(model, monkeypatch):
    calls = []
    real = yuefu.MusicGen.generate_tokens

    def spy(self, *args, **kw):
        calls.append(real(self, *args, **kw))
        return calls[-1]

    values = iter([100.0, 131.0])
    monkeypatch.setattr(yuefu.MusicGen, "generate_tokens", spy)
    monkeypatch.setattr(tempo_drafts, "estimate_bpm", lambda wav, sr: next(values))
    model.set_generation_params(duration=0.6, tempo_drafts=2)  # drafts: the whole (first and only) window
    try:
        _, tokens = model.generate(["a reel at 128 bpm"], return_tokens=True, seed=2)
    finally:
        model.set_generation_params()
    assert len(calls) == 1 and calls[0].shape[0] == 2
    assert torch.equal(tokens, calls[0][1:])


def _progress(model, run) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    model.set_custom_progress_callback(lambda done, total: seen.append((done, total)))
    try:
        run()
    finally:
        model.set_custom_progress_callback(None)
        model.set_generation_params()
    return seen


def test_progress_with_drafts_counts_drafts_then_the_rest_once(model):
    def drafts() -> None:
        model.set_generation_params(duration=1.0, tempo_drafts=3, tempo_draft_seconds=0.5)
        model.generate(["drums at 90 BPM"], seed=1)

    def draft_alone() -> None:  # the drafts' steps: a 0.5 s request
        model.set_generation_params(duration=0.5)
        model.generate(["drums at 90 BPM"], seed=1)

    def rest_alone() -> None:  # the rest: 1 s continuing a 0.5 s prompt
        model.set_generation_params(duration=1.0)
        model.generate_continuation(torch.zeros(1, 1, model.sample_rate // 2), model.sample_rate,
                                    ["drums at 90 BPM"])

    seen = _progress(model, drafts)
    total = _progress(model, draft_alone)[-1][1] + _progress(model, rest_alone)[-1][1]
    assert {t for _, t in seen} == {total}  # one task, one total
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))  # never goes back
    assert seen[-1][0] == total


def test_prompts_without_a_tempo_generate_as_without_drafts(model):
    model.set_generation_params(duration=0.5, tempo_drafts=4)
    try:
        _, with_drafts = model.generate(["calm piano"], return_tokens=True, seed=5)
    finally:
        model.set_generation_params(duration=0.5)
    _, plain = model.generate(["calm piano"], return_tokens=True, seed=5)
    model.set_generation_params()
    assert torch.equal(with_drafts, plain)


@pytest.mark.parametrize("bad", [-1, 17, 2.5, True])
def test_bad_tempo_drafts_are_refused(model, bad):
    with pytest.raises(InvalidArgumentError, match="tempo_drafts"):
        model.set_generation_params(tempo_drafts=bad)
    from yuefu.service import GenerationRequest

    with pytest.raises(InvalidArgumentError, match="tempo_drafts"):
        GenerationRequest(prompts=["x"], model="m", tempo_drafts=bad).validate()


@pytest.mark.parametrize("bad", [0, -2.0, float("nan"), "5"])
def test_bad_draft_lengths_are_refused(model, bad):
    with pytest.raises(InvalidArgumentError, match="tempo_draft_seconds"):
        model.set_generation_params(tempo_drafts=2, tempo_draft_seconds=bad)
