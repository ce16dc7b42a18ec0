"""The ``yuefu`` command line: generate, models, download, info, convert, app, serve, bench, data, train, eval.

Every error a user can cause is printed as one line (``yuefu: error: ...``) with the error's exit code; no
traceback. Exit codes: 2 bad argument, 3 model not found, 4 bad checkpoint, 5 audio file, 130 interrupted, 141 the
output's reader left (``| head``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yuefu.errors import AudioFileError, InvalidArgumentError, YuefuError
from yuefu.service import MAX_DURATION_DEFAULT, GenerationRequest

FORMATS = ("wav", "flac", "mp3", "ogg")
NO_MODEL = ("no model given: pass --model, e.g. --model facebook/musicgen-small (downloads about 2.5 GB on first "
            "use) or a local checkpoint folder; this installation has no built-in offline model")


def model_or_default(name: str | None) -> str:
    """``--model`` as given, else the built-in model when this installation ships one; else a one-line error."""
    if name is not None:
        return name
    from yuefu.checkpoints.builtin import available

    builtin = available()
    if not builtin:
        raise InvalidArgumentError(NO_MODEL)
    return builtin[0]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every other bad input
        raise InvalidArgumentError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from yuefu import __version__

    p = _Parser(prog="yuefu", description="yuefu (乐府): text-to-music with MusicGen in pure PyTorch")
    p.add_argument("--version", action="version", version=f"yuefu {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="generate music from text prompts (or a melody, or audio to continue)")
    g.add_argument("prompts", nargs="*", metavar="PROMPT", help="text descriptions, one file each")
    g.add_argument("--prompts-file", default=None, metavar="F", help="more prompts, one per line (# comments)")
    g.add_argument("--unconditional", action="store_true", help="generate without a prompt")
    g.add_argument("--from-sidecar", default=None, metavar="JSON", help="regenerate the file this sidecar describes")
    g.add_argument("--model", default=None,
                   help="model id or checkpoint folder (default: the built-in yuefu-mini, when installed)")
    g.add_argument("--duration", type=float, default=10.0, help="seconds of audio (default 10)")
    g.add_argument("--max-duration", type=float, default=MAX_DURATION_DEFAULT,
                   help=f"refuse durations above this (default {MAX_DURATION_DEFAULT:g} s)")
    g.add_argument("--melody", default=None, metavar="FILE", help="restyle this tune (melody models)")
    g.add_argument("--continue", dest="continuation", default=None, metavar="FILE",
                   help="continue this audio; the output starts with it")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: random, written to the sidecar)")
    g.add_argument("--top-k", type=int, default=250)
    g.add_argument("--top-p", type=float, default=0.0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--cfg-coef", type=float, default=3.0, help="classifier-free guidance strength (default 3)")
    g.add_argument("--tempo-drafts", type=int, default=0, metavar="N",
                   help="for prompts that state a BPM: generate N candidates of the first window, keep the one "
                        "nearest that tempo and continue it (default 0: off)")
    g.add_argument("--tempo-draft-seconds", type=float, default=None, metavar="S",
                   help="length of each tempo draft (default: the whole first window)")
    g.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    g.add_argument("--batch-size", type=int, default=4, help="prompts generated together (default 4)")
    g.add_argument("--out", default=None, help="output file or folder; several prompts add _0, _1, ...")
    g.add_argument("--format", default=None, choices=FORMATS, help="audio format (default: from --out, else wav)")
    g.add_argument("--no-sidecar", action="store_true", help="do not write the JSON sidecar beside each file")
    g.add_argument("--stream", action="store_true",
                   help="play the audio while it is generated (or write a WAV stream to stdout when piped)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g.add_argument("--dtype", default=None, help="LM weights: float32 (default), bfloat16, float16")
    g.add_argument("--text-encoder", default=None, help="T5 name or local folder (overrides the checkpoint's)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("models", help="the known model ids, which are cached here, and their sizes")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d = sub.add_parser("download", help="fill the Hugging Face cache with a model (for offline use later)")
    d.add_argument("model", metavar="ID", help="hub id, e.g. facebook/musicgen-small (aliases such as small work)")
    d.add_argument("--audiocraft", action="store_true", help="the audiocraft files (state_dict.bin) instead")
    i = sub.add_parser("info", help="describe an audio file (and its sidecar), a sidecar, or a model")
    i.add_argument("target", metavar="FILE_OR_MODEL")
    i.add_argument("--json", action="store_true", help="print JSON")

    from yuefu.server.options import add_server_arguments

    for name, text in (("app", "start the web app (add --api for the HTTP API in the same process)"),
                       ("serve", "start the HTTP API (add --app for the web app in the same process)")):
        add_server_arguments(sub.add_parser(name, help=text), name)

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
    from yuefu.eval.cli import add_eval_parser

    add_eval_parser(sub)
    return p


def _read_prompts_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(f"--prompts-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"--prompts-file {path}: cannot read it as UTF-8 text ({e.__class__.__name__})") \
            from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise InvalidArgumentError(f"--prompts-file {path}: no prompts in it")
    return prompts


def _slug(prompt: str | None) -> str:
    stem = "".join(ch if ch.isalnum() else "_" for ch in (prompt or "unconditional"))[:48].strip("_")
    return stem or "music"


def output_paths(out: str | None, prompts: list[str | None], fmt: str | None) -> list[Path]:
    """One file per prompt: ``--out`` itself for one prompt, ``stem_i.ext`` for several, or names made from the
    prompts (in ``--out`` when it is a folder)."""
    if out is not None and not (out.endswith(os.sep) or Path(out).is_dir()):
        path = Path(out)
        suffix = path.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise InvalidArgumentError(f"--out {out}: the file must end in {', '.join('.' + f for f in FORMATS)}")
        if fmt is not None and fmt != suffix:
            raise InvalidArgumentError(f"--out {out} and --format {fmt} disagree")
        if len(prompts) == 1:
            return [path]
        return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(prompts))]
    folder = Path(out) if out is not None else Path(".")
    ext = fmt or "wav"
    if len(prompts) == 1:
        return [folder / f"{_slug(prompts[0])}.{ext}"]
    return [folder / f"{_slug(p)}_{i}.{ext}" for i, p in enumerate(prompts)]


def sidecar_path(audio_path: Path) -> Path:
    """``song.wav`` -> ``song.json``: the metadata that reproduces the file."""
    return audio_path.with_suffix(".json")


def _check_writable(paths: list[Path]) -> None:
    """Fail before the (slow) generation when an output cannot be written."""
    for path in paths:
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise AudioFileError(f"{path}: is a folder, not a file name")
        if not parent.is_dir():
            raise AudioFileError(f"{path}: the folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise AudioFileError(f"{path}: the folder {parent} is not writable")


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AudioFileError(f"cannot write {path}: {e.strerror or e}") from None


def _requests_from_args(args: argparse.Namespace, prompts: list[str | None]) -> list[GenerationRequest]:
    """One request per batch of ``--batch-size`` prompts; batch b gets seed + b so that batches differ."""
    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = model_or_default(args.model)
    import secrets

    base = args.seed if args.seed is not None else secrets.randbelow(2**31)  # recorded in every sidecar
    out = []
    for b, start in enumerate(range(0, len(prompts), args.batch_size)):
        out.append(GenerationRequest(
            prompts=prompts[start:start + args.batch_size], model=model, duration=args.duration,
            seed=base + b, use_sampling=not args.greedy, top_k=args.top_k,
            top_p=args.top_p, temperature=args.temperature, cfg_coef=args.cfg_coef, tempo_drafts=args.tempo_drafts,
            tempo_draft_seconds=args.tempo_draft_seconds,
            melody=_absolute(args.melody), continuation=_absolute(args.continuation)))
    return out


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _request_from_sidecar(path: str) -> tuple[GenerationRequest, int, dict[str, Any]]:
    from yuefu.service import _sha256

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgumentError(f"--from-sidecar {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"--from-sidecar {path}: not a readable JSON file ({e.__class__.__name__})") \
            from None
    if not isinstance(data, dict) or "request" not in data or "batch_index" not in data:
        raise InvalidArgumentError(f"--from-sidecar {path}: not a yuefu sidecar (no request / batch_index)")
    request = GenerationRequest.from_dict(data["request"])
    index = data["batch_index"]
    if not isinstance(index, int) or not 0 <= index < len(request.prompts):
        raise InvalidArgumentError(f"--from-sidecar {path}: batch_index {index!r} is out of range")
    # A relative name (the web app and the API record an upload as the user's file was called) is looked for in the
    # current folder, then beside the sidecar.
    beside = Path(path).parent
    for field in ("melody", "continuation"):
        file = getattr(request, field)
        if file is not None and not Path(file).is_absolute() and not Path(file).is_file() \
                and (beside / file).is_file():
            setattr(request, field, str(beside / file))
    for key, file in (("melody_sha256", request.melody), ("continuation_sha256", request.continuation)):
        if key in data and file is not None:
            if not Path(file).is_file():
                where = "" if Path(file).is_absolute() else " (looked in the current folder and beside the sidecar)"
                raise AudioFileError(f"--from-sidecar {path}: the input audio {file} is not there any more{where}")
            if _sha256(file) != data[key]:
                raise AudioFileError(f"--from-sidecar {path}: {file} has changed since the file was made")
    return request, index, data


def cmd_generate(args: argparse.Namespace) -> int:
    from yuefu import audio, service

    if args.from_sidecar is not None:
        if args.prompts or args.prompts_file or args.unconditional:
            raise InvalidArgumentError("--from-sidecar takes no PROMPT, --prompts-file or --unconditional")
        request, index, data = _request_from_sidecar(args.from_sidecar)
        if args.model is not None:
            request.model = args.model  # the same weights elsewhere (e.g. another folder)
        requests, stream_wanted = [request], bool(data.get("stream"))
        default_out = Path(args.from_sidecar).with_suffix("")
        ext = args.format or Path(data.get("audio_file", "x.wav")).suffix.lstrip(".") or "wav"
        out = args.out or f"{default_out}.regenerated.{ext}"
        paths = output_paths(out, [request.prompts[index]], args.format)
        selected = [(0, index, paths[0])]
    else:
        prompts: list[str | None] = list(args.prompts)
        if args.prompts_file:
            prompts += _read_prompts_file(args.prompts_file)
        if args.unconditional:
            if prompts:
                raise InvalidArgumentError("--unconditional takes no PROMPT")
            prompts = [None]
        if not prompts:
            raise InvalidArgumentError("no prompt given (pass PROMPT, --prompts-file, or --unconditional)")
        requests = _requests_from_args(args, prompts)
        for r in requests:
            r.validate(args.max_duration)
        paths = output_paths(args.out, prompts, args.format)
        selected, k = [], 0
        for b, r in enumerate(requests):
            for i in range(len(r.prompts)):
                selected.append((b, i, paths[k]))
                k += 1
        stream_wanted = args.stream
    for r in requests:
        r.validate(args.max_duration)
        for name, f in (("--melody", r.melody), ("--continue", r.continuation)):
            if f is not None and not Path(f).is_file():
                raise AudioFileError(f"{name} {f}: no such file")
    _check_writable([p for _, _, p in selected])
    sink = None
    if stream_wanted and args.from_sidecar is None:
        if len(requests) != 1 or len(requests[0].prompts) != 1:
            raise InvalidArgumentError("--stream plays one prompt at a time")
        sink = _StreamSink.open()

    pool = service.ModelPool(loader=lambda name: _load_model(name, args))
    progress = not args.quiet and sink is None
    try:
        for b, request in enumerate(requests):
            if stream_wanted:
                sr = pool.get(request.model).sample_rate
                on_chunk = (lambda chunk, sr=sr: sink.write(chunk, sr)) if sink is not None else (lambda chunk: None)
                result = service.stream(request, pool, on_chunk, max_duration=args.max_duration)
            else:
                result = service.generate(request, pool, progress=progress, max_duration=args.max_duration)
            for rb, i, path in selected:
                if rb != b:
                    continue
                audio.write(path, result.audio[i], result.sample_rate)
                if not args.no_sidecar:
                    _write_json_atomically(sidecar_path(path), result.sidecar(i, audio_file=path))
                if not args.quiet:
                    print(f"wrote {path} ({result.audio.shape[-1] / result.sample_rate:.2f} s, "
                          f"{result.sample_rate} Hz, seed {result.request.seed})", file=sys.stderr)
                    used = result.prompts_used[i]
                    if used != result.request.prompts[i]:
                        print(f"  prompt used: {used}", file=sys.stderr)
    finally:
        if sink is not None:
            sink.close()
    return 0


def _load_model(name: str, args: argparse.Namespace):
    from yuefu.musicgen import MusicGen

    return MusicGen.from_pretrained(name, device=args.device, dtype=args.dtype, text_encoder=args.text_encoder)


class _StreamSink:
    """Where ``--stream`` sends audio: a player (ffplay, aplay, paplay) when stdout is a terminal, else stdout
    itself, as a WAV stream (16-bit PCM, length unknown) that any player reading stdin accepts."""

    PLAYERS = (["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet", "-"], ["aplay", "-q", "-"],
               ["paplay", "--raw", "-"])

    def __init__(self, out, process: subprocess.Popen | None):
        self.out = out
        self.process = process
        self.header_written = False

    @classmethod
    def open(cls) -> _StreamSink:
        if not sys.stdout.isatty():
            return cls(sys.stdout.buffer, None)
        for cmd in cls.PLAYERS[:2]:  # paplay --raw needs format flags; ffplay and aplay read the WAV header
            if shutil.which(cmd[0]):
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
                return cls(proc.stdin, proc)
        raise InvalidArgumentError("--stream found no player (ffplay or aplay); pipe the stream into one, e.g. "
                                   "yuefu generate ... --stream | ffplay -")

    def write(self, chunk, sample_rate: int) -> None:
        """Send ``chunk`` [1, C, n] (floats) as 16-bit PCM, after the header on the first call."""
        import numpy as np

        pcm = (chunk[0].clamp(-1, 1).numpy().T * 32767).round().astype("<i2")  # [n, C] interleaved
        if not self.header_written:
            self.out.write(wav_stream_header(sample_rate, channels=pcm.shape[1]))
            self.header_written = True
        self.out.write(np.ascontiguousarray(pcm).tobytes())
        self.out.flush()

    def close(self) -> None:
        try:
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()


def wav_stream_header(sample_rate: int, channels: int) -> bytes:
    """A WAV header for 16-bit PCM of unknown length (sizes 0xFFFFFFFF, as streaming tools write it)."""
    import struct

    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16) +
            b"data" + struct.pack("<I", 0xFFFFFFFF))


def cmd_convert(args: argparse.Namespace) -> int:
    from yuefu.musicgen import MusicGen

    model = MusicGen.from_pretrained(args.src, device="cpu", text_encoder=args.text_encoder)
    out = model.save_pretrained(args.dst, format=args.to)
    print(f"wrote {out} ({args.to} format)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from yuefu.catalog import human_size, known_models

    rows = known_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':38} {'kind':15} {'LM':>5}  here")
    for r in rows:
        if r["kind"].startswith("built-in"):
            here = f"built in, {human_size(r['size_on_disk'])}"
        else:
            here = f"cached, {human_size(r['size_on_disk'])}" if r["cached"] else "not cached"
        print(f"{r['id']:38} {r['kind']:15} {r['lm_params']:>5}  {here}")
    print("(yuefu download ID fills the cache; any local checkpoint folder works as --model too)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from yuefu.catalog import download, human_size

    folder = download(args.model, audiocraft=args.audiocraft)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    print(f"{args.model}: cached in {folder} ({human_size(size)})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from yuefu.catalog import describe

    info = describe(args.target)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    _print_tree(info)
    return 0


def _print_tree(d: dict[str, Any], indent: int = 0) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            print(" " * indent + f"{k}:")
            _print_tree(v, indent + 2)
        else:
            print(" " * indent + f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, (list, bool)) else v}")


def _handlers() -> dict:
    from yuefu.bench import main_bench

    return {"generate": cmd_generate, "convert": cmd_convert, "bench": main_bench, "models": cmd_models,
            "download": cmd_download, "info": cmd_info, "app": lambda args: args.func(args),
            "serve": lambda args: args.func(args), "data": lambda args: args.func(args),
            "train": lambda args: args.func(args), "eval": lambda args: args.func(args)}


def guarded(command: Callable[[], int]) -> int:
    """Run a command as every yuefu entry point does: a user's error is one line and its exit code, Ctrl-C is
    130 (with what the interrupt carries: how to continue), and a reader that leaves (``| head``) is 141
    (128 + SIGPIPE); never a traceback."""
    try:
        try:
            code = command()
        except SystemExit as e:  # --help and --version have printed; argparse exits
            if not isinstance(e.code, int | None):
                raise
            code = e.code or 0
        sys.stdout.flush()  # here, not at exit: a reader that left is then a BrokenPipeError below
        return code
    except YuefuError as e:
        print(f"yuefu: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"yuefu: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # no flush error at exit either: stdout now goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        args = build_parser().parse_args(argv)
        return _handlers()[args.command](args)

    return guarded(command)


if __name__ == "__main__":
    sys.exit(main())
