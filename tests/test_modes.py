"""Generation modes, all served by the one loop: continuation, long-form windows, streaming, seeds, batches and
Chinese prompts (tiny random model of musicgen-small's structure)."""

from __future__ import annotations

import pytest
import torch

import yuefu
import yuefu.musicgen as mg
from yuefu.audio import resample
from yuefu.errors import InvalidArgumentError


@pytest.fixture
def model(hf_dir):
    m = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu")
    m.set_generation_params(duration=1.0, top_k=50)
    return m


def test_continuation_keeps_prompt_tokens_bit_exact(model):
    torch.manual_seed(0)
    prompt = model.decode_tokens(torch.randint(0, 2048, (2, 4, 20)))  # [2, 1, 0.4 s]
    prompt_16k = resample(prompt, 32000, 16000)  # a prompt at another rate is resampled first
    expected = model.encode_audio(prompt_16k, 16000)
    audio, tokens = model.generate_continuation(prompt_16k, 16000, ["jazz trio", None], return_tokens=True, seed=1)
    P = expected.shape[-1]
    assert torch.equal(tokens[..., :P], expected)
    assert tokens.shape == (2, 4, 50) and audio.shape == (2, 1, 50 * 640)  # duration counts the prompt
    with pytest.raises(InvalidArgumentError):
        model.generate_continuation(prompt, 32000, ["only one description"])


def test_long_form_45s_with_a_10s_window(model, monkeypatch):
    """audiocraft's scheme: windows of max_duration start every extend_stride seconds; each is prompted with the
    previous window's tokens from the stride on; the result has the requested length."""
    model.config.max_duration = 10.0
    model.set_generation_params(duration=45.0, extend_stride=6.0, top_k=50)
    calls = []
    real = mg.generate_tokens

    def spy(lm, pattern, conditions, batch, params, prompt, generator, callback):
        out = real(lm, pattern, conditions, batch, params, prompt, generator, callback)
        calls.append((None if prompt is None else prompt.clone(), out.clone()))
        return out

    monkeypatch.setattr(mg, "generate_tokens", spy)
    progress = []
    model.set_custom_progress_callback(lambda done, total: progress.append((done, total)))
    audio, tokens = model.generate(["calm ambient pads"], return_tokens=True, seed=0)
    assert tokens.shape[-1] == 45 * 50 and audio.shape[-1] == 45 * 32000
    starts = [0, 300, 600, 900, 1200, 1500, 1800]  # window i starts at i * 6 s; the last ends at 45 s
    assert len(calls) == len(starts)
    for i in range(1, len(calls)):
        prompt, out = calls[i]
        prev = calls[i - 1][1]
        assert torch.equal(prompt, prev[..., 300:])  # the previous window's tail, 4 s
        assert torch.equal(out[..., : prompt.shape[-1]], prompt)
        start = starts[i]
        assert torch.equal(tokens[..., start:start + out.shape[-1]], out)  # windows laid out at their offsets
        assert out.shape[-1] == min(500, 2250 - start)
    assert progress[-1][0] == progress[-1][1]  # progress counts steps across all windows
    assert all(b[0] >= a[0] for a, b in zip(progress, progress[1:]))


def test_stream_chunks_concatenate_to_the_one_shot_output(model):
    model.set_generation_params(duration=3.0, top_k=50)
    one_shot, tokens = model.generate(["rock band with drums"], return_tokens=True, seed=5)
    chunks = list(model.generate_stream(["rock band with drums"], chunk_seconds=1.0, seed=5))
    streamed = torch.cat(chunks, dim=-1)
    assert streamed.shape == one_shot.shape
    assert chunks[0].shape[-1] == 50 * 640  # the first chunk: once about 1 s of audio exists
    err = (streamed - one_shot).abs().max().item() / one_shot.abs().max().item()
    print(f"stream vs one-shot: max abs error {err:.2e} of peak")
    assert err < 1e-3


def test_same_seed_same_audio_and_mixed_length_batches(model):
    prompts = ["jazz", "a cheerful erhu melody over a rock beat with drums and bass"]
    a = model.generate(prompts, seed=11)
    b = model.generate(prompts, seed=11)
    c = model.generate(prompts, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 1, 32000)


def test_chinese_prompts_are_translated_before_the_english_encoder(model):
    model.generate(["国风摇滚，古筝和电吉他，每分钟120拍"], seed=0)
    used = model.last_prompts_used[0]
    assert "guzheng" in used and "120 BPM" in used and "rock" in used
    model.normalize_prompts = False
    model.generate(["国风摇滚"], seed=0)
    assert model.last_prompts_used == ["国风摇滚"]
