"""Command-line options shared by ``yuefu app``, ``yuefu serve`` and ``python app.py``."""

from __future__ import annotations

import argparse

from yuefu.errors import InvalidArgumentError


def add_server_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """Options of a server command; ``command`` is ``app`` (web app first) or ``serve`` (HTTP API first)."""
    p.add_argument("--model", default=None,
                   help="default model id or checkpoint folder (default: the built-in yuefu-mini)")
    p.add_argument("--models", nargs="*", default=None, metavar="ID", help="other models to offer")
    p.add_argument("--host", "--listen", dest="host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=7860 if command == "app" else 8000)
    longest = 30.0 if command == "app" else 120.0
    p.add_argument("--max-duration", type=float, default=longest,
                   help=f"longest request in seconds (default {longest:g})")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting at most; more get 503 / busy")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="LM weights: float32 (default), bfloat16, float16")
    if command == "app":
        p.add_argument("--api", action="store_true", help="also serve the HTTP API (/v1) from the same process")
    else:
        p.add_argument("--app", action="store_true", help="also serve the web app (/) from the same process")
    p.set_defaults(func=lambda args: run_server(args, command))


def run_server(args: argparse.Namespace, command: str) -> int:
    """Start the server ``args`` describe; returns when it is stopped."""
    from yuefu.cli import model_or_default

    args.model = model_or_default(args.model)
    if not 0 < args.port < 65536:
        raise InvalidArgumentError(f"--port must be in 1..65535, got {args.port}")
    if not args.max_duration > 0:
        raise InvalidArgumentError(f"--max-duration must be > 0, got {args.max_duration:g}")
    from yuefu.server import serve

    app = command == "app" or args.app
    serve(model=args.model, models=args.models, host=args.host, port=args.port, api=command == "serve" or args.api,
          app=app, device=args.device, dtype=args.dtype, max_duration=args.max_duration, queue_size=args.queue_size,
          **({"max_queue": args.queue_size} if app else {}))
    return 0
