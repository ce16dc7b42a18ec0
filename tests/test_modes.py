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
    decoded = []  # frames per codec call: the long output decodes in window-sized pieces
    codec_decode = model.compression_model.decode
    monkeypatch.setattr(model.compression_model, "decode",
                        lambda codes: decoded.append(codes.shape[-1]) or codec_decode(codes))
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
    assert decoded == [508, 608, 608, 608, 350]  # 500-frame pieces, 100 frames of context and 8 of lookahead
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
    assert err < 1e-5  # measured 3.3e-7 (float summation order of different-length convolutions)


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


def test_traditional_script_and_words_outside_the_lexicon_reach_the_encoder(model, caplog):
    model.normalize_prompts = True
    with caplog.at_level("WARNING", logger="yuefu"):
        model.generate(["國風搖滾，古箏", "恐龍主題的兒歌，窝在家里"], seed=0)
    assert model.last_prompts_used[0] == "Chinese traditional style rock, guzheng"
    assert "dinosaur" in model.last_prompts_used[1] and "children's song" in model.last_prompts_used[1]
    assert "not understood, left out: 窝" in caplog.text  # what the dictionary lacks too is named, not silently lost
    assert model.last_prompts_left_out == [[], ["窝"]]


def test_continuation_prompt_of_a_whole_window_and_a_longer_one(model):
    """As audiocraft's ``_generate_tokens`` (``assert max_prompt_len >= prompt_tokens.shape[-1]`` with
    ``max_prompt_len = min(duration, max_duration) * frame_rate``): a prompt may fill the first window exactly, and
    the next windows continue it; one frame more is refused with a one-line error instead of a traceback."""
    model.config.max_duration = 2.0  # a 100-frame window
    model.set_generation_params(duration=3.0, extend_stride=1.0, top_k=50)
    torch.manual_seed(0)
    prompt = model.decode_tokens(torch.randint(0, 2048, (1, 4, 100)))  # 2.0 s: exactly one window
    expected = model.encode_audio(prompt, 32000)
    assert expected.shape[-1] == 100
    audio, tokens = model.generate_continuation(prompt, 32000, ["jazz trio"], return_tokens=True, seed=0)
    assert tokens.shape == (1, 4, 150) and audio.shape == (1, 1, 150 * 640)
    assert torch.equal(tokens[..., :100], expected)  # the whole prompt is kept in the output

    longer = torch.cat([prompt, prompt[..., :640]], dim=-1)  # 2.02 s: 101 frames
    assert model.encode_audio(longer, 32000).shape[-1] == 101
    with pytest.raises(InvalidArgumentError) as e:
        model.generate_continuation(longer, 32000, ["jazz trio"])
    assert "window" in str(e.value) and "\n" not in str(e.value)
    model.set_generation_params(duration=2.0, extend_stride=1.0)  # one window: the prompt outlasts the duration
    with pytest.raises(InvalidArgumentError, match="longer than the duration"):
        model.generate_continuation(longer, 32000, ["jazz trio"])


def test_long_token_sequences_decode_in_overlapping_pieces(model):
    """Past one window, decode_tokens decodes pieces of a window with 100 frames of context and 8 of lookahead
    (generate_stream's scheme); the result equals the codec's one-shot decode within 1e-5 of the peak (measured
    3.2e-7; 3.7e-7 to 4.0e-7 with other seeds; without the overlap the error is 0.6 of the peak). Up to one window, the
    decode is the one-shot decode itself, bit for bit."""
    model.config.max_duration = 2.0  # pieces of 100 frames
    codec = model.compression_model
    calls = []
    torch.manual_seed(3)
    tokens = torch.randint(0, 2048, (2, 4, 350))
    with torch.inference_mode():
        reference = codec.decode(tokens)
        decode = codec.decode
        codec.decode = lambda codes: calls.append(codes.shape[-1]) or decode(codes)
        try:
            chunked = model.decode_tokens(tokens)
        finally:
            del codec.decode
        bare = model.decode_tokens(tokens, context_frames=0, lookahead_frames=0)
        short = tokens[..., :100]
        assert torch.equal(model.decode_tokens(short), codec.decode(short))
    assert calls == [108, 208, 208, 150]  # [0, 108), [0, 208), [100, 308), [200, 350)
    assert chunked.shape == reference.shape == (2, 1, 350 * 640)
    peak = reference.abs().max().item()
    err = (chunked - reference).abs().max().item() / peak
    print(f"chunked vs one-shot decode: max abs error {err:.2e} of peak")
    assert err < 1e-5
    assert (bare - reference).abs().max().item() / peak > 0.1  # the overlap is what makes the pieces match
