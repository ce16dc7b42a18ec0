"""Specification of LM training (yuefu.train.lm_trainer) and of training configs (yuefu.train.config).

The headline: a tiny LM (dim 64, 2 layers) trained on one short clip memorises its token sequence: the training loss
ends near 0 (< 0.05; measured 0.0007 after 150 steps), and the saved model, loaded with ``MusicGen.from_pretrained``,
regenerates exactly those tokens by greedy decoding from the clip's description. That pins the whole chain: the
pattern's targets and mask, the shared forward, the checkpoint format. The loss definition itself is checked against
closed forms from the facts file (step s of the delay pattern holds code t = s - 1 - delay_k).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from yuefu.codec import CompressionModel
from yuefu.config import CodecConfig
from yuefu.lm.patterns import delay_pattern
from yuefu.train.config import LMTrainConfig, from_dict, load_config
from yuefu.train.lm_trainer import lm_loss, onset_weights, target_mask, train_lm
from yuefu.train.models import save_codec

SR = 8000


def make_codec(folder, bins: int = 32, seed: int = 0):
    """A tiny 50 Hz codec with random codebooks (as if trained), saved as a codec folder."""
    torch.manual_seed(seed)
    codec = CompressionModel(CodecConfig(sample_rate=SR, n_filters=4, dimension=16, ratios=[8, 5, 4], n_q=4,
                                         bins=bins, lstm=0))
    with torch.no_grad():
        scale = codec.encoder(torch.randn(1, 1, SR)).std()
        for cb in codec.quantizer.codebooks:
            cb.embed.copy_(torch.randn_like(cb.embed) * scale)
            cb.inited.fill_(1.0)
    save_codec(codec, folder)
    return folder


def make_noise_clips(folder, descriptions: list[str], seconds: float = 0.5, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, text in enumerate(descriptions):
        sf.write(folder / f"clip_{i}.wav", (0.3 * rng.standard_normal(int(SR * seconds))).astype(np.float32), SR)
        (folder / f"clip_{i}.json").write_text(f'{{"description": "{text}", "genre": "noise"}}')


def lm_config(run_dir, data, codec, t5, **overrides) -> dict:
    cfg = {
        "run_dir": str(run_dir),
        "data": {"path": str(data), "segment_seconds": 0.5, "batch_size": 4, "valid_fraction": 0.0},
        "model": {"codec": str(codec), "lm": {"dim": 64, "num_heads": 4, "num_layers": 2},
                  "text": {"kind": "t5", "name": str(t5)}},
        "optim": {"lr": 0.003, "warmup_steps": 10, "weight_decay": 0.0},
        "train": {"max_steps": 10, "threads": 1},
        "checkpoint": {"every": 100},
        "log": {"every": 10, "progress": False, "num_samples": 0},
    }
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def test_targets_are_the_pattern_sequence_shifted_by_one_step():
    K, T, delays = 4, 6, [0, 1, 2, 3]
    codes = torch.arange(K * T).view(1, K, T) + 100  # every code says where it is: 100 + k * T + t
    pattern = delay_pattern(K, T, delays)
    seq = pattern.build(codes, special_token=2048)
    mask = target_mask(pattern, torch.tensor([T]))  # [1, K, S-1]
    targets = seq[..., 1:]
    for k in range(K):
        for s in range(pattern.num_steps - 1):
            t = s - delays[k]  # the LM output at step s predicts step s + 1, which holds frame s - delay_k
            assert bool(mask[0, k, s]) == (0 <= t < T)
            if 0 <= t < T:
                assert targets[0, k, s] == 100 + k * T + t
    assert int(mask.sum()) == K * T  # every code is a target exactly once, no special cell is
    short = target_mask(pattern, torch.tensor([4]))  # a clip that ends after 4 frames
    assert int(short.sum()) == K * 4


def test_loss_is_the_mean_cross_entropy_per_codebook():
    K, T, card = 2, 5, 16
    pattern = delay_pattern(K, T, [0, 1])
    codes = torch.randint(0, card, (3, K, T), generator=torch.Generator().manual_seed(0))
    seq = pattern.build(codes, card)
    mask = target_mask(pattern, torch.tensor([5, 5, 3]))
    ce, count = lm_loss(torch.zeros(3, K, pattern.num_steps - 1, card), seq, mask)
    assert torch.equal(count, torch.tensor([13.0, 13.0]))  # 5 + 5 + 3 frames per codebook
    assert torch.allclose(ce / count, torch.full((K,), math.log(card)))  # uniform logits: log(card) per cell
    logits = torch.full((3, K, pattern.num_steps - 1, card), -30.0).scatter(-1, seq[..., 1:].clamp(max=card - 1)
                                                                             .unsqueeze(-1), 30.0)
    assert float(lm_loss(logits, seq, mask)[0].sum()) < 1e-20  # right everywhere: zero loss


def test_onset_weighted_loss_is_the_weighted_mean_over_frames():
    """``loss.onset_seconds``: the targets of a crop's first frames weigh more. Reference in frame order, never
    through the pattern: the code of frame t is t, the logits are one fixed vector v at every step, so the target of
    frame t costs logsumexp(v) - v[t] wherever the delay pattern puts it."""
    K, T, card, onset, w = 4, 12, 16, 3, 5.0
    pattern = delay_pattern(K, T, [0, 1, 2, 3])
    codes = torch.arange(T).expand(2, K, T)  # [B, K, T]: frame t holds code t
    seq = pattern.build(codes, card)
    mask = target_mask(pattern, torch.tensor([T, 8]))  # the second clip ends after 8 frames
    v = torch.randn(card, generator=torch.Generator().manual_seed(0))
    logits = v.expand(2, K, pattern.num_steps - 1, card)
    weight = onset_weights(pattern, onset, w)
    ce, count = lm_loss(logits, seq, mask, weight)
    cost = (torch.logsumexp(v, 0) - v[:T]).double()  # [T]
    fw = torch.where(torch.arange(T) < onset, w, 1.0).double()  # [T] weight of frame t
    want = ((cost * fw).sum() + (cost[:8] * fw[:8]).sum()) / (fw.sum() + fw[:8].sum())
    assert torch.allclose(ce / count, want.float().expand(K), atol=1e-5)
    assert torch.allclose(count, (fw.sum() + fw[:8].sum()).float().expand(K))
    assert onset_weights(pattern, onset, 1.0) is None and onset_weights(pattern, 0, w) is None


def test_lm_memorises_a_clip_and_regenerates_it(tmp_path, t5_dir):
    from yuefu.musicgen import MusicGen

    data = tmp_path / "data"
    make_noise_clips(data, ["a short noisy memory"])
    codec = make_codec(tmp_path / "codec")
    cfg = from_dict(LMTrainConfig, lm_config(
        tmp_path / "run", data, codec, t5_dir,
        **{"train.max_steps": 150, "optim.schedule": "constant", "log.every": 25,
           "data.merge_text_p": 0.0, "data.word_dropout": 0.0, "data.cond_dropout": 0.0}))
    out = train_lm(cfg)

    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv")) if r["name"] == "loss"]
    final_loss = float(rows[-1]["value"])
    model = MusicGen.from_pretrained(str(out), device="cpu")
    wav, _ = sf.read(data / "clip_0.wav", dtype="float32")
    expected = model.compression_model.encode(torch.from_numpy(wav)[None, None])  # [1, 4, 25]
    assert len(set(expected.flatten().tolist())) > 12  # noise through random codebooks: no easy sequence
    model.set_generation_params(use_sampling=False, duration=0.5, cfg_coef=1.0, extend_stride=0.25)
    _, tokens = model.generate(["a short noisy memory"], return_tokens=True)
    print(f"\nLM memorisation: final training loss {final_loss:.4f}; greedy tokens equal: "
          f"{torch.equal(tokens, expected)}")
    assert final_loss < 0.05
    assert torch.equal(tokens, expected)


def test_logged_training_loss_is_the_mean_over_the_log_interval(tmp_path, t5_dir):
    """A train row stands for the steps since the previous row: the mean of what the same (deterministic) run,
    logging at every step, records for them."""
    data = tmp_path / "data"
    make_noise_clips(data, ["lo-fi hip hop with a warm piano", "rock band"])
    codec = make_codec(tmp_path / "codec")
    rows: dict[int, dict[int, dict[str, float]]] = {}
    for every in (1, 2):
        train_lm(from_dict(LMTrainConfig, lm_config(tmp_path / f"every_{every}", data, codec, t5_dir, **{
            "train.max_steps": 4, "log.every": every})))
        rows[every] = {}
        for r in csv.DictReader(open(tmp_path / f"every_{every}" / "metrics.csv")):
            if r["split"] == "train":
                rows[every].setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
    assert sorted(rows[2]) == [2, 4]
    for step in (2, 4):
        for name in ("loss", "ce_0", "grad_norm"):
            mean = (rows[1][step - 1][name] + rows[1][step][name]) / 2
            assert rows[2][step][name] == pytest.approx(mean, rel=1e-4), (step, name)
        assert rows[2][step]["loss"] != pytest.approx(rows[1][step]["loss"], rel=1e-3)


def test_validation_logs_per_codebook_cross_entropy_and_perplexity(tmp_path, t5_dir):
    """A run with a separate validation set (``data.valid_path``) validates every ``log.valid_every`` steps and at
    the end. metrics.csv holds, per codebook, the cross-entropy ce_k and the perplexity ppl_k = exp(ce_k), with
    loss = mean_k ce_k and ppl = exp(loss). The last values are the final model's cross-entropy on the valid clips,
    computed here from the definition (step s of the delay pattern holds frame s - 1 - delay_k)."""
    import torch.nn.functional as F

    from yuefu.musicgen import MusicGen

    data, valid = tmp_path / "data", tmp_path / "valid"
    make_noise_clips(data, ["lo-fi hip hop with a warm piano", "rock band"])
    text = "calm ambient pads"  # one description for both valid clips: no padding in the reference below
    make_noise_clips(valid, [text, text], seed=1)
    codec = make_codec(tmp_path / "codec")
    out = train_lm(from_dict(LMTrainConfig, lm_config(tmp_path / "run", data, codec, t5_dir, **{
        "data.valid_path": str(valid), "train.max_steps": 4, "log.every": 2, "log.valid_every": 2,
        "log.valid_batches": 1})))

    logged: dict[int, dict[str, float]] = {}
    for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv")):
        if r["split"] == "valid":
            logged.setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
    assert sorted(logged) == [2, 4]
    K = 4
    for m in logged.values():
        assert set(m) == {"loss", "ppl", "text_gain", *(f"ce_{k}" for k in range(K)), *(f"ppl_{k}" for k in range(K))}
        # both valid clips have the same text, so swapping the texts between them changes nothing
        assert abs(m.pop("text_gain")) < 1e-5
        assert all(math.isfinite(v) and v > 0 for v in m.values())
        for k in range(K):  # values are written with 6 significant digits
            assert math.isclose(m[f"ppl_{k}"], math.exp(m[f"ce_{k}"]), rel_tol=1e-4)
        assert math.isclose(m["loss"], sum(m[f"ce_{k}"] for k in range(K)) / K, rel_tol=1e-5)
        assert math.isclose(m["ppl"], math.exp(m["loss"]), rel_tol=1e-4)

    model = MusicGen.from_pretrained(str(out), device="cpu")
    delays, special = model.config.lm.delays, model.lm.special_token
    ce = torch.zeros(K, dtype=torch.float64)
    with torch.no_grad():
        cond, _ = model.conditioner([text])
        for i in range(2):
            wav, _ = sf.read(valid / f"clip_{i}.wav", dtype="float32")
            codes = model.compression_model.encode(torch.from_numpy(wav)[None, None])[0]  # [K, 25]
            T = codes.shape[-1]
            seq = torch.full((1, K, T + max(delays) + 1), special)
            for k, d in enumerate(delays):
                seq[0, k, 1 + d:1 + d + T] = codes[k]
            logits = model.lm(seq[..., :-1], cross_src=cond)[0]  # [K, S-1, card]: step s predicts step s + 1
            for k, d in enumerate(delays):
                ce[k] += F.cross_entropy(logits[k, d:d + T].double(), codes[k]) / 2  # both clips: T frames each
    print(f"\nLM validation at step 4: logged ce {[logged[4][f'ce_{k}'] for k in range(K)]}, "
          f"here {[round(float(v), 5) for v in ce]}")
    for k in range(K):
        assert math.isclose(logged[4][f"ce_{k}"], float(ce[k]), rel_tol=1e-4)


def test_configs_are_validated_with_one_line_errors(tmp_path, capsys):
    from yuefu.errors import InvalidArgumentError
    from yuefu.train.cli import main

    base = lm_config(tmp_path / "run", tmp_path, tmp_path / "codec", "t5")
    cases = [
        ({"optim": {"lrr": 1e-3}}, "unknown key optim.lrr (did you mean optim.lr?)"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"data": {"batch_size": 2.5}}, "data.batch_size: expected an integer"),
        ({"train": {"precision": "fp8"}}, "train.precision: must be auto, fp32, bf16 or fp16"),
        ({"model": {"codec": None}}, "model.codec: is required"),
        ({"model": {"lora": {"targets": ["attn"]}}}, "model.lora.targets: unknown target 'attn'"),
        ({"loss": {"onset_weight": 0}}, "loss.onset_weight: must be > 0, got 0"),
    ]
    for change, message in cases:
        d = yaml.safe_load(yaml.safe_dump(base))
        for section, values in change.items():
            d.setdefault(section, {}).update(values)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(d))
        with pytest.raises(InvalidArgumentError) as e:
            load_config(path, LMTrainConfig)
        assert message in str(e.value) and "\n" not in str(e.value)
    # through the command line: one line on stderr, exit code 2
    assert main(["train", "lm", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("yuefu: error:") and len(err.splitlines()) == 1
    # "3e-4" is a string to YAML but a number to us; --set overrides
    path.write_text(yaml.safe_dump(base).replace("0.003", "3e-4"))
    cfg = load_config(path, LMTrainConfig, ["train.max_steps=7", "data.word_dropout=0.1"])
    assert (cfg.optim.lr, cfg.train.max_steps, cfg.data.word_dropout) == (3e-4, 7, 0.1)


def test_shipped_example_configs_are_valid():
    from pathlib import Path

    from yuefu.train.config import CodecTrainConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    kinds = {"codec": CodecTrainConfig, "lm": LMTrainConfig, "finetune": LMTrainConfig}
    for folder in (configs / "train", configs / "yuefu-mini"):  # examples, and the built-in model's recipe
        found = sorted(folder.glob("*.yaml"))
        assert len(found) >= 3
        for path in found:
            load_config(path, kinds[path.stem.split("-")[0]])


def test_tempo_token_trains_and_ships_with_the_model(tmp_path, t5_dir):
    """``model.tempo: true``: the projection of the tempo token is trained (it gets a gradient exactly when a text
    states a BPM), saved, and loaded back; the loaded conditioner appends the token."""
    from yuefu.musicgen import MusicGen
    from yuefu.train.lm_trainer import LMTrainModule, build_models

    data = tmp_path / "data"
    make_noise_clips(data, ["noise at 80 BPM", "noise at 160 BPM"])
    codec = make_codec(tmp_path / "codec")
    cfg = from_dict(LMTrainConfig, lm_config(tmp_path / "run", data, codec, t5_dir,
                                             **{"model.tempo": True, "data.cond_dropout": 0.0,
                                                "data.valid_fraction": 0.5, "loss.onset_seconds": 0.1,
                                                "loss.onset_weight": 4.0}))
    built = build_models(cfg)
    module = LMTrainModule(built.lm, built.conditioner)
    assert any(p is module.tempo_proj.linear.weight for p in module.parameters())  # what the optimizer updates
    codes = torch.randint(0, 32, (2, 4, 12))
    for texts, moved in ((["noise", "noise"], False), (["noise at 80 BPM", "noise"], True)):
        module.zero_grad()
        module(codes, texts).logsumexp(-1).mean().backward()
        grad = module.tempo_proj.linear.weight.grad
        assert grad is not None and bool(grad.abs().sum() > 0) == moved

    out = train_lm(cfg)
    logged = {r["name"] for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))}
    # validation measures how much the stated BPM helps, over the whole crop and over its weighted onset
    assert {"text_gain", "tempo_gain", "onset_tempo_gain"} <= logged
    model = MusicGen.from_pretrained(str(out), device="cpu")
    assert model.config.text.tempo and model.conditioner.tempo_proj.linear.weight.abs().sum() > 0
    with torch.no_grad():
        cond, mask = model.conditioner(["noise at 80 BPM"])
    assert cond.shape[1] == model.conditioner.encode_text(["noise at 80 BPM"])[1].shape[1] + 1 and mask[0, -1] == 1


def test_beat_clock_trains_from_each_crops_first_frame(tmp_path, t5_dir):
    """``model.beat_clock: true``: row b's clock at position s is the closed-form phase of frame start_b + s at the
    BPM its text states (start_b: where the crop begins in its file); the clock gets a gradient exactly when a text
    states a BPM; it is trained, saved and loaded back."""
    from yuefu.data.sidecar import MusicInfo
    from yuefu.data.token_cache import TokenCache, TokenDataset
    from yuefu.errors import InvalidArgumentError
    from yuefu.musicgen import MusicGen
    from yuefu.train.lm_trainer import LMTrainModule, build_models

    data = tmp_path / "data"
    make_noise_clips(data, ["noise at 80 BPM", "noise at 150 BPM"], seconds=1.0)
    codec = make_codec(tmp_path / "codec")
    with pytest.raises(InvalidArgumentError, match="model.beat_clock needs model.tempo"):
        build_models(from_dict(LMTrainConfig, lm_config(tmp_path / "r0", data, codec, t5_dir,
                                                        **{"model.beat_clock": True})))
    cfg = from_dict(LMTrainConfig, lm_config(tmp_path / "run", data, codec, t5_dir,
                                             **{"model.tempo": True, "model.beat_clock": True,
                                                "data.cond_dropout": 0.0, "data.valid_fraction": 0.5}))
    built = build_models(cfg)
    module = LMTrainModule(built.lm, built.conditioner)
    clock = module.tempo_proj.clock
    assert clock is not None and not clock.weight.any()  # zero-initialised
    assert any(p is clock.weight for p in module.parameters())  # what the optimizer updates
    with torch.no_grad():
        clock.weight.normal_()
    codes = torch.randint(0, 32, (2, 4, 12))
    texts, first = ["noise at 80 BPM", "noise"], torch.tensor([37, 5])
    want = torch.zeros(2, 12, clock.weight.shape[0], dtype=torch.float64)
    for s in range(12):
        phi = (37 + s) / 50 * 80 / 60
        feats = [math.sin(2 * math.pi * h * phi) for h in range(1, 5)] + [
            math.cos(2 * math.pi * h * phi) for h in range(1, 5)]
        want[0, s] = clock.weight.double() @ torch.tensor(feats, dtype=torch.float64)
    with torch.no_grad():
        cond, _ = built.conditioner(texts)
        ref = built.lm(codes, cross_src=cond, frame_cond=want.float())
        got = module(codes, texts, None, first, 50.0)
    assert torch.allclose(got, ref, atol=1e-5)
    with torch.no_grad():
        clock.weight.zero_()
    for texts, moved in ((["noise", "noise"], False), (["noise at 80 BPM", "noise"], True)):
        module.zero_grad()
        module(codes, texts, None, first, 50.0).logsumexp(-1).mean().backward()
        grad = clock.weight.grad
        assert (grad is not None and bool(grad.abs().sum() > 0)) == moved

    # the dataset reports where each crop starts
    cache = TokenCache(tmp_path / "cache", "x")
    entries = [type("E", (), {"path": tmp_path / "a.wav", "info": MusicInfo(description="d")})()]
    arr = torch.arange(4 * 90).view(4, 90) % 32
    cache.get = lambda entry: arr.numpy()  # type: ignore[method-assign]
    ds = TokenDataset(entries, cache, 20, seed=3)
    for position in range(5):
        ex = ds[(0, position)]
        assert torch.equal(ex.codes, arr[:, ex.start:ex.start + 20])

    out = train_lm(cfg)
    model = MusicGen.from_pretrained(str(out), device="cpu")
    assert model.config.text.beat_clock and model.conditioner.tempo_proj.clock.weight.abs().sum() > 0


def test_bf16_on_a_cpu_without_native_bf16_gets_a_one_line_warning(monkeypatch):
    """bf16 autocast is emulated on x86 CPUs without AVX-512 (an LM step 30x slower than fp32 on AVX2): the trainer
    says so. On x86 Linux the detector agrees with the kernel's CPU flags, an independent source."""
    import platform
    from pathlib import Path

    from yuefu.train import optim

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and platform.machine() in ("x86_64", "AMD64"):
        flags = set(cpuinfo.read_text().split())
        assert optim.cpu_has_native_bf16() == ({"avx512bw", "avx512vl", "avx512dq"} <= flags)
    cpu = torch.device("cpu")
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: False)
    note = optim.precision_warning(optim.resolve_precision("bf16", cpu), cpu)
    assert note is not None and "fp32" in note and "\n" not in note
    assert optim.precision_warning(optim.resolve_precision("fp32", cpu), cpu) is None
    assert optim.precision_warning(optim.resolve_precision("auto", cpu), cpu) is None
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)
    assert optim.precision_warning(torch.bfloat16, cpu) is None
