"""The ``yuefu`` command line: ``yuefu generate``, ``yuefu convert``.

Every error a user can cause is printed as one line (``yuefu: error: ...``) with the error's exit code; no
traceback. Exit codes: 2 bad argument, 3 model not found, 4 bad checkpoint, 5 audio file, 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from yuefu.errors import InvalidArgumentError, YuefuError

MAX_DURATION_DEFAULT = 600.0  # seconds; a cap against typos like --duration 36000 (override with --max-duration)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every other bad input
        raise InvalidArgumentError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from yuefu import __version__

    p = _Parser(prog="yuefu", description="yuefu (乐府): text-to-music with MusicGen in pure PyTorch")
    p.add_argument("--version", action="version", version=f"yuefu {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="generate music from text prompts")
    g.add_argument("prompts", nargs="*", metavar="PROMPT", help="text descriptions, one file each")
    g.add_argument("--unconditional", action="store_true", help="generate without a prompt")
    g.add_argument("--model", default=None, help="model id or folder (default: facebook/musicgen-small)")
    g.add_argument("--duration", type=float, default=10.0, help="seconds of audio (default 10)")
    g.add_argument("--max-duration", type=float, default=MAX_DURATION_DEFAULT,
                   help=f"refuse durations above this (default {MAX_DURATION_DEFAULT:g} s)")
    g.add_argument("--seed", type=int, default=None, help="random seed (same seed, same device: same audio)")
    g.add_argument("--top-k", type=int, default=250)
    g.add_argument("--top-p", type=float, default=0.0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--cfg-coef", type=float, default=3.0, help="classifier-free guidance strength (default 3)")
    g.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    g.add_argument("--out", default=None, help="output file (.wav or .flac); several prompts add _1, _2, ...")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g.add_argument("--dtype", default=None, help="LM weights: float32 (default), bfloat16, float16")
    g.add_argument("--text-encoder", default=None, help="T5 name or local folder (overrides the checkpoint's)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser("convert", help="convert a checkpoint between formats")
    c.add_argument("src", help="model id or folder (audiocraft, transformers or yuefu format)")
    c.add_argument("dst", help="new folder to write")
    c.add_argument("--to", required=True, choices=["yuefu", "transformers", "audiocraft"])
    c.add_argument("--text-encoder", default=None, help="T5 name or local folder (audiocraft sources)")
    from yuefu import bench
    from yuefu.data import render
    from yuefu.train import cli as train_cli

    b = sub.add_parser("bench", help="speed against transformers on the same random weights")
    bench.add_arguments(b)
    data = sub.add_parser("data", help="datasets: render a corpus, index a folder of audio")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    render.add_render_parser(data_sub)
    train_cli.add_index_parser(data_sub)
    train_cli.add_train_parser(sub)
    return p


def _output_paths(out: str | None, prompts: list[str | None]) -> list[Path]:
    if out is None:
        names = []
        for i, prompt in enumerate(prompts):
            stem = "".join(ch if ch.isalnum() else "_" for ch in (prompt or "unconditional"))[:48].strip("_")
            names.append(Path(f"{stem or 'music'}{'_' + str(i) if len(prompts) > 1 else ''}.wav"))
        return names
    path = Path(out)
    if path.suffix.lower() not in (".wav", ".flac"):
        raise InvalidArgumentError(f"--out {out}: the file must end in .wav or .flac")
    if len(prompts) == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(prompts))]


def _check_writable(paths: list[Path]) -> None:
    """Fail before the (slow) generation when an output cannot be written."""
    from yuefu.errors import AudioFileError

    for path in paths:
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise AudioFileError(f"{path}: is a folder, not a file name")
        if not parent.is_dir():
            raise AudioFileError(f"{path}: the folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise AudioFileError(f"{path}: the folder {parent} is not writable")


def cmd_generate(args: argparse.Namespace) -> int:
    if not args.prompts and not args.unconditional:
        raise InvalidArgumentError("no prompt given (pass PROMPT, or --unconditional)")
    if args.prompts and args.unconditional:
        raise InvalidArgumentError("--unconditional takes no PROMPT")
    if not (math.isfinite(args.duration) and 0 < args.duration <= args.max_duration):
        raise InvalidArgumentError(f"--duration must be in (0, {args.max_duration:g}] seconds, got {args.duration:g}")
    prompts: list[str | None] = list(args.prompts) if args.prompts else [None]
    paths = _output_paths(args.out, prompts)
    _check_writable(paths)

    from yuefu import audio
    from yuefu.musicgen import DEFAULT_MODEL, MusicGen

    model = MusicGen.from_pretrained(args.model or DEFAULT_MODEL, device=args.device, dtype=args.dtype,
                                     text_encoder=args.text_encoder)
    model.set_generation_params(use_sampling=not args.greedy, top_k=args.top_k, top_p=args.top_p,
                                temperature=args.temperature, duration=args.duration, cfg_coef=args.cfg_coef)
    progress = not args.quiet
    if args.unconditional:
        wav = model.generate_unconditional(1, progress=progress, seed=args.seed)
    else:
        wav = model.generate(prompts, progress=progress, seed=args.seed)
    for path, w in zip(paths, wav):
        audio.write(path, w.float().cpu(), model.sample_rate)
        if not args.quiet:
            print(f"wrote {path} ({w.shape[-1] / model.sample_rate:.2f} s, {model.sample_rate} Hz)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from yuefu.musicgen import MusicGen

    model = MusicGen.from_pretrained(args.src, device="cpu", text_encoder=args.text_encoder)
    out = model.save_pretrained(args.dst, format=args.to)
    print(f"wrote {out} ({args.to} format)")
    return 0


def _handlers() -> dict:
    from yuefu.bench import main_bench

    return {"generate": cmd_generate, "convert": cmd_convert, "bench": main_bench,
            "data": lambda args: args.func(args), "train": lambda args: args.func(args)}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _handlers()[args.command](args)
    except YuefuError as e:
        print(f"yuefu: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("yuefu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
