"""yuefu's web app: ``python app.py`` (the built-in yuefu-mini) or ``python app.py --model facebook/musicgen-small``
(the same page as ``yuefu app``).

Serves on http://127.0.0.1:7860 (this machine only) unless ``--listen 0.0.0.0`` / ``--port`` say otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

NO_MODEL = ("app.py: a model is required: pass --model facebook/musicgen-small (downloads its weights on first use) "
            "or --model PATH to a local checkpoint folder; this installation has no built-in model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="yuefu web app (MusicGen text to music)")
    p.add_argument("--model", default=None,
                   help="default model: hub id or checkpoint folder (default: the built-in yuefu-mini)")
    p.add_argument("--models", nargs="*", default=None, metavar="ID", help="other models to offer in the page")
    p.add_argument("--listen", "--host", dest="host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 serves the network)")
    p.add_argument("--port", "--server_port", dest="port", type=int, default=7860)
    p.add_argument("--max-duration", type=float, default=30.0, help="longest piece in seconds (default 30)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB (default 20)")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (default 16)")
    p.add_argument("--concurrency", type=int, default=1, help="generations running at once (default 1)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="LM weights: float32 (default), bfloat16, float16")
    p.add_argument("--share", action="store_true", help="also open a public Gradio link (needs the internet)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is None:
        from yuefu.checkpoints.builtin import available

        builtin = available()
        if not builtin:
            print(NO_MODEL, file=sys.stderr)
            return 2
        args.model = builtin[0]
    for name, value in (("--max-duration", args.max_duration), ("--max-upload-mb", args.max_upload_mb),
                        ("--queue-size", args.queue_size), ("--concurrency", args.concurrency)):
        if not value > 0:
            print(f"app.py: {name} must be > 0, got {value:g}", file=sys.stderr)
            return 2
    if not 0 < args.port < 65536:
        print(f"app.py: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from yuefu.errors import YuefuError
    from yuefu.server.webapp import launch

    try:
        launch(args.model, host=args.host, port=args.port, models=args.models, device=args.device,
               dtype=args.dtype, max_duration=args.max_duration, share=args.share, max_upload_mb=args.max_upload_mb,
               concurrency_limit=args.concurrency, max_queue=args.queue_size)
    except YuefuError as e:
        print(f"app.py: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
