"""The ``yuefu`` console script, run as a user runs it: files it writes, and one-line errors with exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from yuefu.errors import AudioFileError, CheckpointError, InvalidArgumentError, ModelNotFoundError


def yuefu_cmd() -> list[str]:
    exe = shutil.which("yuefu")
    assert exe, "the yuefu console script is not installed (pip install -e .)"
    return [exe]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*yuefu_cmd(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_generate_writes_wav_of_the_requested_duration(hf_dir, tmp_path):
    out = tmp_path / "song.wav"
    r = run("generate", "lo-fi hip hop with a warm piano", "--model", str(hf_dir), "--duration", "1.5",
            "--seed", "3", "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(out))
    assert info.samplerate == 32000 and info.channels == 1
    assert abs(info.duration - 1.5) < 0.05
    # the same seed reproduces the file; another seed does not
    again = tmp_path / "again.wav"
    assert run("generate", "lo-fi hip hop with a warm piano", "--model", str(hf_dir), "--duration", "1.5",
               "--seed", "3", "--out", str(again), "--quiet").returncode == 0
    assert torch.equal(torch.from_numpy(sf.read(str(out))[0]), torch.from_numpy(sf.read(str(again))[0]))


def test_several_prompts_write_numbered_flac_files(hf_dir, tmp_path):
    r = run("generate", "jazz trio", "calm ambient pads", "--model", str(hf_dir), "--duration", "0.5",
            "--out", str(tmp_path / "x.flac"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_0.flac", "x_0.json", "x_1.flac", "x_1.json"]


def test_convert_writes_a_loadable_folder(hf_dir, tmp_path):
    r = run("convert", str(hf_dir), str(tmp_path / "conv"), "--to", "yuefu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "conv" / "model.safetensors").exists()


@pytest.mark.parametrize("case,code", [
    ("no_prompt", InvalidArgumentError.exit_code),
    ("zero_duration", InvalidArgumentError.exit_code),
    ("huge_duration", InvalidArgumentError.exit_code),
    ("unknown_model", ModelNotFoundError.exit_code),
    ("unwritable_out", AudioFileError.exit_code),
    ("bad_extension", InvalidArgumentError.exit_code),
    ("corrupt_checkpoint", CheckpointError.exit_code),
    ("unknown_option", InvalidArgumentError.exit_code),
])
def test_bad_input_gives_one_line_and_exit_code(hf_dir, tmp_path, case, code):
    base = ["generate", "rock", "--model", str(hf_dir), "--duration", "0.5", "--out", str(tmp_path / "o.wav")]
    args = {
        "no_prompt": ["generate", "--model", str(hf_dir)],
        "zero_duration": base + ["--duration", "0"],
        "huge_duration": base + ["--duration", "7200"],
        "unknown_model": ["generate", "rock", "--model", "no-such-model"],
        "unwritable_out": base + ["--out", str(tmp_path / "missing_dir" / "o.wav")],
        "bad_extension": base + ["--out", str(tmp_path / "o.xyz")],
        "corrupt_checkpoint": ["generate", "rock", "--model", str(tmp_path)],
        "unknown_option": base + ["--tempo", "3"],
    }[case]
    if case == "corrupt_checkpoint":
        (tmp_path / "config.json").write_text("{broken")
    r = run(*args)
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("yuefu: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.wav").exists()


def test_module_entry_point_matches_console_script():
    r = subprocess.run([sys.executable, "-m", "yuefu", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("yuefu ")


@pytest.mark.parametrize("command", [("models",), ("--help",), ("--version",), ("-m", "yuefu.eval.cli", "--help"),
                                     ("-m", "yuefu.train.cli", "--help")])
def test_a_reader_that_leaves_early_gets_no_traceback(command):
    """`yuefu models | head -0`: stdout is closed before yuefu writes; it exits 141 (128 + SIGPIPE), quietly. So do
    argparse's --help and --version, and the eval and train modules run on their own."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # short output waits in the buffer
    argv = [sys.executable, *command] if command[0] == "-m" else [*yuefu_cmd(), *command]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**env, "HF_HUB_OFFLINE": "1"})
    p.stdout.close()  # long before the interpreter has imported yuefu and printed
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_an_interrupt_is_one_line_and_training_says_how_to_continue(monkeypatch, capsys, tmp_path):
    import yuefu.cli as cli
    import yuefu.train.lm_trainer as lm_trainer
    from yuefu.train import cli as train_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "cmd_data_index", interrupted)  # not a run: nothing to resume
    monkeypatch.setattr(lm_trainer, "train_lm", interrupted)
    monkeypatch.setattr("yuefu.train.config.load_config", lambda *args: None)
    for main in (cli.main, train_cli.main):  # `yuefu ...` and `python -m yuefu.train.cli ...` (torchrun)
        assert main(["data", "index", str(tmp_path)]) == 130
        assert capsys.readouterr().err == "yuefu: interrupted\n"
        assert main(["train", "lm", "config.yaml"]) == 130
        assert capsys.readouterr().err == "yuefu: interrupted (continue with --resume)\n"
    monkeypatch.setattr(cli, "_handlers", lambda: {"models": interrupted})
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err == "yuefu: interrupted\n"
