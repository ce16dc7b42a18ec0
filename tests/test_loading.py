"""Loading and saving: every layout loads to the same model, writers produce files the reference reads, and bad
checkpoints fail with one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest_models import put_in_hf_cache

import yuefu
from yuefu.errors import CheckpointError, ModelNotFoundError

PROMPT = "jazz trio with upright bass"


def greedy_tokens(model, seconds=0.4):
    model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=seconds)
    return model.generate([PROMPT], return_tokens=True)[1]


@pytest.fixture(scope="module")
def model(hf_dir):
    return yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu")


@pytest.fixture(scope="module")
def reference_tokens(model):
    return greedy_tokens(model)


def test_sharded_safetensors_and_torch_bin_load_the_same(hf_model, tokenizer, tmp_path, reference_tokens):
    sharded = tmp_path / "sharded"
    hf_model.save_pretrained(sharded, max_shard_size="200KB")
    tokenizer.save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").exists()
    assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(str(sharded), device="cpu")), reference_tokens)

    binary = tmp_path / "bin"
    binary.mkdir()
    shutil.copy(sharded / "config.json", binary / "config.json")
    tokenizer.save_pretrained(binary)
    sd = {k: v.clone() for k, v in hf_model.state_dict().items()}
    torch.save(sd, binary / "pytorch_model.bin")
    assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(str(binary), device="cpu")), reference_tokens)


def test_save_pretrained_transformers_is_read_by_transformers(model, hf_model, tmp_path):
    from transformers import MusicgenForConditionalGeneration

    out = model.save_pretrained(tmp_path / "tf", format="transformers")
    reloaded = MusicgenForConditionalGeneration.from_pretrained(str(out))
    ours, ref = reloaded.state_dict(), hf_model.state_dict()
    assert set(ref) <= set(ours)
    for k, v in ref.items():
        assert torch.allclose(ours[k].float(), v.float(), atol=1e-6), k


@pytest.mark.parametrize("fmt", ["yuefu", "transformers", "audiocraft"])
def test_save_then_load_gives_the_same_tokens(model, t5_dir, tmp_path, reference_tokens, fmt):
    out = model.save_pretrained(tmp_path / fmt, format=fmt)
    kw = {"text_encoder": str(t5_dir)} if fmt == "audiocraft" else {}
    assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(str(out), device="cpu", **kw)),
                       reference_tokens)


def test_save_refuses_non_empty_target_and_leaves_nothing_on_failure(model, tmp_path):
    target = tmp_path / "full"
    target.mkdir()
    (target / "x").write_text("keep me")
    with pytest.raises(CheckpointError):
        model.save_pretrained(target)
    assert (target / "x").read_text() == "keep me"
    with pytest.raises(CheckpointError):
        model.save_pretrained(tmp_path / "bad", format="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no temporary folders left


def test_official_id_loads_from_the_offline_cache(hf_dir, offline_cache, reference_tokens):
    put_in_hf_cache(offline_cache, "facebook/musicgen-small", {f.name: f for f in hf_dir.iterdir()})
    for name in ("facebook/musicgen-small", "small"):
        assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(name, device="cpu")), reference_tokens)


@pytest.mark.parametrize("name,expect", [
    ("facebook/musicgen-medium", "HF_HUB_OFFLINE"),  # known but not cached
    ("nobody/no-such-model", "HF_HUB_OFFLINE"),
    ("musicgen-huge", "unknown model"),
    ("facebook/musicgen-melody", "HF_HUB_OFFLINE"),  # melody models load now; this one is not cached
])
def test_unknown_or_unavailable_models_fail_clearly(offline_cache, name, expect):
    with pytest.raises(ModelNotFoundError) as e:
        yuefu.MusicGen.from_pretrained(name, device="cpu")
    assert expect in str(e.value) and "\n" not in str(e.value)


def corrupt_copies(hf_dir: Path, tmp: Path) -> dict[str, Path]:
    out = {}
    for name in ("no_weights", "truncated", "bad_json", "not_musicgen", "empty"):
        d = tmp / name
        d.mkdir()
        if name != "empty":
            shutil.copy(hf_dir / "config.json", d / "config.json")
        out[name] = d
    data = (hf_dir / "model.safetensors").read_bytes()
    (out["truncated"] / "model.safetensors").write_bytes(data[: len(data) // 2])
    (out["bad_json"] / "config.json").write_text("{not json")
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["model_type"] = "bert"
    (out["not_musicgen"] / "config.json").write_text(json.dumps(cfg))
    return out


def test_broken_checkpoints_fail_with_one_line(hf_dir, tmp_path):
    for name, folder in corrupt_copies(hf_dir, tmp_path).items():
        with pytest.raises(CheckpointError) as e:
            yuefu.MusicGen.from_pretrained(str(folder), device="cpu")
        assert "\n" not in str(e.value), name


def test_a_file_is_not_a_model(hf_dir):
    with pytest.raises(ModelNotFoundError):
        yuefu.MusicGen.from_pretrained(str(hf_dir / "config.json"), device="cpu")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_audiocraft_pickle_is_refused_without_running_code(audiocraft_dir, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(audiocraft_dir, evil)
    marker = tmp_path / "pwned"
    pkg = torch.load(evil / "state_dict.bin", weights_only=True)
    pkg["payload"] = _RunsCode(marker)
    torch.save(pkg, evil / "state_dict.bin")
    with pytest.raises(CheckpointError) as e:
        yuefu.MusicGen.from_pretrained(str(evil), device="cpu")
    assert not marker.exists()
    assert "\n" not in str(e.value)


def test_audiocraft_full_codec_file_loads(model, hf_model, t5_dir, tmp_path, reference_tokens):
    """A compression_state_dict.bin with the codec inside (not a reference) gives the same tokens."""
    out = model.save_pretrained(tmp_path / "ac", format="audiocraft")
    pkg = torch.load(out / "compression_state_dict.bin", weights_only=True)
    assert "best_state" in pkg and "xp.cfg" in pkg
    assert any(k.startswith("quantizer.vq.layers.0._codebook.embed") for k in pkg["best_state"])
    loaded = yuefu.MusicGen.from_pretrained(str(out), device="cpu", text_encoder=str(t5_dir))
    assert torch.equal(greedy_tokens(loaded), reference_tokens)


def test_stereo_model_round_trips_through_the_audiocraft_layout(hf_stereo_model, hf_stereo_dir, tokenizer, tmp_path):
    """Stereo: 8 interleaved codebooks with delays [0,0,1,1,2,2,3,3] survive audiocraft's xp.cfg
    (interleave_stereo_codebooks) and give the same tokens and [B, 2, T] audio."""
    stereo = yuefu.MusicGen.from_pretrained(str(hf_stereo_dir), device="cpu")
    out = stereo.save_pretrained(tmp_path / "ac", format="audiocraft")
    t5 = tmp_path / "t5"  # this model's own T5 encoder, as a user keeps t5-base next to an audiocraft checkpoint
    hf_stereo_model.text_encoder.save_pretrained(t5)
    tokenizer.save_pretrained(t5)
    again = yuefu.MusicGen.from_pretrained(str(out), device="cpu", text_encoder=str(t5))
    assert again.audio_channels == 2 and again.config.lm.delays == [0, 0, 1, 1, 2, 2, 3, 3]
    ta = greedy_tokens(stereo)
    tb = greedy_tokens(again)
    assert torch.equal(ta, tb)
    assert again.generate(["jazz trio"]).shape == (1, 2, int(0.4 * 32000))


def test_stereo_audiocraft_checkpoint_naming_its_codec_loads_from_the_cache(hf_stereo_model, hf_stereo_dir,
                                                                             tokenizer, offline_cache, tmp_path,
                                                                             monkeypatch):
    """The stereo repos' layout: an fp16 LM whose xp.cfg interleaves stereo codebooks, and a compression file that
    only names ``facebook/encodec_32khz`` (the mono codec, applied to left and right). Written here from the
    format's facts (conftest_models), with the stereo model's own codec in an offline HF cache; it generates the
    greedy tokens of the transformers-format stereo model with fp16-rounded LM weights, and the same audio."""
    import yaml
    from conftest_models import audiocraft_lm_state, audiocraft_lm_xp_cfg

    ac = tmp_path / "ac_stereo"
    ac.mkdir()
    xp = yaml.safe_load(audiocraft_lm_xp_cfg(hf_stereo_model))
    xp["channels"] = 2
    xp["interleave_stereo_codebooks"]["use"] = True
    xp["codebooks_pattern"]["delay"]["delays"] = [0, 0, 1, 1, 2, 2, 3, 3]
    torch.save({"best_state": audiocraft_lm_state(hf_stereo_model), "xp.cfg": yaml.safe_dump(xp, sort_keys=False),
                "version": "1.0", "exported": True}, ac / "state_dict.bin")
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.0"},
               ac / "compression_state_dict.bin")

    cache = tmp_path / "hf_cache"  # the session cache holds the mono model's codec under the same name
    codec_dir = tmp_path / "encodec"
    hf_stereo_model.audio_encoder.save_pretrained(codec_dir)
    put_in_hf_cache(cache, "facebook/encodec_32khz",
                    {f.name: f for f in codec_dir.iterdir() if f.suffix in (".json", ".safetensors")})
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    t5 = tmp_path / "t5"  # the stereo model's own T5, as a user keeps t5-base next to the checkpoint
    hf_stereo_model.text_encoder.save_pretrained(t5)
    tokenizer.save_pretrained(t5)

    loaded = yuefu.MusicGen.from_pretrained(str(ac), device="cpu", text_encoder=str(t5))
    assert loaded.audio_channels == 2 and loaded.config.lm.n_q == 8
    assert loaded.config.lm.delays == [0, 0, 1, 1, 2, 2, 3, 3]

    reference = yuefu.MusicGen.from_pretrained(str(hf_stereo_dir), device="cpu")
    with torch.no_grad():  # the weights as the fp16 audiocraft file stores them
        for p in [*reference.lm.parameters(), *reference.conditioner.output_proj.parameters()]:
            p.copy_(p.half().float())
    for m in (reference, loaded):
        m.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=0.4)
    ref_audio, ref_tokens = reference.generate([PROMPT], return_tokens=True)
    audio, tokens = loaded.generate([PROMPT], return_tokens=True)
    assert tokens.shape == (1, 8, 20)
    assert torch.equal(tokens, ref_tokens)
    assert audio.shape == ref_audio.shape == (1, 2, 20 * 640)
    assert (audio - ref_audio).abs().max().item() < 1e-5 * ref_audio.abs().max().item()  # the stereo model's codec
