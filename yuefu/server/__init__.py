"""yuefu's servers: the HTTP API (:mod:`yuefu.server.api`) and the Gradio web app, in one process if wanted.

:func:`build_server` makes the ASGI application (the API under ``/v1``, its docs at ``/docs``, and the web app at
``/`` when asked); :func:`serve` builds it and runs it with uvicorn. Both share one
:class:`~yuefu.service.ModelPool`, so a model is loaded once for the API and the web app alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yuefu.errors import InvalidArgumentError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from yuefu.service import ModelPool

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise: a server on every interface is a choice
DEFAULT_PORT = 8000


def build_server(model: str, *, api: bool = True, app: bool = False, models: list[str] | None = None,
                 device: str | None = None, dtype: str | None = None, max_duration: float = 120.0,
                 queue_size: int = 8, sync_max_duration: float = 30.0, job_ttl_s: float = 3600.0,
                 preload: bool = True, pool: ModelPool | None = None, **app_options: Any) -> FastAPI:
    """The application that :func:`serve` runs: the API (``api``) under /v1 and/or the web app (``app``) at /.

    ``model`` is the default model and ``models`` more that clients may choose; ``preload`` loads the default
    model now, so that a bad name fails here in one line rather than on the first request. ``app_options`` go to
    :func:`yuefu.server.webapp.build_app`. Raises a :class:`~yuefu.errors.YuefuError` for bad settings or models.
    """
    if not api and not app:
        raise InvalidArgumentError("nothing to serve: enable the API, the web app, or both")
    if app_options and not app:
        raise InvalidArgumentError(f"web app option(s) without the web app: {', '.join(sorted(app_options))}")
    from fastapi import FastAPI

    from yuefu.service import ModelPool

    pool = pool if pool is not None else ModelPool(device=device, dtype=dtype)
    if preload:
        pool.get(model)
    if api:
        from yuefu.server.api import create_api

        server = create_api(pool, model, models=models, max_duration=max_duration, queue_size=queue_size,
                            sync_max_duration=sync_max_duration, job_ttl_s=job_ttl_s)
    else:
        from yuefu import __version__

        server = FastAPI(title="yuefu", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    if app:
        import gradio as gr

        from yuefu.server.webapp import build_app, page_settings

        blocks = build_app(pool, default_model=model, models=models, max_duration=max_duration, **app_options)
        # Gradio 6 takes the theme, CSS and upload limit at mount time, not from the Blocks.
        settings = page_settings(app_options.get("max_upload_mb", 20.0))
        server = gr.mount_gradio_app(server, blocks, path="/", **settings)
    return server


def serve(model: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api: bool = True, app: bool = False,
          device: str | None = None, dtype: str | None = None, max_duration: float = 120.0, queue_size: int = 8,
          models: list[str] | None = None, sync_max_duration: float = 30.0, log_level: str = "info",
          **app_options: Any) -> None:
    """Serve the API and/or the web app on ``host``:``port`` until interrupted (see :func:`build_server`)."""
    import uvicorn

    server = build_server(model, api=api, app=app, models=models, device=device, dtype=dtype,
                          max_duration=max_duration, queue_size=queue_size, sync_max_duration=sync_max_duration,
                          **app_options)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    parts = ([f"web app {base}/"] if app else []) + ([f"API {base}/v1 (docs {base}/docs)"] if api else [])
    print(f"yuefu serving {model}: {', '.join(parts)}", flush=True)
    uvicorn.run(server, host=host, port=port, log_level=log_level)


__all__ = ["build_server", "serve"]
