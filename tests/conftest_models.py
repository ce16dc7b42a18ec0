"""Session fixtures: a tiny transformers MusicGen saved to disk, and the same weights in audiocraft's layout.

The audiocraft copy is written here from the facts of audiocraft's exported format (key names, ``xp.cfg``
structure), independently of yuefu's own writer, so loading it tests the reader against the format itself.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from tiny import make_melody_feature_extractor, make_musicgen, make_musicgen_melody, make_tokenizer

REFERENCE = Path(__file__).resolve().parents[1] / "yuefu" / "checkpoints" / "templates"


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def hf_model(tokenizer):
    """transformers' MusicgenForConditionalGeneration, random, musicgen-small structure at toy size."""
    return make_musicgen(tokenizer, seed=0)


@pytest.fixture(scope="session")
def hf_dir(hf_model, tokenizer, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hf_musicgen")
    hf_model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def t5_dir(hf_model, tokenizer, tmp_path_factory) -> Path:
    """The tiny T5 encoder + tokenizer as a standalone folder (what users keep for ``t5-base`` offline)."""
    d = tmp_path_factory.mktemp("t5")
    hf_model.text_encoder.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def audiocraft_lm_state(hf_model) -> dict[str, torch.Tensor]:
    """transformers decoder weights renamed to audiocraft's exported LM keys (facts file, "LM" section)."""
    sd = hf_model.state_dict()
    out = {}
    dec = "decoder.model.decoder."
    n_layers = hf_model.config.decoder.num_hidden_layers
    for k in range(hf_model.config.decoder.num_codebooks):
        out[f"emb.{k}.weight"] = sd[f"{dec}embed_tokens.{k}.weight"]
        out[f"linears.{k}.weight"] = sd[f"decoder.lm_heads.{k}.weight"]
    for i in range(n_layers):
        p = f"{dec}layers.{i}."
        q = f"transformer.layers.{i}."
        for theirs, ours in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            out[q + f"{ours}.in_proj_weight"] = torch.cat(
                [sd[p + f"{theirs}.{x}_proj.weight"] for x in ("q", "k", "v")])
            out[q + f"{ours}.out_proj.weight"] = sd[p + f"{theirs}.out_proj.weight"]
        for theirs, ours in (("self_attn_layer_norm", "norm1"), ("encoder_attn_layer_norm", "norm_cross"),
                             ("final_layer_norm", "norm2")):
            for w in ("weight", "bias"):
                out[q + f"{ours}.{w}"] = sd[p + f"{theirs}.{w}"]
        out[q + "linear1.weight"] = sd[p + "fc1.weight"]
        out[q + "linear2.weight"] = sd[p + "fc2.weight"]
    for w in ("weight", "bias"):
        out[f"out_norm.{w}"] = sd[f"{dec}layer_norm.{w}"]
        out[f"condition_provider.conditioners.description.output_proj.{w}"] = sd[f"enc_to_dec_proj.{w}"]
    return {k: v.half() for k, v in out.items()}  # exported LMs are fp16


def audiocraft_lm_xp_cfg(hf_model) -> str:
    """The LM ``xp.cfg`` string: the reference tiny config with this model's sizes."""
    x = copy.deepcopy(yaml.safe_load((REFERENCE / "audiocraft_lm.yaml").read_text()))
    d = hf_model.config.decoder
    x["transformer_lm"].update(dim=d.hidden_size, num_heads=d.num_attention_heads, num_layers=d.num_hidden_layers,
                               hidden_scale=d.ffn_dim // d.hidden_size, n_q=d.num_codebooks, card=d.vocab_size)
    x["conditioners"]["description"]["t5"]["name"] = "t5-base"
    return yaml.safe_dump(x, sort_keys=False)  # keeps interpolations such as `${sample_rate}`, as audiocraft's


@pytest.fixture(scope="session")
def audiocraft_dir(hf_model, tmp_path_factory) -> Path:
    """audiocraft layout whose compression file only names ``facebook/encodec_32khz`` (as the stereo repos)."""
    d = tmp_path_factory.mktemp("audiocraft")
    torch.save({"best_state": audiocraft_lm_state(hf_model), "xp.cfg": audiocraft_lm_xp_cfg(hf_model),
                "version": "1.0", "exported": True}, d / "state_dict.bin")
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.0"},
               d / "compression_state_dict.bin")
    return d


def put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """Lay files out as huggingface_hub's cache does (refs/main -> snapshots/<rev>/...)."""
    rev = "0" * 40
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    for name, src in files.items():
        (snap / name).write_bytes(src.read_bytes())


@pytest.fixture(scope="session")
def hf_cache(hf_model, t5_dir, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny codec as ``facebook/encodec_32khz`` and the tiny T5 as ``t5-base``."""
    cache = tmp_path_factory.mktemp("hf_cache")
    codec_dir = tmp_path_factory.mktemp("encodec")
    hf_model.audio_encoder.save_pretrained(codec_dir)
    put_in_hf_cache(cache, "facebook/encodec_32khz",
                    {f.name: f for f in codec_dir.iterdir() if f.suffix in (".json", ".safetensors")})
    put_in_hf_cache(cache, "google-t5/t5-base", {f.name: f for f in t5_dir.iterdir() if f.is_file()})
    return cache


@pytest.fixture
def offline_cache(hf_cache, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 with the session's fake cache as the hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf_cache))
    return hf_cache


@pytest.fixture(scope="session")
def hf_stereo_model(tokenizer):
    """A stereo transformers MusicGen: 8 codebooks interleaved [L1, R1, L2, R2, ...]."""
    return make_musicgen(tokenizer, seed=1, stereo=True)


@pytest.fixture(scope="session")
def hf_stereo_dir(hf_stereo_model, tokenizer, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hf_stereo")
    hf_stereo_model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def hf_melody_model(tokenizer):
    """transformers' MusicgenMelodyForConditionalGeneration, random, musicgen-melody structure at toy size."""
    return make_musicgen_melody(tokenizer, seed=2)


@pytest.fixture(scope="session")
def hf_melody_dir(hf_melody_model, tokenizer, tmp_path_factory) -> Path:
    """save_pretrained + tokenizer + transformers' melody feature extractor config, as the hub repos hold."""
    d = tmp_path_factory.mktemp("hf_melody")
    hf_melody_model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    make_melody_feature_extractor().save_pretrained(d)
    return d
