"""``yuefu generate`` end to end on tiny local models, as a user runs it, and ``models`` / ``download`` / ``info``.

References: the files' own headers (soundfile), the request the test made, the transformers model's parameter
count, and the normaliser's translation; regeneration is compared with the file written by the first run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest_models import put_in_hf_cache
from test_cli import run, yuefu_cmd

import yuefu
from yuefu.conditioners.normalize import normalize_prompt
from yuefu.errors import AudioFileError, InvalidArgumentError, ModelNotFoundError


def tone(path: Path, freq: float = 440.0, seconds: float = 2.0, sr: int = 22050) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.5 * np.sin(2 * math.pi * freq * t), sr)
    return path


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("[transformers]")]
    assert len(lines) == 1 and lines[0].startswith("yuefu: error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_each_format_has_the_requested_duration_and_rate(hf_dir, tmp_path, fmt):
    out = tmp_path / f"song.{fmt}"
    r = run("generate", "jazz trio", "--model", str(hf_dir), "--duration", "1.2", "--seed", "1", "--out", str(out),
            "--quiet")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(out))
    assert info.samplerate == 32000 and info.channels == 1
    assert info.format == {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG"}[fmt]
    assert abs(info.duration - 1.2) < 0.03
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_sidecar_records_the_request_and_regenerates_the_same_file(hf_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my set\nrock band with drums\n\n国风摇滚，古筝\n", encoding="utf-8")
    r = run("generate", "calm ambient pads", "--prompts-file", str(prompts), "--model", str(hf_dir),
            "--duration", "0.8", "--top-k", "50", "--temperature", "0.9", "--cfg-coef", "2.5", "--batch-size", "2",
            "--out", str(tmp_path / "set.wav"), "--quiet")  # no --seed: a random one is picked and recorded
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("set_*")) == [
        "set_0.json", "set_0.wav", "set_1.json", "set_1.wav", "set_2.json", "set_2.wav"]
    side = json.loads((tmp_path / "set_2.json").read_text(encoding="utf-8"))
    assert side["prompt"] == "国风摇滚，古筝"
    assert side["prompt_used"] == normalize_prompt("国风摇滚，古筝").text_used != side["prompt"]
    assert side["model"] == str(hf_dir) and side["yuefu_version"] == yuefu.__version__
    assert side["sample_rate"] == sf.info(str(tmp_path / "set_2.wav")).samplerate
    assert side["duration"] == pytest.approx(sf.info(str(tmp_path / "set_2.wav")).duration)
    req = side["request"]
    assert (req["top_k"], req["temperature"], req["cfg_coef"], req["duration"]) == (50, 0.9, 2.5, 0.8)
    assert req["prompts"] == ["国风摇滚，古筝"] and side["batch_index"] == 0  # third prompt: second batch of 2
    first = json.loads((tmp_path / "set_0.json").read_text())
    assert isinstance(first["seed"], int) and side["seed"] == first["seed"] + 1  # batch b: seed + b

    again = tmp_path / "again.wav"
    r = run("generate", "--from-sidecar", str(tmp_path / "set_2.json"), "--out", str(again), "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(sf.read(str(again))[0], sf.read(str(tmp_path / "set_2.wav"))[0])
    r = run("generate", "--from-sidecar", str(tmp_path / "set_1.json"), "--out", str(again), "--quiet")
    assert np.array_equal(sf.read(str(again))[0], sf.read(str(tmp_path / "set_1.wav"))[0])
    assert not np.array_equal(sf.read(str(again))[0], sf.read(str(tmp_path / "set_0.wav"))[0])


def test_melody_file_conditions_a_melody_model_and_is_fingerprinted(hf_melody_dir, hf_dir, tmp_path):
    melody = tone(tmp_path / "tune.wav")
    out = tmp_path / "restyled.wav"
    r = run("generate", "rock", "--model", str(hf_melody_dir), "--melody", str(melody), "--duration", "1",
            "--seed", "2", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["request"]["melody"] == str(melody.resolve()) and len(side["melody_sha256"]) == 64
    plain = tmp_path / "plain.wav"
    assert run("generate", "rock", "--model", str(hf_melody_dir), "--duration", "1", "--seed", "2", "--out",
               str(plain), "--quiet").returncode == 0
    assert not np.array_equal(sf.read(str(out))[0], sf.read(str(plain))[0])  # the melody changed the music
    # a sidecar that names its melody as uploaded (the web app, the API) regenerates with the file beside it
    downloads, elsewhere = tmp_path / "downloads", tmp_path / "elsewhere"  # run from a folder without the tune
    downloads.mkdir()
    elsewhere.mkdir()
    shutil.copy2(melody, downloads / "tune.wav")
    side["request"]["melody"] = "tune.wav"
    (downloads / "restyled.json").write_text(json.dumps(side))
    r = run("generate", "--from-sidecar", str(downloads / "restyled.json"), "--out", str(tmp_path / "z.wav"),
            "--quiet", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(sf.read(str(tmp_path / "z.wav"))[0], sf.read(str(out))[0])
    (downloads / "tune.wav").unlink()
    r = run("generate", "--from-sidecar", str(downloads / "restyled.json"), "--out", str(tmp_path / "z2.wav"),
            cwd=elsewhere)
    assert r.returncode == AudioFileError.exit_code and "beside the sidecar" in one_error_line(r)
    tone(melody, freq=330.0)  # the input changed: regeneration refuses rather than making something else
    r = run("generate", "--from-sidecar", str(out.with_suffix(".json")), "--out", str(tmp_path / "x.wav"))
    assert r.returncode == AudioFileError.exit_code and "has changed" in one_error_line(r)
    r = run("generate", "rock", "--model", str(hf_dir), "--melody", str(melody), "--duration", "1", "--out",
            str(tmp_path / "y.wav"))
    assert r.returncode == InvalidArgumentError.exit_code and "melody" in one_error_line(r)


def test_continuation_starts_with_the_prompt_audio(hf_dir, tmp_path):
    first = tmp_path / "first.wav"
    assert run("generate", "jazz", "--model", str(hf_dir), "--duration", "1", "--seed", "4", "--out", str(first),
               "--quiet").returncode == 0
    out = tmp_path / "longer.wav"
    r = run("generate", "jazz", "--model", str(hf_dir), "--continue", str(first), "--duration", "2", "--seed", "5",
            "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sf.info(str(out)).duration == pytest.approx(2.0, abs=0.03)
    # The prompt's tokens are kept: re-encoding the codec's own output reproduces it, so the first second of the
    # continuation is the decode of the same tokens (up to the codec's context at the joint and 16-bit rounding).
    a, b = sf.read(str(first))[0], sf.read(str(out))[0]
    head = slice(0, 32000 - 3200)
    assert np.corrcoef(a[head], b[head])[0, 1] > 0.95


def test_stream_emits_a_wav_stream_equal_to_the_file(hf_dir, tmp_path):
    out = tmp_path / "live.wav"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([*yuefu_cmd(), "generate", "calm piano", "--model", str(hf_dir), "--duration", "1.5",
                        "--seed", "7", "--stream", "--out", str(out)], capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    stream = r.stdout
    assert stream[:4] == b"RIFF" and stream[8:12] == b"WAVE"
    assert int.from_bytes(stream[24:28], "little") == 32000 and int.from_bytes(stream[22:24], "little") == 1
    pcm = np.frombuffer(stream[44:], dtype="<i2") / 32767.0
    written = sf.read(str(out))[0]
    assert pcm.shape == written.shape == (48000,)
    assert np.abs(pcm - written).max() <= 2 / 32767  # the same samples, rounded to 16 bits twice
    assert json.loads(out.with_suffix(".json").read_text())["stream"] is True
    again = tmp_path / "again.wav"  # a streamed file regenerates by streaming again: the same samples
    r = run("generate", "--from-sidecar", str(out.with_suffix(".json")), "--out", str(again), "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(sf.read(str(again))[0], written)


@pytest.mark.parametrize("case,code,words", [
    ("no_prompt", InvalidArgumentError.exit_code, "no prompt"),
    ("negative_duration", InvalidArgumentError.exit_code, "duration"),
    ("above_cap", InvalidArgumentError.exit_code, "duration"),
    ("unreadable_melody", AudioFileError.exit_code, "melody"),
    ("missing_melody", AudioFileError.exit_code, "no such file"),
    ("unknown_model", ModelNotFoundError.exit_code, "unknown model"),
    ("unwritable_out", AudioFileError.exit_code, "not writable"),
    ("empty_prompts_file", InvalidArgumentError.exit_code, "no prompts"),
    ("format_disagrees", InvalidArgumentError.exit_code, "disagree"),
    ("not_a_sidecar", InvalidArgumentError.exit_code, "sidecar"),
])
def test_bad_input_one_line_distinct_exit_code(hf_melody_dir, tmp_path, case, code, words):
    model = ["--model", str(hf_melody_dir)]
    out = ["--out", str(tmp_path / "o.wav")]
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00not really audio" * 10)
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    args = {
        "no_prompt": ["generate", *model, *out],
        "negative_duration": ["generate", "rock", *model, "--duration", "-1", *out],
        "above_cap": ["generate", "rock", *model, "--duration", "40", "--max-duration", "30", *out],
        "unreadable_melody": ["generate", "rock", *model, "--melody", str(garbage), "--duration", "1", *out],
        "missing_melody": ["generate", "rock", *model, "--melody", str(tmp_path / "nope.wav"), *out],
        "unknown_model": ["generate", "rock", "--model", "no-such-model", *out],
        "unwritable_out": ["generate", "rock", *model, "--out", str(locked / "o.wav")],
        "empty_prompts_file": ["generate", "--prompts-file", str(tmp_path / "empty.txt"), *model, *out],
        "format_disagrees": ["generate", "rock", *model, *out, "--format", "mp3"],
        "not_a_sidecar": ["generate", "--from-sidecar", str(tmp_path / "other.json"), *out],
    }[case]
    if case == "unwritable_out":
        if os.geteuid() == 0:  # root writes anywhere: make the "folder" a file instead
            locked.rmdir()
            locked.write_text("a file")
            args[-1] = str(locked / "o.wav")
            words = "does not exist"
        else:
            locked.chmod(0o500)
    r = run(*args)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert words in one_error_line(r)
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "o.json").exists()


def test_models_lists_known_ids_and_what_is_cached(hf_dir, hf_cache, tmp_path):
    cache = tmp_path / "cache"
    put_in_hf_cache(cache, "facebook/musicgen-small", {f.name: f for f in hf_dir.iterdir()})
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([*yuefu_cmd(), "models", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert set(rows) >= {"facebook/musicgen-small", "facebook/musicgen-large", "facebook/musicgen-melody",
                         "facebook/musicgen-stereo-small"}
    small = rows["facebook/musicgen-small"]
    assert small["cached"] and small["size_on_disk"] == sum(f.stat().st_size for f in hf_dir.iterdir())
    assert not rows["facebook/musicgen-large"]["cached"] and rows["facebook/musicgen-large"]["lm_params"] == "3.3B"
    # offline, download fails in one line; info describes the cached copy without downloading
    r = subprocess.run([*yuefu_cmd(), "download", "large"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == ModelNotFoundError.exit_code and "not in the local" in one_error_line(r)
    r = subprocess.run([*yuefu_cmd(), "info", "small", "--json"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "transformers"


def test_info_describes_a_model_and_a_file(hf_dir, hf_model, tmp_path):
    r = run("info", str(hf_dir), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    dec = hf_model.config.decoder
    assert info["lm"]["layers"] == dec.num_hidden_layers and info["lm"]["dim"] == dec.hidden_size
    reference = sum(p.numel() for p in hf_model.decoder.parameters())  # transformers' count of the same weights
    assert info["lm"]["params"] == reference
    assert info["sample_rate"] == 32000 and info["kind"] == "text"

    out = tmp_path / "x.flac"
    assert run("generate", "rock", "--model", str(hf_dir), "--duration", "0.5", "--seed", "3", "--out", str(out),
               "--quiet").returncode == 0
    r = run("info", str(out), "--json")
    file_info = json.loads(r.stdout)
    assert file_info["format"] == "FLAC" and file_info["frames"] == sf.info(str(out)).frames
    assert file_info["sidecar"]["seed"] == 3
    r = run("info", str(tmp_path / "nothing.wav"))
    assert r.returncode == ModelNotFoundError.exit_code  # neither a file nor a model


@pytest.mark.parametrize("command", ["app", "serve"])
def test_servers_fail_in_one_line(command, tmp_path):
    r = run(command, "--model", str(tmp_path / "missing"), "--port", "0")
    assert r.returncode == InvalidArgumentError.exit_code and "--port" in one_error_line(r)
    r = run(command, "--model", "no-such-model")
    assert r.returncode == ModelNotFoundError.exit_code and "unknown model" in one_error_line(r)


@pytest.mark.parametrize("command", [["generate", "rock"], ["app"], ["serve"]])
def test_without_a_builtin_model_the_model_must_be_given(command, tmp_path, monkeypatch, capsys):
    """An installation that does not ship yuefu-mini: every front door asks for --model, in one line."""
    from yuefu import cli
    from yuefu.checkpoints import builtin

    monkeypatch.setattr(builtin, "available", lambda: [])
    monkeypatch.chdir(tmp_path)
    assert cli.main(command) == InvalidArgumentError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yuefu: error: no model given: pass --model")
    assert list(tmp_path.iterdir()) == []


def test_tempo_drafts_from_the_command_line_are_recorded_and_reproduced(hf_dir, tmp_path):
    out = tmp_path / "reel.wav"
    args = ["generate", "a reel at 126 BPM", "--model", str(hf_dir), "--duration", "0.8", "--seed", "2", "--quiet"]
    r = run(*args, "--tempo-drafts", "3", "--tempo-draft-seconds", "0.4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    req = json.loads(out.with_suffix(".json").read_text())["request"]
    assert (req["tempo_drafts"], req["tempo_draft_seconds"]) == (3, 0.4)
    again = tmp_path / "again.wav"
    r = run("generate", "--from-sidecar", str(out.with_suffix(".json")), "--out", str(again), "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(sf.read(str(again))[0], sf.read(str(out))[0])
    plain = tmp_path / "plain.wav"
    assert run(*args, "--out", str(plain)).returncode == 0
    assert not np.array_equal(sf.read(str(plain))[0], sf.read(str(out))[0])  # the drafts changed the result
    for bad in (["--tempo-drafts", "99"], ["--tempo-drafts", "2", "--tempo-draft-seconds", "0"]):
        assert "tempo_draft" in one_error_line(run(*args, *bad, "--out", str(tmp_path / "x.wav")))
