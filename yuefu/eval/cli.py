"""``yuefu eval MODEL --corpus DIR``: the evaluation of :func:`yuefu.eval.run.evaluate` from the command line;
``yuefu eval --pool R1.json R2.json ...``: reports of other seeds pooled (:mod:`yuefu.eval.pool`).

Register it in ``yuefu/cli.py`` with :func:`add_eval_parser` (the parsed namespace carries its handler as
``func``, :func:`cmd_eval`). Errors are one line: InvalidArgumentError (bad option, not a corpus),
ModelNotFoundError (from loading the model), AudioFileError (an unreadable clip, an unwritable ``--json``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from yuefu.errors import InvalidArgumentError


def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``yuefu`` sub-commands ``sub`` (what ``add_subparsers`` returned)."""
    e = sub.add_parser("eval", help="evaluate a model on a rendered corpus' held-out clips (codec, adherence, FAD)",
                       description="Codec quality, prompt adherence (instrument, tempo, key) and FAD of a model on "
                                   "the valid split of a corpus from `yuefu data render`, each beside a baseline.")
    e.add_argument("model", metavar="MODEL", nargs="?", default=None, help="checkpoint folder or hub id")
    e.add_argument("--corpus", metavar="DIR", help="corpus folder (with train/ and valid/); required with MODEL")
    e.add_argument("--pool", nargs="+", default=None, metavar="REPORT",
                   help="instead of evaluating: pool the --json reports of one model on the same prompts (a whole "
                        "valid split, or one prompt file) at other seeds, made with the same settings; every clip "
                        "counts, 95%% intervals resample the prompts. Only --json applies with it")
    e.add_argument("--prompts", type=int, default=None, metavar="N", help="held-out prompts per language (default 16)")
    e.add_argument("--prompt-file", default=None, metavar="FILE",
                   help="judge the prompts of this JSON Lines file instead of held-out descriptions: one object a "
                        "line with en, zh, instrument, and optionally bpm and key (see yuefu.eval.prompt_file)")
    e.add_argument("--seconds", type=float, default=10.0, metavar="S", help="length of each clip (default 10)")
    e.add_argument("--seed", type=int, default=0, help="seed of the prompt sample, shuffle and generation (default 0)")
    e.add_argument("--json", default=None, metavar="OUT", help="write the full report here as JSON")
    e.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    e.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    e.add_argument("--languages", default="en,zh", help="prompt languages, comma-separated (default en,zh)")
    e.add_argument("--top-k", type=int, default=250, metavar="K",
                   help="sample from the K likeliest tokens (default 250; 0: all)")
    e.add_argument("--temperature", type=float, default=1.0, metavar="T", help="sampling temperature (default 1.0)")
    e.add_argument("--cfg-coef", type=float, default=3.0, metavar="C",
                   help="classifier-free guidance coefficient (default 3.0)")
    e.add_argument("--tempo-drafts", type=int, default=0, metavar="N",
                   help="generate with N tempo drafts per prompt (see yuefu generate --help; default 0: off)")
    e.add_argument("--tempo-draft-seconds", type=float, default=None, metavar="S",
                   help="length of each tempo draft (default: the whole first window)")
    e.add_argument("--save-audio", default=None, metavar="DIR",
                   help="also write every generated clip, as DIR/en/CLIP.wav and DIR/zh/CLIP.wav (with --prompt-file: "
                        "DIR/en/NNN.wav, NNN the prompt's index)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)
    return e


def _check_args(args: argparse.Namespace) -> list[str]:
    """One-line errors for bad values before anything is loaded; returns the languages."""
    if args.model is None or args.corpus is None:
        raise InvalidArgumentError("give MODEL and --corpus DIR (or --pool REPORT REPORT ... to pool reports)")
    if args.prompts is not None and args.prompt_file is not None:
        raise InvalidArgumentError("give --prompts or --prompt-file, not both (a prompt file is judged whole)")
    if args.prompts is None:
        args.prompts = 16
    if args.prompts < 2:
        raise InvalidArgumentError(f"--prompts must be >= 2 (the baseline shuffles them), got {args.prompts}")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise InvalidArgumentError(f"--seconds must be a positive number, got {args.seconds}")
    from yuefu.generation.tempo_drafts import MAX_DRAFTS

    if not 0 <= args.tempo_drafts <= MAX_DRAFTS:
        raise InvalidArgumentError(f"--tempo-drafts must be from 0 to {MAX_DRAFTS}, got {args.tempo_drafts}")
    if args.top_k < 0:
        raise InvalidArgumentError(f"--top-k must be >= 0 (0: the whole vocabulary), got {args.top_k}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise InvalidArgumentError(f"--temperature must be a number >= 0, got {args.temperature}")
    if not math.isfinite(args.cfg_coef):
        raise InvalidArgumentError(f"--cfg-coef must be a finite number, got {args.cfg_coef}")
    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be >= 1, got {args.batch_size}")
    languages = [s.strip() for s in args.languages.split(",") if s.strip()]
    if not languages or any(lang not in ("en", "zh") for lang in languages):
        raise InvalidArgumentError(f"--languages must be en, zh or en,zh, got {args.languages!r}")
    if not Path(args.corpus).expanduser().is_dir():
        raise InvalidArgumentError(f"--corpus {args.corpus}: no such folder")
    return languages


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the evaluation, print the table (and where the JSON went); exit code 0."""
    import sys

    from yuefu.eval.run import evaluate, format_report

    if args.pool is not None:
        return _pool(args)
    languages = _check_args(args)
    report = evaluate(args.model, args.corpus, n_prompts=args.prompts, seconds=args.seconds, seed=args.seed,
                      out_json=args.json, device=args.device, batch_size=args.batch_size, languages=languages,
                      top_k=args.top_k, cfg_coef=args.cfg_coef, temperature=args.temperature,
                      tempo_drafts=args.tempo_drafts, tempo_draft_seconds=args.tempo_draft_seconds,
                      progress=not args.quiet, log=lambda msg: print(msg, file=sys.stderr) if not args.quiet else None,
                      save_audio=args.save_audio, prompt_file=args.prompt_file)
    print(format_report(report))
    if args.json:
        print(f"report: {args.json}")
    return 0


def _pool(args: argparse.Namespace) -> int:
    """``--pool``: read the reports, print (and with --json write) the pooled figures."""
    from yuefu.eval.pool import format_pooled, pool_reports, read_reports
    from yuefu.eval.run import _check_out_json, _write_json

    if args.model is not None or args.corpus is not None or args.prompt_file is not None:
        raise InvalidArgumentError("--pool reads reports: give no MODEL, --corpus or --prompt-file with it")
    out = _check_out_json(args.json)
    if out is not None and any(Path(p).expanduser().resolve() == out.resolve() for p in args.pool):
        raise InvalidArgumentError(f"--json {args.json}: is one of the reports to pool; give another file")
    pooled = pool_reports(read_reports(args.pool))
    print(format_pooled(pooled))
    if out is not None:
        _write_json(out, pooled)
        print(f"pooled report: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m yuefu.eval.cli MODEL --corpus DIR ...``: ``yuefu eval`` on its own, with the same one-line
    errors and exit codes."""
    import sys

    from yuefu.cli import _Parser, guarded

    parser = _Parser(prog="yuefu")
    add_eval_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))

    def command() -> int:
        args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
        return args.func(args)

    return guarded(command)


if __name__ == "__main__":
    raise SystemExit(main())
