"""yuefu against transformers' MusicGen: same weights, same inputs, same outputs.

The reference is ``MusicgenForConditionalGeneration`` with a tiny random config of musicgen-small's structure,
saved with ``save_pretrained`` and loaded by yuefu from that folder.
"""

from __future__ import annotations

import pytest
import torch
from tiny import hf_greedy_generate

import yuefu
from yuefu.lm.patterns import delay_pattern

PROMPT = "lo-fi hip hop with a warm piano"


@pytest.fixture(scope="module")
def model(hf_dir):
    return yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu")


def hf_greedy_codes(hf_model, tokenizer, prompts, frames, cfg=3.0):
    """transformers' greedy generation -> codes [B, K, T], audio [B, 1, samples]."""
    return hf_greedy_generate(hf_model, tokenizer(prompts, return_tensors="pt", padding=True), frames, cfg)


def test_lm_logits_equal_transformers(model, hf_model, tokenizer):
    torch.manual_seed(1)
    B, K, S = 2, 4, 60
    codes = torch.randint(0, 2049, (B, K, S))
    inputs = tokenizer([PROMPT] * B, return_tensors="pt")
    with torch.no_grad():
        ref = hf_model(**inputs, decoder_input_ids=codes.reshape(B * K, S)).logits.reshape(B, K, S, -1)
        cond, _ = model.conditioner([PROMPT] * B)
        ours = model.lm(codes, cross_src=cond)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-4


def test_cached_steps_equal_full_forward(model):
    """Stepping with the KV cache gives the logits of one full causal forward."""
    torch.manual_seed(2)
    codes = torch.randint(0, 2049, (2, 4, 12))
    with torch.no_grad():
        cond, _ = model.conditioner([PROMPT, "jazz trio"])
        full = model.lm(codes, cross_src=cond)
        model.lm.setup_cache(2, 12)
        model.lm.set_cross_source(cond)
        first = model.lm(codes[..., :5], start=0)
        steps = [model.lm(codes[..., s:s + 1], start=s) for s in range(5, 12)]
        model.lm.clear_cache()
    assert (torch.cat([first, *steps], dim=2) - full).abs().max().item() < 1e-6 * full.abs().max().item() * 10


def test_padding_follows_audiocraft(model, hf_model, tokenizer):
    """Padded prompts: like audiocraft, padded text positions are zero vectors that cross-attention does not mask.

    transformers masks them instead, so for the shorter prompt of a padded batch the two differ; ours equals
    transformers' decoder run on the same zeroed states *without* the encoder mask, i.e. audiocraft's behaviour.
    """
    prompts = [PROMPT, "a cheerful erhu melody over a rock beat with drums and bass"]
    torch.manual_seed(3)
    codes = torch.randint(0, 2049, (2, 4, 20))
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    assert (inputs["attention_mask"] == 0).any(), "the test needs a padded batch"
    with torch.no_grad():
        hidden = hf_model.text_encoder(**inputs).last_hidden_state
        hidden = hf_model.enc_to_dec_proj(hidden) * inputs["attention_mask"][..., None]
        dec_in = codes.reshape(8, 20)
        unmasked = hf_model.decoder(dec_in, encoder_hidden_states=hidden).logits.reshape(2, 4, 20, -1)
        masked = hf_model.decoder(dec_in, encoder_hidden_states=hidden,
                                  encoder_attention_mask=inputs["attention_mask"]).logits.reshape(2, 4, 20, -1)
        cond, _ = model.conditioner(prompts)
        ours = model.lm(codes, cross_src=cond)
    assert (ours - unmasked).abs().max().item() < 1e-4
    assert (ours[0] - masked[0]).abs().max().item() > 1e-3  # the documented difference exists
    assert (ours[1] - masked[1]).abs().max().item() < 1e-4  # the longest prompt has no padding


@pytest.mark.parametrize("frames", [50, 61])
def test_greedy_generation_equals_transformers(model, hf_model, tokenizer, frames):
    ref_codes, ref_audio = hf_greedy_codes(hf_model, tokenizer, [PROMPT], frames)
    model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=frames / model.frame_rate)
    audio, tokens = model.generate([PROMPT], return_tokens=True)
    assert tokens.shape == ref_codes.shape == (1, 4, frames)
    assert torch.equal(tokens, ref_codes)
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max().item() < 1e-4


def test_codec_equals_transformers(model, hf_model):
    torch.manual_seed(4)
    wav = torch.randn(2, 1, 32000 + 123) * 0.3
    with torch.no_grad():
        ref = hf_model.audio_encoder.encode(wav, bandwidth=2.2).audio_codes[0]  # [B, K, frames]
        ours = model.compression_model.encode(wav)
        assert torch.equal(ours, ref)
        ref_wav = hf_model.audio_encoder.decode(ref[None], [None]).audio_values
        ours_wav = model.compression_model.decode(ours)
    assert ours_wav.shape == ref_wav.shape
    assert (ours_wav - ref_wav).abs().max().item() < 1e-4


def test_delay_pattern_matches_transformers_mask(hf_model):
    """Our delay layout equals transformers' ``build_delay_pattern_mask`` (P = special, -1 = to predict)."""
    S = 30
    start = torch.full((4, 1), 2048)
    _, mask = hf_model.decoder.build_delay_pattern_mask(start, pad_token_id=2048, max_length=S)
    ours = delay_pattern(4, S - 4, [0, 1, 2, 3]).build(torch.full((1, 4, S - 4), -1), special_token=2048)[0]
    assert torch.equal(ours, mask)


def test_audiocraft_layout_gives_same_tokens(model, audiocraft_dir, t5_dir, offline_cache):
    """The same weights in audiocraft's exported layout (fp16 LM, codec named as facebook/encodec_32khz and found
    in the offline HF cache, T5 given as a local folder) generate the same greedy tokens."""
    ac = yuefu.MusicGen.from_pretrained(str(audiocraft_dir), device="cpu", text_encoder=str(t5_dir))
    for m in (model, ac):
        m.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=1.0)
    _, ref = model.generate([PROMPT], return_tokens=True)
    # the reference's LM in fp16 precision, as the audiocraft checkpoint stores it
    ref_lm = {k: v.clone() for k, v in model.lm.state_dict().items()}
    with torch.no_grad():
        for p in model.lm.parameters():
            p.copy_(p.half().float())
    try:
        _, ref16 = model.generate([PROMPT], return_tokens=True)
    finally:
        model.lm.load_state_dict(ref_lm)
    _, ours = ac.generate([PROMPT], return_tokens=True)
    assert torch.equal(ours, ref16)
    assert (ours == ref).float().mean() > 0.9  # fp16 rounding of the weights changes little


def test_audiocraft_t5_name_resolves_through_cache(audiocraft_dir, offline_cache):
    """Without ``text_encoder=``, the checkpoint's ``t5-base`` is looked up in the HF cache (offline)."""
    ac = yuefu.MusicGen.from_pretrained(str(audiocraft_dir), device="cpu")
    assert ac.conditioner.encoder.config.d_model == 32


def test_stereo_greedy_generation_equals_transformers(hf_stereo_model, hf_stereo_dir, tokenizer):
    """Stereo: 8 codebooks with delays [0,0,1,1,2,2,3,3]; transformers decodes left (even) and right (odd)
    codebooks separately, so its codes are caught on two decode calls."""
    calls = []
    decode = hf_stereo_model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        calls.append(codes.clone())
        return decode(codes, *args, **kwargs)

    hf_stereo_model.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            ref_audio = hf_stereo_model.generate(**tokenizer([PROMPT], return_tensors="pt"), do_sample=False,
                                                 guidance_scale=3.0, max_new_tokens=40 + 3)
    finally:
        hf_stereo_model.audio_encoder.decode = decode
    model = yuefu.MusicGen.from_pretrained(str(hf_stereo_dir), device="cpu")
    assert model.audio_channels == 2 and model.config.lm.delays == [0, 0, 1, 1, 2, 2, 3, 3]
    model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=40 / model.frame_rate)
    audio, tokens = model.generate([PROMPT], return_tokens=True)
    assert torch.equal(tokens[:, 0::2], calls[0][0]) and torch.equal(tokens[:, 1::2], calls[1][0])
    assert audio.shape == ref_audio.shape == (1, 2, 40 * 640)
    assert (audio - ref_audio).abs().max().item() < 1e-4
