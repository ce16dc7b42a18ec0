"""Specification of LoRA fine-tuning (yuefu.train.lora) from any loadable checkpoint.

Closed forms: fresh adapters (B = 0) change nothing; an adapted weight is W + (alpha / r) * B @ A, whether the
adapter is applied on the fly, merged in place, or merged in a state dict. The end-to-end test fine-tunes a
checkpoint in transformers' format (the tiny reference MusicGen of the test suite) and checks that exactly the
targeted weights moved, by exactly what the separately saved adapters say.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_train_lm import lm_config, make_noise_clips

from yuefu.config import LMConfig
from yuefu.lm.model import LMModel
from yuefu.train.config import LMTrainConfig, LoRAConfig, from_dict
from yuefu.train.lora import (
    apply_lora,
    load_adapters,
    lora_state_dict,
    merge_lora,
    merged_state_dict,
    save_adapters,
)


def _lm(seed: int = 0) -> LMModel:
    torch.manual_seed(seed)
    lm = LMModel(LMConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, n_q=2, card=16, delays=[0, 1]))
    lm.reset_parameters()
    return lm.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 17, (2, 2, 7), generator=g), torch.randn(2, 3, 32, generator=g)


def _randomise_adapters(lm: LMModel) -> None:
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)


def test_fresh_adapters_compute_what_the_base_computes():
    lm = _lm()
    codes, cond = _inputs()
    before = lm(codes, cross_src=cond)
    names = apply_lora(lm, LoRAConfig(use=True, rank=4, alpha=8))
    assert len(names) == 2 * 7  # 2 layers x (self q|k|v, self out, cross q, cross k|v, cross out, linear1, linear2)
    assert torch.equal(lm(codes, cross_src=cond), before)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)


def test_adapters_merge_into_the_weights():
    lm = _lm()
    codes, cond = _inputs()
    cfg = LoRAConfig(use=True, rank=4, alpha=8, targets=["self_attn.in_proj", "cross_attention.kv_proj", "ffn.linear2"])
    base = {k: v.clone() for k, v in lm.state_dict().items()}
    apply_lora(lm, cfg)
    _randomise_adapters(lm)
    adapted = lm(codes, cross_src=cond)
    assert not torch.allclose(adapted, _lm()(codes, cross_src=cond))
    adapters = lora_state_dict(lm)
    folded = merged_state_dict(lm.state_dict(), scale=cfg.alpha / cfg.rank)
    assert set(folded) == set(base)  # plain LMModel keys again
    for key in base:  # W + (alpha / r) * B @ A on the targets, W elsewhere
        module = key.removesuffix(".weight")
        if f"{module}.lora_A" in adapters:
            update = 2.0 * adapters[f"{module}.lora_B"] @ adapters[f"{module}.lora_A"]
            assert torch.allclose(folded[key], base[key] + update, atol=1e-6)
        else:
            assert torch.equal(folded[key], base[key])
    merge_lora(lm)
    assert set(lm.state_dict()) == set(base)
    assert torch.allclose(lm(codes, cross_src=cond), adapted, atol=1e-5)
    plain = _lm()
    plain.load_state_dict(folded)
    assert torch.allclose(plain(codes, cross_src=cond), adapted, atol=1e-5)


def test_adapters_save_and_load_on_their_own(tmp_path):
    lm = _lm()
    cfg = LoRAConfig(use=True, rank=2, alpha=4)
    apply_lora(lm, cfg)
    _randomise_adapters(lm)
    save_adapters(tmp_path / "adapters", lm, cfg, base_model="some/base")
    meta = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert (meta["rank"], meta["alpha"], meta["base_model"]) == (2, 4.0, "some/base")
    other = _lm()
    load_adapters(other, tmp_path / "adapters")
    codes, cond = _inputs()
    assert torch.equal(other(codes, cross_src=cond), lm(codes, cross_src=cond))


def test_finetune_a_transformers_checkpoint_with_lora(tmp_path, hf_dir):
    from safetensors.torch import load_file

    from yuefu.musicgen import MusicGen
    from yuefu.train.cli import main
    from yuefu.train.lm_trainer import train_lm

    data = tmp_path / "data"
    make_noise_clips(data, ["lo-fi hip hop with a warm piano", "calm ambient pads"])
    d = lm_config(tmp_path / "run", data, None, None,
                  **{"train.max_steps": 6, "checkpoint.every": 6, "optim.lr": 0.01, "optim.warmup_steps": 0})
    d["model"] = {"init_from": str(hf_dir), "lora": {"use": True, "rank": 4, "alpha": 8,
                                                       "targets": ["self_attn.in_proj", "ffn.linear1"]}}
    out = train_lm(from_dict(LMTrainConfig, d))

    base = MusicGen.from_pretrained(str(hf_dir), device="cpu")
    tuned = MusicGen.from_pretrained(str(out), device="cpu")
    adapters = load_file(str(tmp_path / "run" / "adapters" / "adapters.safetensors"))
    assert len(adapters) == 2 * 2 * 2  # 2 layers x 2 targets x (A, B)
    base_sd, tuned_sd = base.lm.state_dict(), tuned.lm.state_dict()
    moved = 0
    for key, w in base_sd.items():
        module = key.removesuffix(".weight")
        if f"{module}.lora_A" in adapters:
            update = 2.0 * adapters[f"{module}.lora_B"] @ adapters[f"{module}.lora_A"]
            assert torch.allclose(tuned_sd[key], w + update, atol=1e-6)
            moved += int(update.abs().max() > 0)
        else:
            assert torch.equal(tuned_sd[key], w), key  # everything else is the base checkpoint's
    assert moved == 4
    for a, b in zip(base.conditioner.output_proj.parameters(), tuned.conditioner.output_proj.parameters()):
        assert torch.equal(a, b)

    # merging the saved adapters into the base gives the exported model
    assert main(["train", "merge-lora", str(hf_dir), str(tmp_path / "run" / "adapters"), str(tmp_path / "merged")]) == 0
    merged = MusicGen.from_pretrained(str(tmp_path / "merged"), device="cpu").lm.state_dict()
    for key in tuned_sd:
        assert torch.allclose(merged[key], tuned_sd[key], atol=1e-6), key


@pytest.mark.parametrize("bad", [{"rank": 0}, {"targets": ["q_proj"]}])
def test_lora_config_errors(bad):
    from yuefu.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="model.lora"):
        from_dict(LMTrainConfig, {"run_dir": "r", "data": {"path": "d"},
                                  "model": {"init_from": "x", "lora": {"use": True, **bad}}})
