"""One generation service behind every front door: the CLI, the web app and the HTTP API.

A :class:`GenerationRequest` says what to make (prompts, duration, seed, sampling, an optional melody or audio
prompt); :class:`ModelPool` loads each model once and runs one request at a time on it; :func:`generate` turns a
request into audio and the metadata that a sidecar needs to reproduce it. The front doors only translate their
inputs into a request and the result into their output format.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from yuefu.errors import InvalidArgumentError
from yuefu.generation.tempo_drafts import MAX_DRAFTS

MAX_DURATION_DEFAULT = 600.0  # seconds; a cap against typos like --duration 36000 (front doors can change it)
SIDECAR_VERSION = 1


@dataclass
class GenerationRequest:
    """Everything that decides the audio. ``prompts`` [None] is one unconditional sample; ``seed`` None means a
    random seed, which :func:`generate` picks and records so that the result can be reproduced."""

    prompts: list[str | None]
    model: str
    duration: float = 10.0
    seed: int | None = None
    use_sampling: bool = True
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    cfg_coef: float = 3.0
    extend_stride: float | None = None  # None: 18 s (audiocraft's), or 60 % of a window shorter than 30 s
    melody: str | None = None  # audio file whose chroma conditions a melody model
    continuation: str | None = None  # audio file to continue; the output starts with it
    tempo_drafts: int = 0  # first windows tried per prompt that states a BPM (MusicGen.set_generation_params)
    tempo_draft_seconds: float | None = None  # None: each draft is the whole first window

    def validate(self, max_duration: float = MAX_DURATION_DEFAULT) -> None:
        """Refuse, in one line, what no model could do (before anything slow happens)."""
        if not self.prompts:
            raise InvalidArgumentError("no prompt given (pass PROMPT, or --unconditional)")
        for p in self.prompts:
            if p is not None and not isinstance(p, str):
                raise InvalidArgumentError(f"a prompt must be text, got {type(p).__name__}")
        d = self.duration
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0 < d <= max_duration:
            raise InvalidArgumentError(f"duration must be in (0, {max_duration:g}] seconds, got {d!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):
            raise InvalidArgumentError(f"seed must be an integer in [0, 2^63), got {self.seed!r}")
        checks = [(isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 0,
                   f"top_k must be an integer >= 0, got {self.top_k!r}"),
                  (_number(self.top_p) and 0 <= self.top_p <= 1, f"top_p must be in [0, 1], got {self.top_p!r}"),
                  (_number(self.temperature) and self.temperature >= 0,
                   f"temperature must be >= 0, got {self.temperature!r}"),
                  (_number(self.cfg_coef) and self.cfg_coef >= 0, f"cfg_coef must be >= 0, got {self.cfg_coef!r}"),
                  (self.extend_stride is None or (_number(self.extend_stride) and self.extend_stride > 0),
                   f"extend_stride must be > 0, got {self.extend_stride!r}"),
                  (isinstance(self.tempo_drafts, int) and not isinstance(self.tempo_drafts, bool)
                   and 0 <= self.tempo_drafts <= MAX_DRAFTS, f"tempo_drafts must be an integer from 0 to {MAX_DRAFTS}, "
                   f"got {self.tempo_drafts!r}"),
                  (self.tempo_draft_seconds is None or (_number(self.tempo_draft_seconds)
                                                        and self.tempo_draft_seconds > 0),
                   f"tempo_draft_seconds must be > 0, got {self.tempo_draft_seconds!r}")]
        for ok, message in checks:
            if not ok:
                raise InvalidArgumentError(message)
        if self.melody is not None and self.continuation is not None:
            raise InvalidArgumentError("give a melody or an audio prompt to continue, not both")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """A request from a sidecar's ``request`` (unknown keys refused, so a typo is not silently ignored)."""
        if not isinstance(data, dict):
            raise InvalidArgumentError("a request must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidArgumentError(f"unknown request field(s): {', '.join(unknown)}")
        for required in ("prompts", "model"):
            if required not in data:
                raise InvalidArgumentError(f"the request has no {required!r}")
        if not isinstance(data["prompts"], list):
            raise InvalidArgumentError("'prompts' must be a list of texts (null: unconditional)")
        return cls(**data)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class GenerationResult:
    """Audio [B, C, T] at ``sample_rate`` for the request's prompts, and what a sidecar records of it."""

    audio: torch.Tensor
    sample_rate: int
    request: GenerationRequest  # with the seed actually used
    prompts_used: list[str | None]
    model_name: str
    seconds: float  # compute time
    extra: dict[str, Any] = field(default_factory=dict)
    prompts_left_out: list[list[str]] = field(default_factory=list)  # per prompt: words the normaliser could not read

    def sidecar(self, index: int, audio_file: str | Path | None = None) -> dict[str, Any]:
        """The JSON sidecar of item ``index``: enough to regenerate it (``yuefu generate --from-sidecar``)."""
        from yuefu import __version__

        wav = self.audio[index]
        data: dict[str, Any] = {
            "yuefu_sidecar": SIDECAR_VERSION,
            "yuefu_version": __version__,
            "prompt": self.request.prompts[index],
            "prompt_used": self.prompts_used[index],
            "prompt_left_out": self.prompts_left_out[index] if index < len(self.prompts_left_out) else [],
            "model": self.request.model,
            "seed": self.request.seed,
            "batch_index": index,
            "duration": wav.shape[-1] / self.sample_rate,
            "sample_rate": self.sample_rate,
            "channels": wav.shape[0],
            "request": self.request.to_dict(),
            "compute_seconds": round(self.seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.extra,
        }
        if audio_file is not None:
            data["audio_file"] = Path(audio_file).name
        return data


ProgressFn = Callable[[int, int], None]


class ModelPool:
    """Models loaded once and kept; one generation at a time per model (a MusicGen holds per-call settings).

    ``loader(name)`` builds a model (default: :meth:`MusicGen.from_pretrained` with this pool's device/dtype).
    """

    def __init__(self, device: str | None = None, dtype: str | None = None, max_models: int = 2,
                 loader: Callable[[str], Any] | None = None):
        self.device = device
        self.dtype = dtype
        self.max_models = max_models
        self._loader = loader
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._pool_lock = threading.Lock()

    def get(self, name: str) -> Any:
        """The loaded model ``name`` (loading it on first use; the oldest is dropped past ``max_models``)."""
        with self._pool_lock:
            if name in self._models:
                return self._models[name]
            if self._loader is not None:
                model = self._loader(name)
            else:
                from yuefu.musicgen import MusicGen

                model = MusicGen.from_pretrained(name, device=self.device, dtype=self.dtype)
            while len(self._models) >= self.max_models:
                oldest = next(iter(self._models))
                del self._models[oldest]
            self._models[name] = model
            self._locks.setdefault(name, threading.Lock())
            return model

    def lock(self, name: str) -> threading.Lock:
        with self._pool_lock:
            return self._locks.setdefault(name, threading.Lock())

    def loaded(self) -> list[str]:
        return list(self._models)


def generate(request: GenerationRequest, pool: ModelPool, progress: bool = False,
             progress_fn: ProgressFn | None = None, max_duration: float = MAX_DURATION_DEFAULT) -> GenerationResult:
    """Run ``request`` on its model from ``pool``; the result's request carries the seed actually used."""
    request.validate(max_duration)
    if request.seed is None:
        request.seed = secrets.randbelow(2**31)
    melody = _read_audio(request.melody, "melody") if request.melody else None
    prompt_audio = _read_audio(request.continuation, "audio prompt") if request.continuation else None
    model = pool.get(request.model)
    if melody is not None and not model.config.melody:
        raise InvalidArgumentError(f"{request.model} has no melody conditioning; use a melody model such as "
                                   "facebook/musicgen-melody")
    extra: dict[str, Any] = {}
    if melody is not None:
        extra["melody_sha256"] = _sha256(request.melody)
    if prompt_audio is not None:
        extra["continuation_sha256"] = _sha256(request.continuation)
    stride = request.extend_stride
    if stride is not None and stride >= model.max_duration:
        stride = None  # a stride past this model's window (e.g. 18 s on a 10 s model): the model's default
    with pool.lock(request.model):
        model.set_generation_params(use_sampling=request.use_sampling, top_k=request.top_k, top_p=request.top_p,
                                    temperature=request.temperature, duration=request.duration,
                                    cfg_coef=request.cfg_coef, extend_stride=stride,
                                    tempo_drafts=request.tempo_drafts,
                                    tempo_draft_seconds=request.tempo_draft_seconds)
        model.set_custom_progress_callback(progress_fn)
        start = time.perf_counter()
        try:
            if melody is not None:
                wav, sr = melody
                wav = model.generate_with_chroma(request.prompts, [wav] * len(request.prompts), sr,
                                                 progress=progress, seed=request.seed)
            elif prompt_audio is not None:
                wav, sr = prompt_audio
                wav = model.generate_continuation(wav[None].expand(len(request.prompts), -1, -1), sr,
                                                  request.prompts, progress=progress, seed=request.seed)
            elif all(p is None for p in request.prompts):
                wav = model.generate_unconditional(len(request.prompts), progress=progress, seed=request.seed)
            else:
                wav = model.generate(request.prompts, progress=progress, seed=request.seed)
        finally:
            model.set_custom_progress_callback(None)
        seconds = time.perf_counter() - start
        used = list(model.last_prompts_used)
        left_out = [list(w) for w in model.last_prompts_left_out]
    return GenerationResult(audio=wav.float().cpu(), sample_rate=model.sample_rate, request=request,
                            prompts_used=used, model_name=request.model, seconds=seconds, extra=extra,
                            prompts_left_out=left_out)


def stream(request: GenerationRequest, pool: ModelPool, on_chunk: Callable[[torch.Tensor], None],
           chunk_seconds: float = 1.0, max_duration: float = MAX_DURATION_DEFAULT) -> GenerationResult:
    """Like :func:`generate`, but ``on_chunk(audio [B, C, n])`` receives the audio while it is generated (text or
    unconditional, one window); the result holds the chunks joined."""
    request.validate(max_duration)
    if request.melody is not None or request.continuation is not None or request.tempo_drafts:
        raise InvalidArgumentError("streaming covers text (or unconditional) generation, without melody, prompt "
                                   "or tempo drafts")
    if request.seed is None:
        request.seed = secrets.randbelow(2**31)
    model = pool.get(request.model)
    if request.duration > model.max_duration:
        raise InvalidArgumentError(f"streaming covers one window: duration <= {model.max_duration:g} s for "
                                   f"{request.model}")
    chunks: list[torch.Tensor] = []
    with pool.lock(request.model):
        model.set_generation_params(use_sampling=request.use_sampling, top_k=request.top_k, top_p=request.top_p,
                                    temperature=request.temperature, duration=request.duration,
                                    cfg_coef=request.cfg_coef)
        start = time.perf_counter()
        for chunk in model.generate_stream(request.prompts, chunk_seconds=chunk_seconds, seed=request.seed):
            chunk = chunk.float().cpu()
            chunks.append(chunk)
            on_chunk(chunk)
        seconds = time.perf_counter() - start
        used = list(model.last_prompts_used)
        left_out = [list(w) for w in model.last_prompts_left_out]
    return GenerationResult(audio=torch.cat(chunks, dim=-1), sample_rate=model.sample_rate, request=request,
                            prompts_used=used, model_name=request.model, seconds=seconds, extra={"stream": True},
                            prompts_left_out=left_out)


def _read_audio(path: str, what: str) -> tuple[torch.Tensor, int]:
    from yuefu import audio
    from yuefu.errors import AudioFileError

    try:
        return audio.read(path)
    except AudioFileError as e:
        raise AudioFileError(f"{what}: {e}") from None


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
