"""MusicGen-melody against transformers' ``MusicgenMelodyForConditionalGeneration`` and audiocraft's behaviour.

The reference is a tiny random transformers melody model (``tiny.make_musicgen_melody``), saved with
``save_pretrained`` beside its tokenizer and ``MusicgenMelodyFeatureExtractor`` config and loaded by yuefu from
that folder. Conditions are prepended: [chroma frames (235), text states, audio steps].
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest_models import REFERENCE
from tiny import hf_greedy_generate, make_melody_feature_extractor

import yuefu
from yuefu.conditioners.chroma import (
    CHROMA_FRAMES,
    cyclic_melody_window,
    fit_chroma_frames,
    melody_chroma,
    null_melody_chroma,
)
from yuefu.errors import AudioFileError, InvalidArgumentError, YuefuError

SR = 32000
PROMPT = "lo-fi hip hop with a warm piano"
PROMPTS = [PROMPT, "a cheerful erhu melody over a rock beat with drums and bass"]


def tune(seconds: float, notes: tuple[int, ...] = (60, 64, 67, 72, 69, 65), note_s: float = 0.5,
         sr: int = SR) -> torch.Tensor:
    """A mono melody [1, T]: the MIDI ``notes`` in turn, ``note_s`` seconds each, looping."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    idx = (t / note_s).long() % len(notes)
    hz = 440.0 * 2 ** ((torch.tensor(notes, dtype=torch.float64)[idx] - 69) / 12)
    return (0.3 * torch.sin(2 * math.pi * hz * t))[None].float()


@pytest.fixture(scope="module")
def model(hf_melody_dir):
    m = yuefu.MusicGen.from_pretrained(str(hf_melody_dir), device="cpu")
    m.separate_melody_stems = False  # no Demucs here; the mix, as the feature extractor without stems
    return m


@pytest.fixture(scope="module")
def fe(hf_melody_dir):
    return make_melody_feature_extractor()


def hf_features(fe, wavs: list[torch.Tensor]) -> torch.Tensor:
    """transformers' processor output for mono melodies [1, T] at 32 kHz -> input_features [B, frames, 12]."""
    return fe([w[0].numpy() for w in wavs], sampling_rate=SR, return_tensors="pt", padding=True)["input_features"]


def hf_greedy_codes(hf_model, tokenizer, prompts, features, frames: int, cfg: float = 3.0) -> torch.Tensor:
    """transformers' greedy generation with an optional melody -> codes [B, K, T]."""
    inputs = dict(tokenizer(prompts, return_tensors="pt", padding=True))
    if features is not None:
        inputs["input_features"] = features
    return hf_greedy_generate(hf_model, inputs, frames, cfg)[0]


# --- loading ------------------------------------------------------------------------------------------------------

def test_melody_model_loads_with_prepended_conditions(model, hf_melody_model):
    assert model.config.melody and not model.config.lm.cross_attention
    assert model.config.chroma_frames == 235 and model.config.num_chroma == 12
    assert all(layer.cross_attention is None for layer in model.lm.layers)
    assert torch.equal(model.melody_proj.weight, hf_melody_model.audio_enc_to_dec_proj.weight)
    assert torch.equal(model.melody_proj.bias, hf_melody_model.audio_enc_to_dec_proj.bias)


# --- chroma -------------------------------------------------------------------------------------------------------

def test_chroma_equals_transformers_processor(model, fe):
    wavs = [tune(7.0), tune(4.0, notes=(62, 66, 69))]
    for batch in (wavs[:1], wavs[1:], wavs):
        ours = model.melody_chroma_at(model._prepare_melodies(batch, SR))  # [B, 235, 12]
        ref = fit_chroma_frames(hf_features(fe, batch))  # transformers tiles to chroma_length in the model
        assert ours.shape == (len(batch), CHROMA_FRAMES, 12) and torch.equal(ours, ref)


def test_a_batch_pads_melodies_to_the_longest_as_both_references(model):
    """audiocraft collates the batch's melodies (zero padding) before the chroma, transformers' processor pads:
    the short melody's chroma then has silence (bin C) frames up to the longest one's length before tiling."""
    short, long = tune(4.0, notes=(62, 66, 69)), tune(7.0)
    alone = model.melody_chroma_at(model._prepare_melodies([short], SR))
    batch = model.melody_chroma_at(model._prepare_melodies([short, long], SR))
    n = 4 * SR // 4096  # frames fully inside the 4 s melody
    assert torch.equal(batch[0, :n], alone[0, :n]) and not torch.equal(batch[0], alone[0])
    assert (batch[0, 4 * SR // 4096 + 3: 7 * SR // 4096, 0] == 1).all()  # padding: silence, bin C
    with_none = model.melody_chroma_at(model._prepare_melodies([None, long], SR))
    assert torch.equal(with_none[0], null_melody_chroma(1)[0])


# --- LM -----------------------------------------------------------------------------------------------------------

def test_lm_logits_equal_transformers_given_the_same_prefix(model, hf_melody_model, tokenizer, fe):
    torch.manual_seed(1)
    B, K, S = 2, 4, 40
    codes = torch.randint(0, 2049, (B, K, S))
    wavs = [tune(7.0), tune(5.0, notes=(57, 60, 64))]
    features = hf_features(fe, wavs)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = hf_melody_model(**inputs, input_features=features, decoder_input_ids=codes.reshape(B * K, S)).logits
        ref = ref.reshape(B, K, -1, ref.shape[-1])[:, :, -S:]  # transformers returns the prefix positions too
        chroma = model.melody_chroma_at(model._prepare_melodies(wavs, SR))
        cond = model.encode_conditions(PROMPTS, chroma)
        ours = model.lm(codes, prefix=cond.prefix)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    print(f"melody LM logits max |diff| vs transformers: {err:.2e}")
    assert err < 1e-4, err


def test_null_prefix_is_silence_chroma_then_zero_text(model):
    chroma = model.melody_chroma_at(model._prepare_melodies([tune(3.0)], SR))
    cond = model.encode_conditions([PROMPT], chroma)
    n_text = cond.prefix.shape[1] - CHROMA_FRAMES
    with torch.no_grad():
        null_mel = model.melody_proj(null_melody_chroma(1))
    assert torch.equal(cond.null_prefix[:, :CHROMA_FRAMES], null_mel)
    assert torch.equal(cond.null_prefix[:, CHROMA_FRAMES:], torch.zeros(1, n_text, model.config.lm.dim))
    assert not torch.equal(cond.prefix[:, :CHROMA_FRAMES], null_mel)
    uncond = model.encode_conditions([None])  # no text, no melody: both branches equal, CFG is skipped
    assert uncond.null_prefix is None and torch.equal(uncond.prefix[:, :CHROMA_FRAMES], null_mel)


# --- generation ---------------------------------------------------------------------------------------------------

FRAMES = 50


@pytest.fixture
def greedy(model):
    model.set_generation_params(use_sampling=False, duration=FRAMES / model.frame_rate, cfg_coef=3.0)
    yield model
    model.set_generation_params()


def test_greedy_tokens_equal_transformers_generate(greedy, hf_melody_model, tokenizer, fe):
    wavs = [tune(7.0), tune(5.0, notes=(57, 60, 64))]
    ref = hf_greedy_codes(hf_melody_model, tokenizer, PROMPTS, hf_features(fe, wavs), FRAMES)
    audio, tokens = greedy.generate_with_chroma(PROMPTS, wavs, SR, return_tokens=True)
    assert tokens.shape == (2, 4, FRAMES) and torch.equal(tokens, ref)
    assert audio.shape == (2, 1, FRAMES * 640)


def test_no_melody_is_the_null_chroma_as_transformers(greedy, hf_melody_model, tokenizer):
    """``generate`` on a melody model, and None melodies, use the silence chroma in the conditional branch too."""
    ref = hf_greedy_codes(hf_melody_model, tokenizer, [PROMPT], None, FRAMES)
    _, tokens = greedy.generate([PROMPT], return_tokens=True)
    assert torch.equal(tokens, ref)
    _, tokens_none = greedy.generate_with_chroma([PROMPT], [None], SR, return_tokens=True)
    assert torch.equal(tokens_none, ref)


def test_melody_changes_the_output_and_batch_rows_are_independent(greedy):
    wav = tune(6.0)
    _, alone = greedy.generate_with_chroma([PROMPT], [wav], SR, return_tokens=True)
    _, mixed = greedy.generate_with_chroma([PROMPT, PROMPT], [None, wav], SR, return_tokens=True)
    _, plain = greedy.generate([PROMPT], return_tokens=True)
    assert torch.equal(mixed[1:], alone) and torch.equal(mixed[:1], plain)
    assert not torch.equal(alone, plain)


def test_generate_with_chroma_shapes_and_inputs(model):
    model.set_generation_params(duration=0.3)
    try:
        wav = tune(2.0, sr=44100)
        out = model.generate_with_chroma(PROMPTS, torch.stack([wav, wav]), 44100, seed=0)  # [B, C, T] tensor
        assert out.shape == (2, 1, 15 * 640) and torch.isfinite(out).all()
        out = model.generate_with_chroma([PROMPT], wav.expand(2, -1), 44100, seed=0)  # [C, T], stereo melody
        assert out.shape == (1, 1, 15 * 640)
        with pytest.raises(InvalidArgumentError, match="2 descriptions for 1 melodies"):
            model.generate_with_chroma(PROMPTS, [wav], 44100)
    finally:
        model.set_generation_params()


def test_text_model_refuses_melody(hf_dir):
    text_model = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu")
    with pytest.raises(InvalidArgumentError, match="no melody conditioning"):
        text_model.generate_with_chroma([PROMPT], tune(1.0), SR)


# --- long form ----------------------------------------------------------------------------------------------------

def test_long_form_windows_read_the_melody_from_their_offsets(model, monkeypatch):
    """audiocraft: past max_duration every window's melody is max_duration seconds read cyclically from its
    own time offset (the first window included); a single window uses the whole melody."""
    offsets = []
    original = model.melody_chroma_at

    def spy(melodies, offset_seconds=None):
        offsets.append(offset_seconds)
        return original(melodies, offset_seconds)

    monkeypatch.setattr(model, "melody_chroma_at", spy)
    monkeypatch.setattr(model.config, "max_duration", 0.4)
    model.set_generation_params(duration=0.9, extend_stride=0.2)
    try:
        tokens = model.generate_with_chroma([PROMPT], [tune(3.0)], SR, return_tokens=True, seed=0)[1]
        assert tokens.shape[-1] == 45
        # windows of 20 frames at strides of 10: offsets 0, 0.2, 0.4 (covers frames 20..40), 0.6 (30..45)
        assert offsets == [None, 0.0, 0.2, 0.4, 0.6]  # None: the first call builds the conditions before the plan

        offsets.clear()
        model.set_generation_params(duration=0.3, extend_stride=0.2)
        model.generate_with_chroma([PROMPT], [tune(3.0)], SR, seed=0)
    finally:
        model.duration, model.extend_stride = 30.0, 18.0  # the defaults (max_duration is still patched here)
    assert offsets == [None]


def test_window_chroma_is_the_cyclic_waveform_window(model):
    wav = tune(7.0)  # 7 s: a 30 s window at offset 18 s reads positions (18 s + i) mod 7 s
    melodies = model._prepare_melodies([wav], SR)
    got = model.melody_chroma_at(melodies, 18.0)
    want = melody_chroma(cyclic_melody_window(wav[None], SR, 18.0, 30.0), SR)
    assert torch.equal(got, want)
    # 18 s = 2 * 7 s + 4 s: the same as starting 4 s in, and not the same as the start of the melody
    assert torch.equal(got, melody_chroma(cyclic_melody_window(wav[None], SR, 4.0, 30.0), SR))
    assert not torch.equal(got, model.melody_chroma_at(melodies, 0.0))
    assert torch.equal(model.melody_chroma_at([None], 18.0), null_melody_chroma(1))


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,wav,sr,error,words", [
    ("silent", torch.zeros(1, SR * 2), SR, AudioFileError, "silent"),
    ("empty", torch.zeros(1, 0), SR, AudioFileError, "empty"),
    ("two_hours", torch.full((1, 2 * 3600 * 100), 0.1), 100, InvalidArgumentError, "too long"),
    ("nan", torch.full((1, SR), float("nan")), SR, AudioFileError, "NaN"),
])
def test_bad_melodies_give_one_line_errors(model, name, wav, sr, error, words):
    with pytest.raises(error) as e:
        model.generate_with_chroma([PROMPT], [wav], sr)
    assert words in str(e.value) and "\n" not in str(e.value) and isinstance(e.value, YuefuError)


# --- formats ------------------------------------------------------------------------------------------------------

def _round_trip_tokens(model, folder: Path, **kwargs) -> torch.Tensor:
    m = yuefu.MusicGen.from_pretrained(str(folder), device="cpu", **kwargs)
    m.separate_melody_stems = False
    m.set_generation_params(use_sampling=False, duration=0.4)
    return m.generate_with_chroma([PROMPT], [tune(3.0)], SR, return_tokens=True)[1]


@pytest.mark.parametrize("fmt", ["yuefu", "transformers"])
def test_save_and_reload_keeps_the_melody_model(model, tmp_path, fmt):
    model.set_generation_params(use_sampling=False, duration=0.4)
    try:
        want = model.generate_with_chroma([PROMPT], [tune(3.0)], SR, return_tokens=True)[1]
    finally:
        model.set_generation_params()
    model.save_pretrained(tmp_path / fmt, format=fmt)
    assert torch.equal(_round_trip_tokens(model, tmp_path / fmt), want)


def test_transformers_writer_output_loads_in_transformers(model, hf_melody_model, tmp_path):
    from transformers import MusicgenMelodyForConditionalGeneration

    model.save_pretrained(tmp_path / "tf", format="transformers")
    theirs = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "tf")
    ref = hf_melody_model.state_dict()
    got = theirs.state_dict()
    for k in ("audio_enc_to_dec_proj.weight", "enc_to_dec_proj.bias", "decoder.model.decoder.layers.1.fc1.weight",
              "decoder.model.decoder.layers.0.self_attn.k_proj.weight", "decoder.lm_heads.3.weight"):
        assert torch.equal(got[k], ref[k]), k


def _audiocraft_melody_lm(hf_model) -> dict[str, torch.Tensor]:
    """transformers melody weights in audiocraft's exported LM keys (facts file), written independently."""
    sd = hf_model.state_dict()
    dec = "decoder.model.decoder."
    out = {}
    for k in range(hf_model.config.decoder.num_codebooks):
        out[f"emb.{k}.weight"] = sd[f"{dec}embed_tokens.{k}.weight"]
        out[f"linears.{k}.weight"] = sd[f"decoder.lm_heads.{k}.weight"]
    for i in range(hf_model.config.decoder.num_hidden_layers):
        p, q = f"{dec}layers.{i}.", f"transformer.layers.{i}."
        out[q + "self_attn.in_proj_weight"] = torch.cat([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[q + "self_attn.out_proj.weight"] = sd[p + "self_attn.out_proj.weight"]
        for theirs, ours in (("self_attn_layer_norm", "norm1"), ("final_layer_norm", "norm2")):
            for w in ("weight", "bias"):
                out[q + f"{ours}.{w}"] = sd[p + f"{theirs}.{w}"]
        out[q + "linear1.weight"] = sd[p + "fc1.weight"]
        out[q + "linear2.weight"] = sd[p + "fc2.weight"]
    for w in ("weight", "bias"):
        out[f"out_norm.{w}"] = sd[f"{dec}layer_norm.{w}"]
        out[f"condition_provider.conditioners.description.output_proj.{w}"] = sd[f"enc_to_dec_proj.{w}"]
        out[f"condition_provider.conditioners.self_wav.output_proj.{w}"] = sd[f"audio_enc_to_dec_proj.{w}"]
    out["condition_provider.conditioners.self_wav.chroma.spec.window"] = torch.hann_window(2**14)
    return {k: v.half() for k, v in out.items()}


def test_audiocraft_melody_checkpoint_loads(model, hf_melody_model, tokenizer, tmp_path):
    x = yaml.safe_load((REFERENCE / "audiocraft_lm.yaml").read_text())
    d = hf_melody_model.config.decoder
    x["transformer_lm"].update(dim=d.hidden_size, num_heads=d.num_attention_heads, num_layers=d.num_hidden_layers,
                               hidden_scale=d.ffn_dim // d.hidden_size, n_q=d.num_codebooks, card=d.vocab_size)
    x["fuser"]["prepend"] = ["self_wav", "description"]
    x["fuser"]["cross"] = []
    x["conditioners"]["self_wav"] = {"model": "chroma_stem", "chroma_stem": {
        "sample_rate": "${sample_rate}", "n_chroma": 12, "radix2_exp": 14, "argmax": True, "match_len_on_eval": True,
        "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None}}
    ac = tmp_path / "ac"
    model.save_pretrained(tmp_path / "ac_written", format="audiocraft")  # its codec file (tested elsewhere)
    ac.mkdir()
    (ac / "compression_state_dict.bin").write_bytes((tmp_path / "ac_written/compression_state_dict.bin").read_bytes())
    torch.save({"best_state": _audiocraft_melody_lm(hf_melody_model), "xp.cfg": yaml.safe_dump(x, sort_keys=False),
                "version": "1.0", "exported": True}, ac / "state_dict.bin")
    t5 = tmp_path / "t5"
    hf_melody_model.text_encoder.save_pretrained(t5)
    tokenizer.save_pretrained(t5)
    loaded = yuefu.MusicGen.from_pretrained(str(ac), device="cpu", text_encoder=str(t5))
    assert loaded.config.melody and loaded.config.chroma_frames == 235 and not loaded.config.lm.cross_attention
    # fp16 LM weights: compare against our fp32 model with a loose check on the greedy tokens' source logits
    with torch.no_grad():
        chroma = model.melody_chroma_at(model._prepare_melodies([tune(3.0)], SR))
        codes = torch.randint(0, 2049, (1, 4, 10))
        a = loaded.lm(codes, prefix=loaded.encode_conditions([PROMPT], chroma).prefix)
        b = model.lm(codes, prefix=model.encode_conditions([PROMPT], chroma).prefix)
    assert (a - b).abs().max().item() < 0.05 * b.abs().max().item()
    # our writer's audiocraft output reads back to the same weights
    again = yuefu.MusicGen.from_pretrained(str(tmp_path / "ac_written"), device="cpu", text_encoder=str(t5))
    assert again.config.melody and torch.equal(again.melody_proj.weight, model.melody_proj.weight)


def test_stem_separation_falls_back_to_the_mix_with_one_warning(model, monkeypatch):
    from yuefu.conditioners import chroma as chroma_mod

    monkeypatch.setattr(chroma_mod, "_cached_htdemucs", lambda: None)  # demucs not installed / not cached
    monkeypatch.setattr(chroma_mod, "_warned_no_demucs", False)
    monkeypatch.setattr(model, "separate_melody_stems", True)
    wav = tune(3.0).expand(2, -1)  # stereo
    with pytest.warns(UserWarning, match="demucs") as record:
        stems = model._prepare_melodies([wav, wav], SR)
    assert len(record) == 1
    monkeypatch.setattr(model, "separate_melody_stems", False)
    assert all(torch.equal(a, b) for a, b in zip(stems, model._prepare_melodies([wav, wav], SR)))
