"""Command line of training: ``yuefu data index``, ``yuefu train codec|lm``, ``yuefu train merge-lora``.

    yuefu data index DIR [--out FILE]             write DIR/manifest.jsonl; unreadable files are listed and skipped
    yuefu train codec CONFIG.yaml [--resume]      train a codec (SEANet + RVQ) on a folder or manifest of audio
    yuefu train lm CONFIG.yaml [--resume]         train / fine-tune MusicGen's LM on codec tokens (cached once)
    yuefu train merge-lora BASE ADAPTERS OUT      fold LoRA adapters into a model's weights
    yuefu train package MODEL OUT [--card F] [--codec DIR]   a self-contained float16 folder (the built-in
                                                  model's form), optionally with a decoder-only fine-tuned codec
    yuefu train average MODEL MODEL... --out OUT [--weights W W...]   the weighted mean of fine-tunes of one model
    torchrun --nproc-per-node N -m yuefu train lm CONFIG.yaml   the same, on N processes (DDP or FSDP)

``--set key.path=value`` overrides a config entry (repeatable). ``add_subparsers`` plugs these into the ``yuefu``
parser (``data index`` can join an existing ``data`` parser, beside ``render``); ``python -m yuefu.train.cli ...``
runs them on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from yuefu.errors import InvalidArgumentError


def add_subparsers(sub: Any, data_sub: Any = None) -> None:
    """Add ``train`` (codec, lm, merge-lora) and ``data index`` to the ``yuefu`` parser's sub-parsers ``sub``.

    ``data_sub``: the sub-parsers of an existing ``yuefu data`` parser (e.g. the one ``yuefu.data.render`` adds) to
    put ``index`` beside ``render``; without it a ``data`` parser is created here. Every parsed namespace carries
    its handler as ``func`` (call :func:`run`).
    """
    add_train_parser(sub)
    if data_sub is None:
        data = sub.add_parser("data", help="prepare training data")
        data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    add_index_parser(data_sub)


def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    train = sub.add_parser("train", help="train a codec or a language model (one process, or under torchrun)")
    tsub = train.add_subparsers(dest="train_command", required=True, parser_class=type(train))
    for kind, what in (("codec", "the audio codec (SEANet + residual VQ)"),
                       ("lm", "MusicGen's language model, from scratch or fine-tuning a checkpoint")):
        p = tsub.add_parser(kind, help=f"train {what}")
        p.add_argument("config", help="YAML config (see configs/train/)")
        p.add_argument("--resume", action="store_true",
                       help="continue the run in run_dir from its latest checkpoint (a new run if it has none)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config entry, e.g. --set optim.lr=1e-4 (repeatable)")
        p.set_defaults(func=cmd_train_codec if kind == "codec" else cmd_train_lm)
    m = tsub.add_parser("merge-lora", help="merge LoRA adapters into a model's weights")
    m.add_argument("base", help="the base model the adapters were trained on (hub id or folder)")
    m.add_argument("adapters", help="adapter folder (RUN/adapters or a checkpoint's adapters/)")
    m.add_argument("out", help="new folder for the merged model")
    m.add_argument("--to", default="yuefu", choices=["yuefu", "transformers", "audiocraft"])
    m.set_defaults(func=cmd_merge_lora)
    k = tsub.add_parser("package", help="a trained model as a self-contained float16 folder (how yuefu-mini ships)")
    k.add_argument("model", help="trained model folder (RUN/model) with a sentence-encoder conditioner, or a "
                                 "built-in name (yuefu-mini)")
    k.add_argument("out", help="new folder, e.g. yuefu/builtin/yuefu-mini")
    k.add_argument("--card", default=None, help="a Markdown model card to put beside the weights")
    k.add_argument("--codec", default=None, metavar="DIR",
                   help="a codec folder (yuefu train codec's RUN/model) to ship instead of the model's own; it must "
                        "keep the model's encoder and codebooks (a decoder-only fine-tune)")
    k.set_defaults(func=cmd_package)
    a = tsub.add_parser("average", help="the weighted mean of fine-tunes of one model (a model soup)")
    a.add_argument("models", nargs="+", help="two or more model folders (RUN/model, a checkpoint's model/) or "
                                             "built-in names (yuefu-mini), all fine-tuned from the same weights")
    a.add_argument("--out", required=True, help="new folder for the averaged model (yuefu format, float32)")
    a.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="one weight per model, normalised to sum to 1 (default: equal)")
    a.set_defaults(func=cmd_average)
    return train


def add_index_parser(data_sub: Any) -> argparse.ArgumentParser:
    """Add ``index`` to the sub-commands of ``yuefu data``."""
    i = data_sub.add_parser("index", help="write a JSONL manifest (duration, rate, channels, sidecar metadata)")
    i.add_argument("folder", help="folder of audio files (wav, flac, mp3, ogg) with optional JSON sidecars")
    i.add_argument("--out", default=None, help="manifest file (default FOLDER/manifest.jsonl)")
    i.add_argument("--quiet", action="store_true", help="no progress bar")
    i.set_defaults(func=cmd_data_index)
    return i


def run(args: argparse.Namespace) -> int:
    return args.func(args)


HANDLERS = {"train": run, "data": run}


def cmd_data_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from yuefu.data.manifest import MANIFEST_NAME, index_folder, write_manifest

    folder = Path(args.folder).expanduser()

    def progress(files):
        if args.quiet:
            return files
        from tqdm.auto import tqdm

        return tqdm(files, desc="indexing", unit="file", dynamic_ncols=True)

    result = index_folder(folder, progress=progress)
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not result.entries and not result.skipped:
        raise InvalidArgumentError(f"{folder}: no audio files (wav, flac, mp3, ogg) found")
    out = Path(args.out).expanduser() if args.out else folder / MANIFEST_NAME
    write_manifest(result.entries, out)
    hours = sum(e.duration for e in result.entries) / 3600
    print(f"wrote {out}: {len(result.entries)} files ({hours:.2f} h), {len(result.skipped)} skipped")
    return 0


@contextlib.contextmanager
def _resumable() -> Iterator[None]:
    """A training run interrupted by Ctrl-C says how to continue it (the entry point prints it, exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt("continue with --resume") from None


def cmd_train_codec(args: argparse.Namespace) -> int:
    from yuefu.train.codec_trainer import train_codec
    from yuefu.train.config import CodecTrainConfig, load_config

    cfg = load_config(args.config, CodecTrainConfig, args.overrides)
    with _resumable():
        train_codec(cfg, resume=args.resume, source=args.config)
    return 0


def cmd_train_lm(args: argparse.Namespace) -> int:
    from yuefu.train.config import LMTrainConfig, load_config
    from yuefu.train.lm_trainer import train_lm

    cfg = load_config(args.config, LMTrainConfig, args.overrides)
    with _resumable():
        train_lm(cfg, resume=args.resume, source=args.config)
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from pathlib import Path

    from yuefu.checkpoints.builtin import folder_size, package_model

    card = None
    if args.card is not None:
        try:
            card = Path(args.card).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidArgumentError(f"--card {args.card}: {e.strerror or e}") from None
    out = package_model(args.model, args.out, card, codec=args.codec)
    print(f"wrote {out} ({folder_size(out) / 1e6:.1f} MB, float16)")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from yuefu.checkpoints.average import average_models

    weights = args.weights or [1.0] * len(args.models)
    out = average_models(args.models, args.out, weights)
    share = ", ".join(f"{w / sum(weights):.3g} x {m}" for w, m in zip(weights, args.models))
    print(f"wrote {out} (yuefu format, float32): {share}")
    return 0


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from yuefu.train.lora import merge_adapters

    out = merge_adapters(args.base, args.adapters, args.out, args.to)
    print(f"wrote {out} ({args.to} format, adapters merged)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m yuefu.train.cli {train,data} ...``: these commands without the rest of the yuefu CLI."""
    from yuefu.cli import _Parser, guarded

    parser = _Parser(prog="yuefu", description="yuefu training commands")
    add_subparsers(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    return guarded(lambda: run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
