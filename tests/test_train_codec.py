"""Specification of codec training (yuefu.train.codec_trainer and its losses).

The headline: a tiny codec (SEANet with 8 filters, 4 codebooks of 16 entries, 8 kHz) trained for 150 steps on synthetic
tones reconstructs them far better than at its start: the noise-to-signal ratio ||y - x||^2 / ||x||^2 falls by more than
20x (measured: 1.07 -> 0.0097, 110x) and SI-SNR rises above 10 dB (measured: -52 -> 21 dB). The same run meets a file
that was truncated after indexing, skips and counts it, and finishes. The losses are checked against closed forms.
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from yuefu.train import common
from yuefu.train.balancer import Balancer
from yuefu.train.codec_trainer import build_codec, train_codec
from yuefu.train.config import CodecTrainConfig, from_dict, to_dict
from yuefu.train.discriminator import (
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
)
from yuefu.train.losses import MelSpectrogram, MultiScaleMelLoss, si_snr
from yuefu.train.models import load_codec

SR = 8000
FREQS = (330.0, 470.0, 610.0, 890.0)


def write_tones(folder, freqs=FREQS, seconds: float = 1.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    for i, f in enumerate(freqs):
        sf.write(folder / f"tone_{i}.wav", (0.5 * np.sin(2 * np.pi * f * t + i)).astype(np.float32), SR)


def codec_config(data, run_dir, **changes) -> CodecTrainConfig:
    d = {
        "run_dir": str(run_dir),
        "data": {"path": str(data), "segment_seconds": 0.25, "batch_size": 8, "valid_fraction": 0.0},
        "model": {"codec": {"sample_rate": SR, "n_filters": 8, "dimension": 16, "ratios": [4, 4, 2], "n_q": 4,
                            "bins": 16, "lstm": 0},
                  "quantizer": {"kmeans_iters": 10}},
        # all five objectives on; the reconstruction ones weigh more so that 200 steps suffice
        "losses": {"l1": 1.0, "msspec": 0.5, "adv": 0.1, "feat": 0.2},
        "msspec": {"range_start": 7, "range_end": 9},
        "discriminator": {"filters": 4, "n_ffts": [128], "hop_lengths": [32], "win_lengths": [128]},
        "optim": {"lr": 0.003},
        "train": {"max_steps": 150, "threads": 1},
        "checkpoint": {"every": 75},
        "log": {"every": 50, "valid_every": 0, "valid_batches": 1, "progress": False, "num_samples": 1},
    }
    for key, value in changes.items():
        node = d
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(CodecTrainConfig, d)


def _tone_batch() -> torch.Tensor:
    t = torch.arange(2000) / SR
    return torch.stack([0.5 * torch.sin(2 * math.pi * f * (t + 0.1) + i) for i, f in enumerate(FREQS)])[:, None]


def _nsr(model, x: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        y = model(x).audio
    return float((y - x).pow(2).sum() / x.pow(2).sum()), float(si_snr(y, x).mean())


def test_tiny_codec_learns_tones_and_survives_a_corrupt_file(tmp_path, capsys):
    data = tmp_path / "tones"
    write_tones(data)
    write_tones(data / "extra", freqs=(700.0,))
    cfg = codec_config(data, tmp_path / "run")
    from yuefu.data import index_folder, write_manifest

    write_manifest(index_folder(data).entries, data / "manifest.jsonl")  # 5 files, all fine when indexed
    bad = data / "extra" / "tone_0.wav"
    bad.write_bytes(bad.read_bytes()[:3000])  # then one is truncated

    x = _tone_batch()
    torch.manual_seed(cfg.train.seed)
    start = build_codec(cfg).train()
    start(x)  # k-means initialises the codebooks on these very tones: the fairest start
    nsr_start, snr_start = _nsr(start, x)

    out = train_codec(cfg)
    trained = load_codec(out)
    nsr_end, snr_end = _nsr(trained, x)
    stdout = capsys.readouterr().out
    with capsys.disabled():
        print(f"\ncodec on tones: NSR {nsr_start:.3g} -> {nsr_end:.3g} ({nsr_start / nsr_end:.0f}x), "
              f"SI-SNR {snr_start:.1f} -> {snr_end:.1f} dB")
    assert nsr_start / nsr_end > 20, (nsr_start, nsr_end)
    assert snr_end > 10 > snr_start, (snr_start, snr_end)
    assert "skipped" in stdout and "tone_0.wav" in stdout and "truncated" in stdout
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    last = {r["name"]: float(r["value"]) for r in rows if r["step"] == "150" and r["split"] == "train"}
    assert last["skipped_files"] >= 1
    assert {"l1", "msspec", "adv", "feat", "d_loss", "commit", "g_loss"} <= set(last)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "latest", "step_00000075", "step_00000150"]
    assert (tmp_path / "run" / "samples" / "step_00000150" / "0_reconstruction.wav").exists()


def _valid_rows(metrics_csv, split: str = "valid") -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for r in csv.DictReader(open(metrics_csv)):
        if r["split"] == split:
            out.setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
    return out


def test_logged_training_scalars_are_means_over_the_log_interval(tmp_path):
    """A train row of metrics.csv stands for every step since the previous row: it is the mean of the values that
    the same run, logging at every step, records for those steps (the runs are deterministic)."""
    data = tmp_path / "tones"
    write_tones(data)
    rows = {}
    for every in (1, 3):
        run = tmp_path / f"every_{every}"
        train_codec(codec_config(data, run, **{"train.max_steps": 6, "checkpoint.every": 6, "log.num_samples": 0,
                                               "log.every": every}))
        rows[every] = _valid_rows(run / "metrics.csv", "train")
    assert sorted(rows[1]) == [1, 2, 3, 4, 5, 6] and sorted(rows[3]) == [3, 6]
    for step in (3, 6):
        for name in ("g_loss", "l1", "msspec", "adv", "feat", "d_loss", "grad_norm"):
            mean = float(np.mean([rows[1][s][name] for s in (step - 2, step - 1, step)]))
            assert rows[3][step][name] == pytest.approx(mean, rel=1e-4), (step, name)
        # the mean, not the value of the step the row lands on: some of them differ by far more than the tolerance
        assert any(rows[3][step][n] != pytest.approx(rows[1][step][n], rel=1e-2) for n in ("d_loss", "grad_norm"))


def test_validation_split_logs_si_snr_and_mel_distance(tmp_path, capsys):
    """With ``data.valid_fraction`` some of the four tones are held out (by path hash: two here) and validated every
    ``log.valid_every`` steps and at the end. With crops as long as the files (1 s, offset 0) and a batch of 4 that
    holds each held-out file equally often, the values logged at the last step are the mean SI-SNR (closed form,
    computed here in numpy) and mel distance of the final codec on the whole held-out files."""
    from yuefu.data.manifest import load_entries, split_entries
    from yuefu.train.losses import MelDistance

    data = tmp_path / "tones"
    write_tones(data)
    cfg = codec_config(data, tmp_path / "run", **{
        "data.valid_fraction": 0.25, "data.segment_seconds": 1.0, "data.batch_size": 4, "train.max_steps": 4,
        "checkpoint.every": 4, "log.every": 2, "log.valid_every": 2, "log.num_samples": 0})
    out = train_codec(cfg)
    entries, root = load_entries(data, report=lambda _msg: None)
    train, held_out = split_entries(entries, root, 0.25, cfg.train.seed)
    assert len(held_out) in (1, 2, 4) and train
    assert f"{len(train)} train / {len(held_out)} valid files" in capsys.readouterr().out
    valid = _valid_rows(tmp_path / "run" / "metrics.csv")
    assert sorted(valid) == [2, 4]
    for metrics in valid.values():
        assert set(metrics) == {"si_snr", "mel_distance"}
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["mel_distance"] >= 0

    codec = load_codec(out).eval()
    snrs, mels = [], []
    for entry in held_out:
        wav, sr = sf.read(entry.path, dtype="float32")
        assert sr == SR and len(wav) == SR
        x = torch.from_numpy(wav)[None, None]
        with torch.no_grad():
            y = codec(x).audio
            mels.append(float(MelDistance(SR)(y, x)[0]))
        est, ref = y.double().flatten().numpy(), x.double().flatten().numpy()
        est, ref = est - est.mean(), ref - ref.mean()
        target = (est @ ref) / (ref @ ref) * ref
        snrs.append(10 * np.log10((target @ target) / ((est - target) @ (est - target))))
    snr, mel = float(np.mean(snrs)), float(np.mean(mels))
    print(f"\ncodec validation at step 4: logged SI-SNR {valid[4]['si_snr']:.4f} dB (here {snr:.4f}), "
          f"mel distance {valid[4]['mel_distance']:.5f} (here {mel:.5f})")
    # 0.05 dB: si_snr's eps (1e-8 on both energies) moves it by 0.007 dB on this still quiet output (measured);
    # the two held-out tones themselves differ by 7 dB, so another file or crop could not pass
    assert abs(valid[4]["si_snr"] - snr) < 0.05
    assert math.isclose(valid[4]["mel_distance"], mel, rel_tol=1e-4)


def test_codec_resumes_exactly_after_a_crash(tmp_path, monkeypatch):
    data = tmp_path / "tones"
    write_tones(data)
    changes = {"train.max_steps": 6, "checkpoint.every": 2, "log.num_samples": 0, "ema.use": True,
               "model.quantizer.threshold_ema_dead_code": 4.0}  # dead codes get replaced: random draws to restore
    reference = load_codec(train_codec(codec_config(data, tmp_path / "a", **changes)))

    class Crash(Exception):
        pass

    def crash_at_5(step: int) -> None:
        if step == 5:
            raise Crash

    monkeypatch.setattr(common, "maybe_kill", crash_at_5)
    cfg = codec_config(data, tmp_path / "b", **changes)
    with pytest.raises(Crash):
        train_codec(cfg)
    monkeypatch.undo()
    resumed = load_codec(train_codec(cfg, resume=True))  # from step 4: step 5 is lost and done again
    ref, res = reference.state_dict(), resumed.state_dict()
    assert ref.keys() == res.keys()
    for k in ref:
        assert torch.equal(ref[k], res[k]), k


def test_sigterm_to_the_whole_process_group_checkpoints_and_resumes(tmp_path):
    """What a scheduler's pre-emption or ``timeout`` does: SIGTERM to every process of the run, its loader workers
    included. The run saves a checkpoint after its current step and exits cleanly, and ``--resume`` finishes it.
    (Before the workers ignored SIGTERM, their death made the main process fail with a traceback and no checkpoint.)"""
    data = tmp_path / "tones"
    write_tones(data)
    run = tmp_path / "run"
    config = tmp_path / "codec.yaml"
    config.write_text(yaml.safe_dump(to_dict(codec_config(data, run, **{
        "train.max_steps": 100_000, "checkpoint.every": 2, "log.num_samples": 0, "data.num_workers": 2}))))
    command = [sys.executable, "-m", "yuefu.train.cli", "train", "codec", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as under a scheduler
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoints" / "latest").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    stopped = re.search(r"stopped at step (\d+) \(SIGTERM\)", out + err)
    assert stopped, (out + err)[-3000:]
    step = int(stopped[1])
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{step:08d}"
    assert not (run / "model").exists()

    resumed = subprocess.run([*command, "--resume", "--set", f"train.max_steps={step + 2}"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {step})" in resumed.stdout
    assert load_codec(run / "model").sample_rate == SR


def test_a_second_run_in_the_same_folder_needs_resume(tmp_path):
    from yuefu.errors import InvalidArgumentError

    data = tmp_path / "tones"
    write_tones(data, freqs=(440.0,))
    cfg = codec_config(data, tmp_path / "run", **{"train.max_steps": 1, "log.num_samples": 0})
    train_codec(cfg)
    with pytest.raises(InvalidArgumentError, match="--resume"):
        train_codec(cfg)


# --- losses against closed forms ----------------------------------------------------------------------------------


def test_si_snr_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4000, generator=g)
    noise = torch.randn(3, 1, 4000, generator=g)
    noise -= (noise * x).sum(-1, keepdim=True) / x.pow(2).sum(-1, keepdim=True) * x  # orthogonal to x
    noise -= noise.mean(-1, keepdim=True)
    x -= x.mean(-1, keepdim=True)
    noise = noise / noise.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True) * 0.1  # 20 dB below
    assert torch.allclose(si_snr(x + noise, x), torch.full((3,), 20.0), atol=1e-2)
    assert torch.allclose(si_snr(3.0 * (x + noise), x), si_snr(x + noise, x), atol=1e-4)  # scale-invariant


def test_mel_spectrogram_puts_a_tone_in_its_mel_band():
    sr, f = 16000, 1000.0
    mel = MelSpectrogram(sr, n_fft=1024, hop_length=256, n_mels=40, f_min=0.0, log=False)
    t = torch.arange(8000) / sr
    spec = mel(torch.sin(2 * math.pi * f * t)[None, None])  # [1, 40, frames]
    assert spec.shape == (1, 40, math.ceil(8000 / 256))
    hz_to_mel = lambda hz: 2595 * math.log10(1 + hz / 700)  # noqa: E731  (HTK, written independently)
    centres = torch.linspace(0, hz_to_mel(sr / 2), 42)[1:-1]
    expected = int(torch.argmin((centres - hz_to_mel(f)).abs()))
    assert int(spec[0, :, 5].argmax()) == expected
    assert MultiScaleMelLoss(sr, 6, 9)(spec.new_ones(1, 1, 4000), spec.new_ones(1, 1, 4000)) == 0


def test_balancer_gives_each_loss_its_share_of_the_gradient():
    y = torch.zeros(2, 3, requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    losses = {"a": 100 * (y - target).pow(2).sum(), "b": 0.01 * (y * torch.tensor([0.0, 0.0, 1.0])).sum()}
    bal = Balancer({"a": 3.0, "b": 1.0}, per_batch_item=False, total_norm=2.0, ema_decay=0.0)
    grad, _ = bal.gradient(losses, y)
    ga, gb = (torch.autograd.grad(losses[k], y, retain_graph=True)[0] for k in ("a", "b"))
    expected = 2.0 * (0.75 * ga / ga.norm() + 0.25 * gb / gb.norm())
    assert torch.allclose(grad, expected, atol=1e-6)
    plain = Balancer({"a": 3.0, "b": 1.0}, balance_grads=False)
    assert torch.allclose(plain.gradient(losses, y)[0], 3 * ga + gb)


def test_discriminator_shapes_and_hinge_losses():
    disc = MultiScaleSTFTDiscriminator(4, 1, [128, 64], [32, 16], [128, 64])
    logits, fmaps = disc(torch.randn(2, 1, 2000))
    assert len(logits) == 2 and len(fmaps) == 2 and all(len(f) == 5 for f in fmaps)
    assert logits[0].shape[:2] == (2, 1)
    zeros = [torch.zeros(2, 1, 3, 3)]
    assert discriminator_loss(zeros, zeros) == 2.0  # relu(1 + 0) + relu(1 - 0)
    assert discriminator_loss([torch.full((4,), -2.0)], [torch.full((4,), 2.0)]) == 0.0  # confident and right
    assert generator_adv_loss([torch.full((4,), 0.5), torch.full((4,), -1.5)]) == 0.5  # mean of -D(fake)
    f = [[torch.ones(2, 3), torch.zeros(2, 3)]]
    r = [[torch.zeros(2, 3), torch.zeros(2, 3)]]
    assert feature_matching_loss(f, r) == 0.5


def test_decoder_fine_tune_keeps_the_codes(tmp_path):
    """``model.freeze: [encoder, quantizer]`` trains the decoder alone: encoder weights and codebooks come out
    bit-identical (so the codes, and an LM trained on them, stay valid), the decoder moves and its reconstruction
    of the tones improves."""
    data = tmp_path / "tones"
    write_tones(data)
    short = {"train.max_steps": 40, "checkpoint.every": 40, "log.num_samples": 0,
             "losses": {"l1": 1.0, "msspec": 0.5, "adv": 0.0, "feat": 0.0}}
    base = load_codec(train_codec(codec_config(data, tmp_path / "base", **short)))
    cfg = codec_config(data, tmp_path / "ft", **{**short, "train.max_steps": 60,
                                                  "optim.lr": 0.001,
                                                  "model.init_from": str(tmp_path / "base" / "model"),
                                                  "model.freeze": ["encoder", "quantizer"]})
    tuned = load_codec(train_codec(cfg))
    b, t = base.state_dict(), tuned.state_dict()
    assert b.keys() == t.keys()
    fixed = [k for k in b if k.startswith(("encoder.", "quantizer."))]
    assert fixed and all(torch.equal(b[k], t[k]) for k in fixed)
    assert any(not torch.equal(b[k], t[k]) for k in b if k.startswith("decoder."))
    x = _tone_batch()
    base.eval(), tuned.eval()
    with torch.no_grad():
        assert torch.equal(base.encode(x), tuned.encode(x))
    (nsr_base, _), (nsr_tuned, _) = _nsr(base, x), _nsr(tuned, x)
    print(f"\ndecoder fine-tune: NSR {nsr_base:.3g} -> {nsr_tuned:.3g}")
    assert nsr_tuned < nsr_base


def test_discriminator_warmup_trains_the_discriminator_alone(tmp_path):
    """``discriminator.warmup_steps: N``: for N steps only the discriminator learns, against the fixed codec, whose
    weights and codebooks stay bit-identical; its hinge loss leaves chance (2.0); from step N the codec trains."""
    from yuefu.train import state as ckpt_state

    data = tmp_path / "tones"
    write_tones(data)
    short = {"train.max_steps": 40, "checkpoint.every": 40, "log.num_samples": 0,
             "losses": {"l1": 1.0, "msspec": 0.5, "adv": 0.0, "feat": 0.0}}
    base = load_codec(train_codec(codec_config(data, tmp_path / "base", **short))).state_dict()
    cfg = codec_config(data, tmp_path / "gan", **{
        "train.max_steps": 40, "discriminator.warmup_steps": 30, "checkpoint.every": 10, "checkpoint.keep_last": 8,
        "log.every": 10, "log.num_samples": 0,
        "model.init_from": str(tmp_path / "base" / "model"), "model.freeze": ["encoder", "quantizer"]})
    final = load_codec(train_codec(cfg)).state_dict()
    states = {s: ckpt_state.load_state(ckpt_state.checkpoint_dir(tmp_path / "gan") / ckpt_state.step_name(s))
              for s in (10, 30, 40)}
    for step in (10, 30):  # the codec is untouched through the warm-up
        assert all(torch.equal(states[step]["model"][k], base[k]) for k in base), step
    d10, d30 = states[10]["discriminator"], states[30]["discriminator"]
    assert any(not torch.equal(d10[k], d30[k]) for k in d10)  # while the discriminator learns
    assert any(not torch.equal(final[k], base[k]) for k in base if k.startswith("decoder."))  # then the codec moves
    train = {}
    for r in csv.DictReader(open(tmp_path / "gan" / "metrics.csv")):
        if r["split"] == "train":
            train.setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
    assert "g_loss" not in train[30] and "g_loss" in train[40]
    print(f"\nwarm-up hinge loss: {train[10]['d_loss']:.3f} (step 10), {train[30]['d_loss']:.3f} (step 30); "
          "chance 2.0")
    assert train[30]["d_loss"] < 1.8


@pytest.mark.parametrize("changes, message", [
    ({"discriminator.warmup_steps": 5, "losses": {"l1": 1.0, "adv": 0.0, "feat": 0.0}},
     "discriminator.warmup_steps: needs an adversarial loss"),
    ({"discriminator.warmup_steps": 150}, "discriminator.warmup_steps: must be below train.max_steps"),
    ({"discriminator.warmup_steps": -1}, "warmup_steps: must be >= 0"),
])
def test_discriminator_warmup_is_checked(tmp_path, changes, message):
    from yuefu.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message):
        codec_config(tmp_path, tmp_path / "run", **changes)


@pytest.mark.parametrize("model, message", [
    ({"freeze": ["decoder"]}, "needs model.init_from"),
    ({"init_from": "x", "freeze": ["vocoder"]}, "unknown part 'vocoder'"),
    ({"init_from": "x", "freeze": ["encoder", "quantizer", "decoder"]}, "leaves nothing to train"),
])
def test_freeze_is_checked(tmp_path, model, message):
    from yuefu.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message):
        codec_config(tmp_path, tmp_path / "run", **{f"model.{k}": v for k, v in model.items()})
