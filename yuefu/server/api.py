"""yuefu's HTTP API: text-to-music over JSON (FastAPI), with a bounded job queue.

Endpoints (all JSON unless they serve audio; every error is ``{"error": "one line"}``):

- ``POST /v1/generate`` takes a :class:`GenerateRequest`, either as an ``application/json`` body (a melody or an
  audio prompt to continue as base64 file bytes) or as ``multipart/form-data`` with a ``request`` field holding
  that JSON and optional ``melody`` / ``continuation`` file parts (``application/x-www-form-urlencoded`` with
  just the ``request`` field works too). ``mode`` decides how it answers:

  - ``"auto"`` (default): one prompt (or ``unconditional``) of at most ``sync_max_duration`` seconds is answered
    synchronously with the audio file itself; several prompts or a longer duration become a job (202).
  - ``"sync"``: always the audio file; refused (400) for several prompts or past ``sync_max_duration``.
  - ``"async"``: always a job: 202 ``{"job_id", "status_url"}``.

  A synchronous answer is the file (``audio/wav``, ``audio/flac``, ``audio/mpeg`` or ``audio/ogg``) with the
  headers ``X-Yuefu-Seed`` (the seed used: the same request with that seed gives the same bytes),
  ``X-Yuefu-Sample-Rate``, ``X-Yuefu-Model`` and ``X-Yuefu-Prompt-Used`` (URL-encoded UTF-8).
- ``GET /v1/jobs/{id}``: ``{"job_id", "status": queued|running|done|error|cancelled, "progress": 0..1, "error",
  "results": [{"audio_url": "/v1/jobs/{id}/audio/{i}", "metadata": sidecar}]}``; ``GET
  /v1/jobs/{id}/audio/{i}`` serves result ``i``; ``DELETE /v1/jobs/{id}`` cancels a queued job or forgets a
  finished one. Finished jobs are kept for ``job_ttl_s`` seconds (and at most :data:`MAX_KEPT_JOBS` of them).
- ``GET /v1/health`` and ``GET /v1/models``; the OpenAPI schema at ``/openapi.json``, interactive docs at
  ``/docs``.

Every generation, synchronous or not, goes through one queue of at most ``queue_size`` waiting jobs, run by one
worker thread (the models are shared with the web app through the :class:`~yuefu.service.ModelPool` and its
per-model locks). A full queue answers 503 with a ``Retry-After`` header. A synchronous client that hangs up
while its job still waits cancels it (and frees its place).

Status codes: 400 for values no model can use (a duration past the server's limit, garbage audio, a melody for a
text model, bad base64), 404 for an unknown model, job, result or endpoint, 405 for a wrong method, 409 for the
audio of an unfinished job, 413 for a body over ``max_body_bytes``, 415 for a body that is neither JSON nor a
form, 422 for a malformed request (wrong types, unknown fields, out-of-range values), 503 for a full queue, and
500 (one line; a bug's traceback goes to the server log) for a server-side model whose checkpoint is broken, or
a bug.

A server offers only the models it was started with (``default_model`` and ``models``), so that a client cannot
make it download or load anything else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import secrets
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from yuefu.errors import (
    AudioFileError,
    CheckpointError,
    InvalidArgumentError,
    ModelNotFoundError,
    YuefuError,
)
from yuefu.generation.tempo_drafts import MAX_DRAFTS
from yuefu.service import GenerationRequest, GenerationResult, ModelPool, generate

log = logging.getLogger("yuefu.server")

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}
MAX_BODY_BYTES = 20 * 2**20  # request bodies (JSON with base64 audio, or multipart uploads)
MAX_PROMPTS = 8  # prompts per request (one batch)
MAX_PROMPT_CHARS = 2000
MAX_KEPT_JOBS = 256  # finished jobs kept for download; the oldest go first
RETRY_AFTER_S = 10
_DRAIN_FACTOR = 8  # an over-large body is read (and dropped) up to this many limits, so the client sees the 413

_DEFAULTS = {f.name: f.default for f in fields(GenerationRequest) if f.default is not MISSING}


# ---------------------------------------------------------------------------------------------------------------
# Request and response shapes (they are also the OpenAPI schema)


class GenerateRequest(BaseModel):
    """What to generate. Give exactly one of ``prompt``, ``prompts`` or ``unconditional: true``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="One text description.")
    prompts: list[str] | None = Field(None, min_length=1, max_length=MAX_PROMPTS,
                                      description="Several descriptions, generated as one batch (always a job "
                                                  "unless mode is sync, which refuses them).")
    unconditional: bool = Field(False, description="Generate without any text (one sample).")
    model: str | None = Field(None, description="A model this server offers (GET /v1/models); default: the "
                                                "server's default model.")
    duration: float = Field(_DEFAULTS["duration"], gt=0, allow_inf_nan=False,
                            description="Seconds of audio (at most the server's max_duration, see /v1/models).")
    seed: int | None = Field(None, ge=0, lt=2**63, description="Random seed; omitted: a random one, returned in "
                                                               "X-Yuefu-Seed / the metadata.")
    use_sampling: bool = Field(_DEFAULTS["use_sampling"], description="Sample (true) or take the argmax (false).")
    top_k: int = Field(_DEFAULTS["top_k"], ge=0, description="Top-k sampling; 0 disables it.")
    top_p: float = Field(_DEFAULTS["top_p"], ge=0, le=1, allow_inf_nan=False,
                         description="Nucleus sampling; 0 disables it (then top_k applies).")
    temperature: float = Field(_DEFAULTS["temperature"], ge=0, allow_inf_nan=False)
    cfg_coef: float = Field(_DEFAULTS["cfg_coef"], ge=0, allow_inf_nan=False,
                            description="Classifier-free guidance strength.")
    extend_stride: float | None = Field(_DEFAULTS["extend_stride"], gt=0, allow_inf_nan=False,
                                        description="Seconds between windows when the duration exceeds the "
                                                    "model's (default: 18, or 60 % of a shorter window).")
    tempo_drafts: int = Field(_DEFAULTS["tempo_drafts"], ge=0, le=MAX_DRAFTS,
                              description="For prompts that state a BPM: candidates of the first window, the one "
                                          "nearest that tempo is kept (0: off).")
    tempo_draft_seconds: float | None = Field(_DEFAULTS["tempo_draft_seconds"], gt=0, allow_inf_nan=False,
                                              description="Length of each tempo draft (default: the first window).")
    format: Literal["wav", "flac", "mp3", "ogg"] = Field("wav", description="Audio file format of the result.")
    melody: str | None = Field(None, description="Base64 bytes of an audio file whose melody (chroma) conditions "
                                                 "a melody model; a data: URL is accepted too.")
    continuation: str | None = Field(None, description="Base64 bytes of an audio file to continue: the output "
                                                       "starts with it.")
    mode: Literal["auto", "sync", "async"] = Field(
        "auto", description="auto: the audio itself for one prompt up to sync_max_duration seconds, else a job; "
                            "sync: always the audio (one prompt only); async: always a job (202).")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in one line.")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str


class JobResultInfo(BaseModel):
    audio_url: str
    metadata: dict[str, Any] = Field(description="The sidecar: everything needed to reproduce the audio.")


class JobStatus(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "error", "cancelled"]
    progress: float = Field(ge=0, le=1)
    error: str | None = None
    results: list[JobResultInfo] = []
    created: float = Field(description="Unix time the job was accepted.")
    finished: float | None = None


class QueueInfo(BaseModel):
    size: int = Field(description="Jobs waiting.")
    max: int = Field(description="Most jobs that may wait; past it, 503.")
    running: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    queue: QueueInfo
    models_loaded: list[str]


class ModelsInfo(BaseModel):
    default: str
    models: list[str] = Field(description="The models this server offers.")
    loaded: list[str] = Field(description="Those already in memory.")
    official: list[str] = Field(description="Official MusicGen ids (for reference; a server offers only `models`).")
    max_duration: float
    sync_max_duration: float


# ---------------------------------------------------------------------------------------------------------------
# Jobs and the queue


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
        self.headers = headers or {}


def status_of(error: BaseException) -> int:
    """The HTTP status of an error raised while handling or running a request."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, ModelNotFoundError):
        return 404
    if isinstance(error, CheckpointError):
        return 500  # the server's model is broken: nothing the client can fix
    if isinstance(error, (InvalidArgumentError, AudioFileError, YuefuError)):
        return 400
    return 500


@dataclass
class _Result:
    data: bytes
    filename: str
    metadata: dict[str, Any]


@dataclass
class Job:
    """One request in the queue; its fields change under ``lock`` (the worker writes, handlers read)."""

    id: str
    request: GenerationRequest
    format: str
    temp_dir: Path | None = None  # uploaded audio, removed once the job has run
    upload_names: dict[str, str] = field(default_factory=dict)  # temp path -> what the client called it
    status: str = "queued"
    progress: float = 0.0
    error: str | None = None
    error_status: int = 500
    results: list[_Result] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def is_final(self) -> bool:
        return self.status in ("done", "error", "cancelled")

    def on_final(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) once the job is done, failed or cancelled."""
        with self.lock:
            if not self.is_final:
                self._callbacks.append(callback)
                return
        callback()

    def _finish(self, status: str, expect: tuple[str, ...] = ("queued", "running"), **changes: Any) -> bool:
        """Move to the final ``status`` if the job is in one of ``expect``; True if it did."""
        with self.lock:
            if self.status not in expect:
                return False
            self.status = status
            self.finished = time.time()
            for k, v in changes.items():
                setattr(self, k, v)
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return True

    def cancel(self) -> bool:
        """Cancel the job if it has not started; True if it was."""
        return self._finish("cancelled", expect=("queued",), error="cancelled before it started")

    def cleanup(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def describe(self) -> JobStatus:
        with self.lock:
            results = [JobResultInfo(audio_url=f"/v1/jobs/{self.id}/audio/{i}", metadata=r.metadata)
                       for i, r in enumerate(self.results)]
            return JobStatus(job_id=self.id, status=self.status, progress=round(self.progress, 4), error=self.error,
                             results=results, created=self.created, finished=self.finished)


class JobQueue:
    """A bounded queue of jobs and the worker thread(s) that run them on ``pool``."""

    def __init__(self, pool: ModelPool, max_duration: float, queue_size: int, job_ttl_s: float,
                 workers: int = 1, max_kept_jobs: int = MAX_KEPT_JOBS) -> None:
        if queue_size < 1:
            raise InvalidArgumentError(f"queue_size must be >= 1, got {queue_size}")
        self.pool = pool
        self.max_duration = max_duration
        self.max_size = queue_size
        self.job_ttl_s = job_ttl_s
        self.max_kept_jobs = max_kept_jobs
        self._waiting: deque[Job] = deque()  # not a queue.Queue: a cancelled job leaves it (and frees its place)
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}  # the jobs a client can poll
        self._jobs_lock = threading.Lock()
        self._running = 0
        self._running_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"yuefu-api-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # -- the handlers' side

    def submit(self, job: Job, public: bool) -> None:
        """Queue ``job`` (``public``: pollable under /v1/jobs); ApiError 503 when the queue is full."""
        self.prune()
        if public:
            with self._jobs_lock:
                self._jobs[job.id] = job
        with self._cond:
            full = len(self._waiting) >= self.max_size
            if not full:
                self._waiting.append(job)
                self._cond.notify()
        if full:
            with self._jobs_lock:
                self._jobs.pop(job.id, None)
            job.cleanup()
            raise ApiError(503, f"the queue is full ({self.max_size} jobs waiting); retry in a few seconds",
                           headers={"Retry-After": str(RETRY_AFTER_S)})

    def cancel(self, job: Job) -> bool:
        """Cancel ``job`` if it has not started (its place in the queue is free at once); True if it was."""
        with self._cond:
            if not job.cancel():
                return False
            try:
                self._waiting.remove(job)
            except ValueError:  # a worker has just taken it, and will skip it
                return True
        job.cleanup()
        return True

    def get(self, job_id: str) -> Job | None:
        self.prune()
        with self._jobs_lock:
            return self._jobs.get(job_id)

    def forget(self, job_id: str) -> None:
        with self._jobs_lock:
            self._jobs.pop(job_id, None)

    def prune(self) -> None:
        """Forget finished jobs past their time to live, and the oldest past ``max_kept_jobs``."""
        now = time.time()
        with self._jobs_lock:
            finished = sorted((j for j in self._jobs.values() if j.finished is not None), key=lambda j: j.finished)
            excess = len(finished) - self.max_kept_jobs
            for i, job in enumerate(finished):
                if i < excess or now - job.finished > self.job_ttl_s:
                    del self._jobs[job.id]

    def size(self) -> int:
        with self._cond:
            return len(self._waiting)

    def running(self) -> int:
        return self._running

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers after their current job; jobs still waiting are cancelled."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            job.cancel()
            job.cleanup()

    # -- the worker's side

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                job = self._waiting.popleft()
            try:
                self._run(job)
            finally:
                job.cleanup()

    def _run(self, job: Job) -> None:
        with job.lock:
            if job.status != "queued":  # cancelled while waiting
                return
            job.status = "running"
        with self._running_lock:
            self._running += 1

        def progress(done: int, total: int) -> None:
            if total > 0:
                job.progress = min(max(done / total, 0.0), 0.999)

        try:
            result = generate(job.request, self.pool, progress_fn=progress, max_duration=self.max_duration)
            results = self._encode(job, result)
        except Exception as e:  # every error ends the job, as one line; only bugs keep their traceback in the log
            status = status_of(e)
            if status >= 500:
                log.exception("job %s failed", job.id)
            message = str(e) if isinstance(e, YuefuError) else f"internal error ({e.__class__.__name__}: {e})"
            job._finish("error", error=" ".join(_scrub(message, job).split()), error_status=status)
        else:
            job._finish("done", results=results, progress=1.0)
        finally:
            with self._running_lock:
                self._running -= 1

    def _encode(self, job: Job, result: GenerationResult) -> list[_Result]:
        from yuefu import audio

        # The sidecar names an uploaded file as the client did, not by the server's temporary path.
        req = result.request
        req.melody = job.upload_names.get(req.melody, req.melody) if req.melody else None
        req.continuation = job.upload_names.get(req.continuation, req.continuation) if req.continuation else None
        out = []
        for i in range(result.audio.shape[0]):
            suffix = f"_{i}" if result.audio.shape[0] > 1 else ""
            name = f"yuefu_{req.seed}{suffix}.{job.format}"
            out.append(_Result(audio.to_bytes(result.audio[i], result.sample_rate, job.format), name,
                               result.sidecar(i, audio_file=name)))
        return out


def _scrub(message: str, job: Job) -> str:
    """An error message without the server's temporary paths."""
    for path, name in job.upload_names.items():
        message = message.replace(f"'{path}'", f"the uploaded {name}").replace(path, f"the uploaded {name}")
    return message


# ---------------------------------------------------------------------------------------------------------------
# Turning HTTP requests into jobs


def describe_validation_error(errors: list[dict[str, Any]]) -> str:
    """pydantic's errors as one line, e.g. ``duration: input should be a valid number, got 'abc'``."""
    parts = []
    for e in errors[:3]:
        names = list(e.get("loc", ()))
        if names and names[0] in ("body", "path", "query", "header"):
            names = names[1:]
        loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in names).lstrip(".")
        kind = e.get("type", "")
        msg = str(e.get("msg", "invalid"))
        if kind == "extra_forbidden":
            parts.append(f"unknown field {loc!r}")
        elif kind == "json_invalid":
            parts.append(f"the body is not valid JSON ({(e.get('ctx') or {}).get('error', msg)})")
        elif kind == "missing":
            parts.append(f"{loc or 'body'}: required")
        else:
            text = f"{loc}: " if loc else ""
            text += msg[:1].lower() + msg[1:]
            if "input" in e and kind != "model_type":
                text += f", got {_short(e['input'])}"
            parts.append(text)
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more error(s)")
    return "; ".join(parts) or "invalid request"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or ApiError 413 past ``limit`` bytes (after reading a bounded rest so the client hears)."""
    declared = request.headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > limit
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            too_big = True
        if too_big:
            if total > limit * _DRAIN_FACTOR:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise ApiError(413, f"the request body is over the limit of {limit / 2**20:g} MiB")
    return b"".join(chunks)


def _decode_base64(text: str, what: str) -> bytes:
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ApiError(400, f"{what}: a data: URL must be base64 (data:audio/wav;base64,...)")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what}: not valid base64") from None
    if not data:
        raise ApiError(400, f"{what}: the audio is empty")
    return data


_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"FORM", ".aiff"))


def _suffix(data: bytes, filename: str | None) -> str:
    """A file suffix for uploaded audio (from its first bytes, else from the client's name), for the readers."""
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return ".mp3"
    suffix = Path(filename or "").suffix.lower()
    return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ".audio"


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class _Api:
    """The state behind one API application."""

    def __init__(self, pool: ModelPool, default_model: str, models: list[str] | None, max_duration: float,
                 queue_size: int, sync_max_duration: float, job_ttl_s: float, max_body_bytes: int,
                 workers: int) -> None:
        from yuefu.checkpoints.hub import canonical_name

        if not (isinstance(max_duration, (int, float)) and math.isfinite(max_duration) and max_duration > 0):
            raise InvalidArgumentError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
        self.pool = pool
        self.default_model = default_model
        self.models = list(dict.fromkeys([default_model, *(models or [])]))
        self._names = {**{canonical_name(m): m for m in self.models}, **{m: m for m in self.models}}
        self.max_duration = float(max_duration)
        self.sync_max_duration = min(float(sync_max_duration), self.max_duration)
        self.max_body_bytes = max_body_bytes
        self.jobs = JobQueue(pool, self.max_duration, queue_size, job_ttl_s, workers=workers)

    def model_name(self, name: str | None) -> str:
        from yuefu.checkpoints.hub import canonical_name

        if name is None:
            return self.default_model
        found = self._names.get(name) or self._names.get(canonical_name(name))
        if found is None:
            raise ApiError(404, f"unknown model {name!r}; this server offers {', '.join(self.models)}")
        return found

    async def parse(self, request: Request) -> tuple[GenerateRequest, dict[str, tuple[bytes, str | None]]]:
        """The request model and the uploaded audio (``{"melody": (bytes, filename)}``) of a generate call."""
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", "", *_FORM_TYPES):
            raise ApiError(415, f"unsupported content type {content_type!r}; send application/json or "
                                "multipart/form-data")
        body = await _read_body(request, self.max_body_bytes)
        uploads: dict[str, tuple[bytes, str | None]] = {}
        if content_type in _FORM_TYPES:
            text, uploads = await self._parse_form(request, body)
        else:
            text = body
        try:
            req = GenerateRequest.model_validate_json(text or b"{}")
        except ValidationError as e:
            raise ApiError(422, describe_validation_error(e.errors(include_url=False))) from None
        for what in ("melody", "continuation"):
            value = getattr(req, what)
            if value is not None:
                if what in uploads:
                    raise ApiError(400, f"{what} given twice: as base64 and as a file part")
                uploads[what] = (_decode_base64(value, what), None)
        return req, uploads

    async def _parse_form(self, request: Request, body: bytes) -> tuple[bytes, dict[str, tuple[bytes, str | None]]]:
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=16,
                                                             max_part_size=self.max_body_bytes)
        except StarletteHTTPException as e:
            raise ApiError(400, f"malformed multipart body: {e.detail}") from None
        except Exception as e:  # python-multipart's parse errors
            raise ApiError(400, f"malformed multipart body: {e}") from None
        try:
            unknown = sorted(set(form.keys()) - {"request", "melody", "continuation"})
            if unknown:
                raise ApiError(422, f"unknown form field(s): {', '.join(unknown)}; send request, melody, "
                                    "continuation")
            text = form.get("request")
            if text is None:
                raise ApiError(422, "request: required (a form field holding the GenerateRequest as JSON)")
            if not isinstance(text, str):
                text = (await text.read()).decode("utf-8", "replace")
            uploads: dict[str, tuple[bytes, str | None]] = {}
            for what in ("melody", "continuation"):
                part = form.get(what)
                if part is None:
                    continue
                if isinstance(part, str):
                    raise ApiError(422, f"{what}: send the audio as a file part (or as base64 in the JSON request)")
                data = await part.read()
                if not data:
                    raise ApiError(400, f"{what}: the uploaded file is empty")
                uploads[what] = (data, part.filename)
            return text.encode(), uploads
        finally:
            await form.close()

    def make_job(self, req: GenerateRequest, uploads: dict[str, tuple[bytes, str | None]]) -> Job:
        """A validated job for ``req``, its uploads written to a temporary folder (ApiError / YuefuError if bad)."""
        given = [req.prompt is not None, req.prompts is not None, req.unconditional]
        if sum(given) != 1:
            raise ApiError(400, "give exactly one of prompt, prompts, or unconditional: true")
        prompts: list[str | None] = [req.prompt] if req.prompt is not None else list(req.prompts or [None])
        gen = GenerationRequest(prompts=prompts, model=self.model_name(req.model), duration=req.duration,
                                seed=req.seed, use_sampling=req.use_sampling, top_k=req.top_k, top_p=req.top_p,
                                temperature=req.temperature, cfg_coef=req.cfg_coef, extend_stride=req.extend_stride,
                                tempo_drafts=req.tempo_drafts, tempo_draft_seconds=req.tempo_draft_seconds,
                                melody="upload" if "melody" in uploads else None,
                                continuation="upload" if "continuation" in uploads else None)
        gen.validate(self.max_duration)
        job = Job(id=secrets.token_urlsafe(12), request=gen, format=req.format)
        if uploads:
            from yuefu import audio

            job.temp_dir = Path(tempfile.mkdtemp(prefix="yuefu-upload-"))
            try:
                for what, (data, filename) in uploads.items():
                    path = job.temp_dir / f"{what}{_suffix(data, filename)}"
                    path.write_bytes(data)
                    job.upload_names[str(path)] = Path(filename).name if filename else what
                    setattr(gen, what, str(path))
                    try:
                        audio.info(path)  # a quick look at the header: garbage is refused before it waits
                    except AudioFileError as e:
                        raise AudioFileError(f"{what}: {_scrub(str(e), job)}") from None
            except BaseException:
                job.cleanup()
                raise
        return job

    def wants_sync(self, req: GenerateRequest, job: Job) -> bool:
        batch = len(job.request.prompts)
        if req.mode == "async":
            return False
        if req.mode == "sync":
            if batch > 1:
                raise ApiError(400, "mode sync answers with one audio file: give one prompt, or use mode async")
            if req.duration > self.sync_max_duration:
                raise ApiError(400, f"mode sync allows at most {self.sync_max_duration:g} s; use mode async")
            return True
        return batch == 1 and req.duration <= self.sync_max_duration


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _quote(text: str | None) -> str:
    return urllib.parse.quote(text or "", safe="")


_ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in (
    (400, "A value no model can use (duration past the limit, garbage audio, melody on a text model, ...)."),
    (404, "Unknown model, job or result."),
    (413, "The request body is too large."),
    (415, "The body is neither JSON nor multipart/form-data."),
    (422, "A malformed request: wrong types, unknown fields, out-of-range values."),
    (503, "The queue is full; retry after the Retry-After header's seconds."),
)}
_AUDIO_CONTENT = {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()}
_FORM_SCHEMA = {
    "type": "object",
    "required": ["request"],
    "properties": {
        "request": {"type": "string", "description": "A GenerateRequest as JSON (without melody/continuation)."},
        "melody": {"type": "string", "format": "binary", "description": "Audio file: the melody to follow."},
        "continuation": {"type": "string", "format": "binary", "description": "Audio file to continue."},
    },
}


# ---------------------------------------------------------------------------------------------------------------
# The application


def create_api(pool: ModelPool, default_model: str, models: list[str] | None = None, max_duration: float = 120.0,
               queue_size: int = 8, sync_max_duration: float = 30.0, job_ttl_s: float = 3600,
               max_body_bytes: int = MAX_BODY_BYTES, workers: int = 1) -> FastAPI:
    """A FastAPI application serving the API under /v1 on ``pool`` (see the module docstring).

    ``default_model`` and ``models`` are the models offered; ``max_duration`` caps every request,
    ``sync_max_duration`` the ones answered synchronously; ``queue_size`` jobs may wait, run by ``workers``
    threads; finished jobs are kept ``job_ttl_s`` seconds. ``app.state.yuefu_jobs`` is the :class:`JobQueue`.
    """
    from yuefu import __version__

    state = _Api(pool, default_model, models, max_duration, queue_size, sync_max_duration, job_ttl_s,
                 max_body_bytes, workers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.jobs.stop()

    app = FastAPI(title="yuefu", version=__version__, lifespan=lifespan,
                  description="Text-to-music with MusicGen. POST /v1/generate answers with the audio itself or, "
                              "for long or batched requests, a job to poll at /v1/jobs/{id}. Errors are "
                              '{"error": "one line"}.')
    app.state.yuefu_jobs = state.jobs

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(YuefuError)
    async def yuefu_error(_request: Request, exc: YuefuError) -> JSONResponse:
        return _error(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, describe_validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return _error(500, f"internal error ({exc.__class__.__name__}); see the server log")

    @app.post(
        "/v1/generate",
        summary="Generate music",
        description="JSON body: a GenerateRequest. Or multipart/form-data: a `request` field with that JSON and "
                    "`melody` / `continuation` file parts. Answers with the audio (200) or a job (202); see `mode`.",
        responses={
            200: {"description": "The audio file (one prompt, synchronous).", "content": _AUDIO_CONTENT,
                  "headers": {"X-Yuefu-Seed": {"schema": {"type": "integer"}, "description": "Seed used."},
                              "X-Yuefu-Sample-Rate": {"schema": {"type": "integer"}},
                              "X-Yuefu-Model": {"schema": {"type": "string"}, "description": "URL-encoded."},
                              "X-Yuefu-Prompt-Used": {"schema": {"type": "string"},
                                                      "description": "The prompt as the model saw it, "
                                                                     "URL-encoded UTF-8."}}},
            202: {"model": JobAccepted, "description": "A job: poll status_url."},
            **_ERRORS,
        },
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
            "multipart/form-data": {"schema": _FORM_SCHEMA},
        }}},
    )
    async def generate_endpoint(request: Request) -> Response:
        req, uploads = await state.parse(request)
        job = state.make_job(req, uploads)
        try:
            sync = state.wants_sync(req, job)
        except BaseException:
            job.cleanup()
            raise
        if not sync:
            state.jobs.submit(job, public=True)
            return JSONResponse({"job_id": job.id, "status_url": f"/v1/jobs/{job.id}"}, status_code=202,
                                headers={"Location": f"/v1/jobs/{job.id}"})
        return await _answer_sync(request, job)

    async def _answer_sync(request: Request, job: Job) -> Response:
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

        job.on_final(wake)
        state.jobs.submit(job, public=False)
        try:
            while not finished.done():
                await asyncio.wait({finished}, timeout=1.0)
                if not finished.done() and await request.is_disconnected():
                    state.jobs.cancel(job)  # nobody is waiting for it; a running job still runs to the end
                    return Response(status_code=499)
        except asyncio.CancelledError:
            state.jobs.cancel(job)
            raise
        if job.status != "done":
            return _error(job.error_status, job.error or job.status)
        result = job.results[0]
        req = job.request
        headers = {"X-Yuefu-Seed": str(req.seed),
                   "X-Yuefu-Sample-Rate": str(result.metadata["sample_rate"]),
                   "X-Yuefu-Model": _quote(req.model),
                   "Content-Disposition": f'attachment; filename="{result.filename}"'}
        if result.metadata.get("prompt_used") is not None:
            headers["X-Yuefu-Prompt-Used"] = _quote(result.metadata["prompt_used"])
        if result.metadata.get("prompt_left_out"):
            headers["X-Yuefu-Prompt-Left-Out"] = _quote(", ".join(result.metadata["prompt_left_out"]))
        return Response(result.data, media_type=MEDIA_TYPES[job.format], headers=headers)

    def _job(job_id: str) -> Job:
        job = state.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"unknown job {job_id!r} (finished jobs are kept {job_ttl_s:g} s)")
        return job

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, summary="A job's status and results",
             responses={404: _ERRORS[404]})
    async def job_status(job_id: str) -> JobStatus:
        return _job(job_id).describe()

    @app.get("/v1/jobs/{job_id}/audio/{index}", summary="A finished job's audio file",
             responses={200: {"description": "The audio file.", "content": _AUDIO_CONTENT},
                        404: _ERRORS[404], 409: {"model": ErrorBody, "description": "The job is not done."}})
    async def job_audio(job_id: str, index: int) -> Response:
        job = _job(job_id)
        with job.lock:
            status, results = job.status, list(job.results)
        if status != "done":
            raise ApiError(409, f"job {job_id} is {status}, not done" + (f": {job.error}" if job.error else ""))
        if not 0 <= index < len(results):
            raise ApiError(404, f"job {job_id} has results 0..{len(results) - 1}, not {index}")
        result = results[index]
        return Response(result.data, media_type=MEDIA_TYPES[job.format],
                        headers={"Content-Disposition": f'attachment; filename="{result.filename}"'})

    @app.delete("/v1/jobs/{job_id}", response_model=JobStatus, summary="Cancel a queued job or forget a finished one",
                responses={404: _ERRORS[404], 409: {"model": ErrorBody, "description": "The job is running."}})
    async def job_delete(job_id: str) -> JobStatus:
        job = _job(job_id)
        if not state.jobs.cancel(job) and not job.is_final:
            raise ApiError(409, f"job {job_id} is running and cannot be stopped; it will finish")
        state.jobs.forget(job_id)
        return job.describe()

    @app.get("/v1/health", response_model=Health, summary="Liveness and queue")
    async def health() -> Health:
        return Health(status="ok", version=__version__, models_loaded=pool.loaded(),
                      queue=QueueInfo(size=state.jobs.size(), max=state.jobs.max_size, running=state.jobs.running()))

    @app.get("/v1/models", response_model=ModelsInfo, summary="The models this server offers")
    async def list_models() -> ModelsInfo:
        from yuefu.checkpoints.hub import KNOWN_MODELS

        return ModelsInfo(default=state.default_model, models=state.models, loaded=pool.loaded(),
                          official=list(KNOWN_MODELS), max_duration=state.max_duration,
                          sync_max_duration=state.sync_max_duration)

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def not_found(request: Request, path: str) -> Response:
        allowed = sorted({m for route in app.routes if isinstance(route, APIRoute) and route.path != "/v1/{path:path}"
                          and route.matches(request.scope)[0] == Match.PARTIAL for m in route.methods})
        if allowed:
            return _error(405, f"{request.method} is not allowed on /v1/{path}; use {', '.join(allowed)}",
                          {"Allow": ", ".join(allowed)})
        return _error(404, f"no such endpoint: {request.method} /v1/{path}; see /docs")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request_schema.pop("$defs", {}))
            components["GenerateRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


__all__ = ["GenerateRequest", "JobQueue", "create_api", "describe_validation_error", "MEDIA_TYPES"]
