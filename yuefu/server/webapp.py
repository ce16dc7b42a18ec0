"""The web app: a Gradio page in front of :mod:`yuefu.service`.

:func:`build_app` makes the page (prompt and examples, model and duration, melody or audio to continue, sampling
settings and seed; a streamed preview, the player and downloads, a spectrogram and a chromagram; a history of this
tab's results; an English / 中文 switch) with its queue already set, so that the HTTP API can mount it with
``gradio.mount_gradio_app(api, blocks, "/", **page_settings(max_upload_mb))``. :func:`launch` builds a model
pool and the page and serves it, on 127.0.0.1 unless told otherwise.

Every user error (a :class:`~yuefu.errors.YuefuError`) reaches the page as a one-line ``gr.Error``; uploads are
checked on the server for size and length whatever the browser did.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch

from yuefu.errors import InvalidArgumentError, YuefuError
from yuefu.generation.tempo_drafts import MAX_DRAFTS
from yuefu.service import GenerationRequest, GenerationResult, ModelPool, generate

logger = logging.getLogger(__name__)

LANGUAGES = [("English", "en"), ("中文", "zh")]
MAX_HISTORY = 50  # results kept per browser tab
STREAM_CHUNK_SECONDS = 1.0
MAX_PROMPT_CHARS = 1000
KEEP_RESULTS_S = 86400.0  # results (audio, sidecar, pictures) are deleted from the server after a day

EXAMPLES = [
    "国风，古筝与竹笛，山水间的宁静，慢板",
    "energetic rock with distorted electric guitars, driving drums and a bass groove, 130 BPM",
    "国风摇滚：二胡主旋律配失真电吉他和强劲鼓点",
    "Chinese traditional meets rock: pipa riffs over heavy drums and power chords, epic",
    "国风电子，琵琶与合成器，轻快的节奏",
    "lo-fi hip hop with a warm piano and vinyl crackle, relaxed",
]

# Every visible text of the page, per language: the props that gr.update() sets on each component.
TEXT: dict[str, dict[str, dict[str, Any]]] = {
    "en": {
        "title": {"value": "# 乐府 yuefu\nText to music with MusicGen, in pure PyTorch. Describe the music in "
                           "English or Chinese: 国风, rock, or both at once."},
        "prompt": {"label": "Describe the music",
                   "placeholder": "e.g. 国风摇滚, erhu lead over distorted guitars, 120 BPM"},
        "examples": {"label": "Examples (click one)"},
        "unconditional": {"label": "No prompt (unconditional)"},
        "model": {"label": "Model", "info": "official models are downloaded on first use"},
        "duration": {"label": "Duration (seconds)"},
        "audio_inputs": {"label": "Melody & continuation"},
        "melody": {"label": "Melody to follow (upload or record; melody models only)"},
        "continuation": {"label": "Audio to continue (the result starts with it)"},
        "advanced": {"label": "Advanced settings"},
        "use_sampling": {"label": "Sample (off: greedy decoding)"},
        "top_k": {"label": "Top-k"},
        "top_p": {"label": "Top-p (0: off)"},
        "temperature": {"label": "Temperature"},
        "cfg_coef": {"label": "Classifier-free guidance"},
        "extend_stride": {"label": "Window stride for long pieces (s)"},
        "tempo_drafts": {"label": "Tempo drafts",
                         "info": "for a prompt that states a BPM: try this many first windows and keep the one "
                                 "nearest that tempo (0: off; slower, and not streamed)"},
        "seed": {"label": "Seed"},
        "random_seed": {"label": "Random seed"},
        "stream_on": {"label": "Play while generating"},
        "generate": {"value": "Generate"},
        "hint": {"value": "Chinese prompts are translated into English for the text encoder; the prompt actually "
                          "used and the seed are shown with the result, so any result can be made again."},
        "stream": {"label": "Live preview"},
        "result": {"label": "Result"},
        "files": {"label": "Download (audio and settings)"},
        "info": {"label": "Details"},
        "spectrogram": {"label": "Spectrogram"},
        "chroma": {"label": "Chroma (pitch classes)"},
        "history_box": {"label": "History (this tab)"},
        "history": {"label": "Your results: click a row to load it again"},
        "history_files": {"label": "All files"},
    },
    "zh": {
        "title": {"value": "# 乐府 yuefu\n用文字生成音乐（MusicGen，纯 PyTorch 实现）。用中文或英文描述你想要的音乐："
                           "国风、摇滚，或两者融合。"},
        "prompt": {"label": "描述音乐", "placeholder": "例如：国风摇滚，二胡主旋律配失真电吉他，每分钟120拍"},
        "examples": {"label": "示例（点击使用）"},
        "unconditional": {"label": "不用提示词（无条件生成）"},
        "model": {"label": "模型", "info": "官方模型在首次使用时下载"},
        "duration": {"label": "时长（秒）"},
        "audio_inputs": {"label": "旋律与续写"},
        "melody": {"label": "参考旋律（上传或录音；仅限旋律模型）"},
        "continuation": {"label": "续写音频（结果以它开头）"},
        "advanced": {"label": "高级设置"},
        "use_sampling": {"label": "随机采样（关闭则为贪心解码）"},
        "top_k": {"label": "Top-k"},
        "top_p": {"label": "Top-p（0 为关闭）"},
        "temperature": {"label": "温度"},
        "cfg_coef": {"label": "无分类器引导强度"},
        "extend_stride": {"label": "长曲目的窗口步长（秒）"},
        "tempo_drafts": {"label": "速度草稿数",
                         "info": "提示词写明速度（BPM）时：先生成这么多个开头，保留速度最接近的一个（0 为关闭；"
                                 "更慢，且不边生成边播放）"},
        "seed": {"label": "随机种子"},
        "random_seed": {"label": "随机"},
        "stream_on": {"label": "边生成边播放"},
        "generate": {"value": "生成"},
        "hint": {"value": "中文提示词会先译成英文再交给文本编码器；结果旁会显示实际使用的提示词和种子，"
                          "任何结果都可以重新生成。"},
        "stream": {"label": "实时预览"},
        "result": {"label": "结果"},
        "files": {"label": "下载（音频与参数）"},
        "info": {"label": "详情"},
        "spectrogram": {"label": "频谱图"},
        "chroma": {"label": "音级图（色度）"},
        "history_box": {"label": "历史记录（本标签页）"},
        "history": {"label": "你的作品：点击一行重新载入"},
        "history_files": {"label": "全部文件"},
    },
}

HISTORY_HEADERS = {
    "en": ["Time", "Prompt", "Prompt used", "Model", "Seconds", "Seed", "Settings"],
    "zh": ["时间", "提示词", "实际使用的提示词", "模型", "时长（秒）", "种子", "参数"],
}

MESSAGES = {
    "en": {
        "no_prompt": "Type a prompt, or tick 'No prompt (unconditional)'.",
        "too_much_text": "the prompt is longer than {limit} characters",
        "bad_model": "the model {model!r} is not offered by this app",
        "too_big": "the {what} file is {size:.1f} MB; uploads are limited to {limit:g} MB",
        "too_long": "the {what} lasts {seconds:.1f} s; uploads are limited to {limit:g} s",
        "longer_than_result": "the audio to continue lasts {seconds:.1f} s, and the result ({duration:g} s) starts "
                              "with it: choose a longer duration or a shorter clip",
        "melody": "melody", "continuation": "audio to continue",
        "info": "Seed {seed} · {duration:.2f} s · {sample_rate} Hz · {model}\nPrompt used: {used}\n{left_out}"
                "Made in {seconds:.1f} s{mode}",
        "left_out": "Not understood, left out: {words}\n",
        "streamed": " (streamed)", "unconditional": "(none: unconditional)",
        "generating": "Generating", "loading": "Loading the model",
        "failed": "generation failed: {error}",
    },
    "zh": {
        "no_prompt": "请输入提示词，或勾选“不用提示词（无条件生成）”。",
        "too_much_text": "提示词超过 {limit} 个字符",
        "bad_model": "此应用不提供模型 {model!r}",
        "too_big": "{what}文件大小为 {size:.1f} MB，上传上限为 {limit:g} MB",
        "too_long": "{what}时长 {seconds:.1f} 秒，上传上限为 {limit:g} 秒",
        "longer_than_result": "续写音频长 {seconds:.1f} 秒，而结果（{duration:g} 秒）以它开头："
                              "请选更长的时长或更短的音频",
        "melody": "参考旋律", "continuation": "续写音频",
        "info": "种子 {seed} · {duration:.2f} 秒 · {sample_rate} Hz · {model}\n实际使用的提示词：{used}\n{left_out}"
                "用时 {seconds:.1f} 秒{mode}",
        "left_out": "未能理解、已略去：{words}\n",
        "streamed": "（流式）", "unconditional": "（无：无条件生成）",
        "generating": "生成中", "loading": "正在加载模型",
        "failed": "生成失败：{error}",
    },
}

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#title h1 { font-size: 2.1rem; margin: 0.2rem 0 0.1rem 0; letter-spacing: 0.02em; }
#title p { opacity: 0.8; margin-top: 0; }
#lang { min-width: 180px; }
#generate { font-size: 1.15rem; min-height: 3rem; }
#hint p { font-size: 0.85rem; opacity: 0.7; }
#spectrogram img, #chroma img { image-rendering: auto; border-radius: 6px; }
"""


def _theme() -> gr.themes.Base:
    # System fonts only: the default theme's web fonts would be fetched from the internet by every browser.
    return gr.themes.Soft(primary_hue="red", secondary_hue="amber", neutral_hue="stone",
                          font=["system-ui", "-apple-system", "Segoe UI", "Noto Sans", "Noto Sans CJK SC",
                                "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", "sans-serif"],
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])


def page_settings(max_upload_mb: float = 20.0) -> dict[str, Any]:
    """The keyword arguments that both ``Blocks.launch`` and ``gradio.mount_gradio_app`` take for this page:
    theme, CSS and the upload size limit (Gradio 6 keeps these out of the Blocks)."""
    return {"theme": _theme(), "css": CSS, "max_file_size": int(max_upload_mb * 1024 * 1024)}


def _whole(value: Any, what: str) -> int:
    """A form number that must be whole (a slider sends 3.0); None is 0."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise InvalidArgumentError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def _message(lang: str, key: str, **values: Any) -> str:
    return MESSAGES.get(lang, MESSAGES["en"])[key].format(**values)


@dataclass
class HistoryItem:
    """One result of this tab: its settings (the request, with the seed used) and its files."""

    created: str
    request: dict[str, Any]
    prompt_used: str | None
    sample_rate: int
    duration: float
    seconds: float
    streamed: bool
    audio: str
    sidecar: str
    spectrogram: str
    chroma: str
    left_out: list[str] = field(default_factory=list)  # words of the prompt the normaliser could not read

    def settings(self) -> str:
        r = self.request
        parts = [f"top-k {r['top_k']}", f"top-p {r['top_p']:g}", f"T {r['temperature']:g}", f"CFG {r['cfg_coef']:g}"]
        if not r["use_sampling"]:
            parts.insert(0, "greedy")
        if r.get("tempo_drafts"):
            parts.append(f"{r['tempo_drafts']} tempo drafts")
        if r.get("melody"):
            parts.append("melody " + Path(r["melody"]).name)
        if r.get("continuation"):
            parts.append("continues " + Path(r["continuation"]).name)
        return " · ".join(parts)


def history_table(history: list[HistoryItem], lang: str = "en") -> pd.DataFrame:
    """The history as a table, newest first, with headers in ``lang``."""
    rows = [[h.created, h.request["prompts"][0] or "—", h.prompt_used or "—", _model_label(h.request["model"]),
             f"{h.duration:.1f}", str(h.request["seed"]), h.settings()] for h in reversed(history)]
    return pd.DataFrame(rows, columns=HISTORY_HEADERS.get(lang, HISTORY_HEADERS["en"]))


def _model_label(name: str) -> str:
    path = Path(name)
    return f"{path.name} (local)" if path.is_absolute() or name.startswith(".") else name


class Studio:
    """The page's server side, without Gradio's layout: requests from the form, upload checks, the generation
    loop (streamed or whole) and the files and pictures of each result. Its methods are what the page calls."""

    def __init__(self, pool: ModelPool, models: list[str], max_duration: float = 30.0,
                 max_upload_mb: float = 20.0, max_upload_seconds: float | None = None,
                 workdir: str | Path | None = None, streaming: bool | None = None):
        self.pool = pool
        self.models = list(models)
        self.max_duration = float(max_duration)
        self.max_upload_mb = float(max_upload_mb)
        self.max_upload_seconds = float(max_upload_seconds if max_upload_seconds is not None
                                        else max(30.0, self.max_duration))
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="yuefu-webapp-")
            atexit.register(shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Gradio re-encodes a streamed output with the ffmpeg program; without it only whole files are served.
        self.streaming = shutil.which("ffmpeg") is not None if streaming is None else streaming

    # --- form -> request -----------------------------------------------------------------------------------------
    def check_upload(self, path: str | None, what: str, lang: str = "en") -> float | None:
        """Refuse an uploaded file that is too big, not audio, or too long; returns its length in seconds."""
        if not path:
            return None
        from yuefu import audio

        name = _message(lang, what)
        meta = audio.info(path)  # a missing or undecodable file: AudioFileError, in one line
        size = os.path.getsize(path) / (1024 * 1024)
        if size > self.max_upload_mb:
            raise InvalidArgumentError(_message(lang, "too_big", what=name, size=size, limit=self.max_upload_mb))
        seconds = meta.duration
        if seconds > self.max_upload_seconds:
            raise InvalidArgumentError(_message(lang, "too_long", what=name, seconds=seconds,
                                                limit=self.max_upload_seconds))
        return seconds

    def build_request(self, prompt: str | None, unconditional: bool, model: str, duration: float,
                      melody: str | None = None, continuation: str | None = None, use_sampling: bool = True,
                      top_k: float = 250, top_p: float = 0.0, temperature: float = 1.0, cfg_coef: float = 3.0,
                      extend_stride: float = 18.0, seed: float | None = None, random_seed: bool = True,
                      lang: str = "en", tempo_drafts: float = 0) -> GenerationRequest:
        """The request the form describes; raises InvalidArgumentError (one line, in ``lang``) for bad input."""
        text = "" if unconditional else (prompt or "").strip()
        if not text and not unconditional:
            raise InvalidArgumentError(_message(lang, "no_prompt"))
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidArgumentError(_message(lang, "too_much_text", limit=MAX_PROMPT_CHARS))
        if model not in self.models:
            raise InvalidArgumentError(_message(lang, "bad_model", model=model))
        self.check_upload(melody, "melody", lang)
        clip = self.check_upload(continuation, "continuation", lang)
        try:
            duration = float(duration)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"duration must be a number of seconds, got {duration!r}") from None
        if clip is not None and clip >= duration:
            raise InvalidArgumentError(_message(lang, "longer_than_result", seconds=clip, duration=duration))
        chosen_seed = None
        if not random_seed and seed is not None:
            chosen_seed = _whole(seed, "seed")
        request = GenerationRequest(
            prompts=[text or None], model=model, duration=duration, seed=chosen_seed, use_sampling=bool(use_sampling),
            top_k=int(top_k), top_p=float(top_p), temperature=float(temperature), cfg_coef=float(cfg_coef),
            extend_stride=float(extend_stride), melody=melody or None, continuation=continuation or None,
            tempo_drafts=_whole(tempo_drafts, "tempo drafts"))
        request.validate(self.max_duration)
        return request

    # --- generation ----------------------------------------------------------------------------------------------
    def run(self, prompt: str | None, unconditional: bool, model: str, duration: float, melody: str | None,
            continuation: str | None, use_sampling: bool, top_k: float, top_p: float, temperature: float,
            cfg_coef: float, extend_stride: float, seed: float | None, random_seed: bool, stream_on: bool,
            lang: str, history: list[HistoryItem] | None,
            progress: Any = None, tempo_drafts: float = 0) -> Iterator[list[Any]]:
        """The Generate button: yields [stream chunk, result, files, details, spectrogram, chroma, history,
        history table, history files, shown item]; a chunk (stream only) while streaming, then the whole result."""
        history = list(history or [])
        try:
            request = self.build_request(prompt, unconditional, model, duration, melody, continuation, use_sampling,
                                         top_k, top_p, temperature, cfg_coef, extend_stride, seed, random_seed, lang,
                                         tempo_drafts)
        except YuefuError as e:
            raise gr.Error(str(e), print_exception=False) from None
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()
        worker = threading.Thread(target=self._work, args=(request, bool(stream_on), events, stop), daemon=True,
                                  name="yuefu-webapp-generate")
        worker.start()
        streamed = False
        try:
            while True:
                kind, value = events.get()
                if kind == "progress":
                    if progress is not None:
                        progress(value, desc=_message(lang, "generating"))
                elif kind == "loading":
                    if progress is not None:
                        progress(None, desc=_message(lang, "loading"))
                elif kind == "chunk":
                    streamed = True
                    yield [value] + [gr.skip()] * 9
                elif kind == "error":
                    if isinstance(value, YuefuError):
                        raise gr.Error(str(value), print_exception=False)
                    logger.error("generation failed", exc_info=value)
                    raise gr.Error(_message(lang, "failed", error=f"{type(value).__name__}: {value}"),
                                   print_exception=False)
                else:  # done
                    item = self._save(value, streamed)
                    history = (history + [item])[-MAX_HISTORY:]
                    yield [gr.skip(), item.audio, [item.audio, item.sidecar], self.details(item, lang),
                           item.spectrogram, item.chroma, history, history_table(history, lang),
                           [h.audio for h in reversed(history)], item]
                    return
        finally:
            stop.set()  # the page went away or the run ended: a still-running worker stops at its next step

    def _work(self, request: GenerationRequest, stream_on: bool, events: queue.Queue, stop: threading.Event) -> None:
        """Worker thread: generate (streaming when possible) and report through ``events``."""

        def report(done: int, total: int) -> None:
            if stop.is_set():
                raise _Stopped()
            events.put(("progress", done / max(total, 1)))

        try:
            if request.model not in self.pool.loaded():
                events.put(("loading", None))
            model = self.pool.get(request.model)
            can_stream = (stream_on and self.streaming and request.melody is None and request.continuation is None
                          and not request.tempo_drafts and request.duration <= model.max_duration
                          and hasattr(model, "generate_stream"))
            if can_stream:
                result = self._stream(request, model, events, stop)
            else:
                result = generate(request, self.pool, progress_fn=report, max_duration=self.max_duration)
            if result is not None:
                events.put(("done", result))
        except _Stopped:
            pass
        except BaseException as e:  # every failure must reach the page, or the page would wait forever
            events.put(("error", e))

    def _stream(self, request: GenerationRequest, model: Any, events: queue.Queue,
                stop: threading.Event) -> GenerationResult:
        """One window generated by :func:`yuefu.service.stream`: chunks to the page, then the whole result."""
        from yuefu import audio
        from yuefu.service import stream

        total = max(1, round(request.duration * model.sample_rate))
        done = 0

        def on_chunk(chunk: torch.Tensor) -> None:  # chunk [B, C, n]
            nonlocal done
            if stop.is_set():
                raise _Stopped()
            done += chunk.shape[-1]
            events.put(("progress", min(1.0, done / total)))
            events.put(("chunk", audio.to_bytes(chunk[0], model.sample_rate, "wav")))

        return stream(request, self.pool, on_chunk, chunk_seconds=STREAM_CHUNK_SECONDS, max_duration=self.max_duration)

    def _save(self, result: GenerationResult, streamed: bool) -> HistoryItem:
        """Write the result's audio, sidecar and pictures into the work folder."""
        import json

        from yuefu import audio
        from yuefu.server import plots

        self._prune()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(tempfile.mkdtemp(prefix=f"{stamp}-", dir=self.workdir))
        base = folder / f"yuefu_{time.strftime('%H%M%S')}_{result.request.seed}"
        wav = result.audio[0]
        audio_path = audio.write(base.with_suffix(".wav"), wav, result.sample_rate)
        sidecar = result.sidecar(0, audio_path)
        sidecar["streamed"] = streamed
        # An upload is named as the user's file was (Gradio keeps it under a temporary folder that goes away); its
        # sha256 beside it still identifies the exact audio.
        for key in ("melody", "continuation"):
            if sidecar["request"].get(key):
                sidecar["request"][key] = Path(sidecar["request"][key]).name
        sidecar_path = base.with_suffix(".json")
        sidecar_path.write_text(json.dumps(sidecar, ensure_ascii=False, indent=2), encoding="utf-8")
        spec_path, chroma_path = folder / "spectrogram.png", folder / "chroma.png"
        plots.spectrogram_image(wav, result.sample_rate).save(spec_path)
        plots.chroma_image(wav, result.sample_rate).save(chroma_path)
        return HistoryItem(created=time.strftime("%H:%M:%S"), request=result.request.to_dict(),
                           prompt_used=result.prompts_used[0], sample_rate=result.sample_rate,
                           duration=wav.shape[-1] / result.sample_rate, seconds=result.seconds, streamed=streamed,
                           audio=str(audio_path), sidecar=str(sidecar_path), spectrogram=str(spec_path),
                           chroma=str(chroma_path),
                           left_out=result.prompts_left_out[0] if result.prompts_left_out else [])

    def _prune(self) -> None:
        """Drop results older than :data:`KEEP_RESULTS_S` (a server that runs for weeks must not fill its disk)."""
        cutoff = time.time() - KEEP_RESULTS_S
        for folder in self.workdir.iterdir():
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass

    def details(self, item: HistoryItem, lang: str = "en") -> str:
        """The result's text: seed and prompt actually used (and the words left out of it), length, model, compute
        time."""
        left_out = _message(lang, "left_out", words=("、" if lang == "zh" else ", ").join(item.left_out)) \
            if item.left_out else ""
        return _message(lang, "info", seed=item.request["seed"], duration=item.duration,
                        sample_rate=item.sample_rate, model=_model_label(item.request["model"]),
                        used=item.prompt_used or _message(lang, "unconditional"), left_out=left_out,
                        seconds=item.seconds, mode=_message(lang, "streamed") if item.streamed else "")


class _Stopped(Exception):
    """Raised inside a worker's progress callback when the page that asked has gone."""


def _model_choices(default_model: str, models: list[str] | None) -> list[str]:
    from yuefu.checkpoints.hub import KNOWN_MODELS

    out: list[str] = []
    for name in [default_model, *(models or []), *KNOWN_MODELS]:
        if name and name not in out:
            out.append(name)
    return out


def build_app(pool: ModelPool, default_model: str, models: list[str] | None = None, max_duration: float = 30.0,
              max_upload_mb: float = 20.0, concurrency_limit: int = 1, max_queue: int = 16,
              max_upload_seconds: float | None = None) -> gr.Blocks:
    """The web app's page for ``pool``, with its queue set (``max_queue`` waiting, ``concurrency_limit`` running).

    ``default_model`` is selected first; ``models`` and the official ids are offered too, and nothing else can be
    asked for. Requests longer than ``max_duration`` seconds are refused, and so are uploads over
    ``max_upload_mb`` or ``max_upload_seconds`` (default: the longer of 30 s and ``max_duration``).
    Serve it with ``.launch(**page_settings(max_upload_mb))`` or mount it the same way.
    """
    choices = _model_choices(default_model, models)
    studio = Studio(pool, choices, max_duration=max_duration, max_upload_mb=max_upload_mb,
                    max_upload_seconds=max_upload_seconds)
    en = TEXT["en"]
    with gr.Blocks(title="乐府 yuefu · MusicGen", analytics_enabled=False,
                   delete_cache=(3600, int(KEEP_RESULTS_S))) as demo:
        demo.yuefu_studio = studio  # for callers and tests
        lang = gr.State("en")
        history = gr.State([])
        shown = gr.State(None)  # the HistoryItem in the player, whose details follow the language
        with gr.Row(equal_height=True):
            title = gr.Markdown(en["title"]["value"], elem_id="title")
            lang_radio = gr.Radio(LANGUAGES, value="en", label="Language · 语言", elem_id="lang", scale=0,
                                  min_width=240)
        with gr.Row():
            with gr.Column(scale=5):
                prompt = gr.Textbox(lines=3, max_lines=8, elem_id="prompt", max_length=MAX_PROMPT_CHARS, **en["prompt"])
                examples = gr.Examples(EXAMPLES, inputs=[prompt], label=en["examples"]["label"],
                                       elem_id="examples", examples_per_page=len(EXAMPLES))
                with gr.Row():
                    model = gr.Dropdown([(_model_label(c), c) for c in choices], value=choices[0], elem_id="model",
                                        scale=3, **en["model"])
                    duration = gr.Slider(1, max_duration, value=min(10.0, max_duration), step=0.5,
                                         elem_id="duration", scale=2, **en["duration"])
                unconditional = gr.Checkbox(False, elem_id="unconditional", **en["unconditional"])
                with gr.Accordion(open=False, elem_id="audio-inputs", **en["audio_inputs"]) as audio_inputs:
                    melody = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="melody",
                                      **en["melody"])
                    continuation = gr.Audio(sources=["upload"], type="filepath", elem_id="continuation",
                                            **en["continuation"])
                with gr.Accordion(open=False, elem_id="advanced", **en["advanced"]) as advanced:
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, minimum=0, interactive=False, elem_id="seed",
                                         **en["seed"])
                        random_seed = gr.Checkbox(True, elem_id="random-seed", **en["random_seed"])
                    use_sampling = gr.Checkbox(True, elem_id="use-sampling", **en["use_sampling"])
                    with gr.Row():
                        top_k = gr.Slider(0, 1000, value=250, step=1, elem_id="top-k", **en["top_k"])
                        top_p = gr.Slider(0.0, 1.0, value=0.0, step=0.01, elem_id="top-p", **en["top_p"])
                    with gr.Row():
                        temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, elem_id="temperature",
                                                **en["temperature"])
                        cfg_coef = gr.Slider(0.0, 10.0, value=3.0, step=0.1, elem_id="cfg", **en["cfg_coef"])
                    extend_stride = gr.Slider(1.0, 29.0, value=18.0, step=0.5, elem_id="extend-stride",
                                              **en["extend_stride"])
                    tempo_drafts = gr.Slider(0, MAX_DRAFTS, value=0, step=1, elem_id="tempo-drafts",
                                             **en["tempo_drafts"])
                    stream_on = gr.Checkbox(studio.streaming, interactive=studio.streaming, elem_id="stream-on",
                                            **en["stream_on"])
                generate_btn = gr.Button(en["generate"]["value"], variant="primary", elem_id="generate")
                hint = gr.Markdown(en["hint"]["value"], elem_id="hint")
            with gr.Column(scale=6):
                stream = gr.Audio(streaming=True, autoplay=True, interactive=False, elem_id="stream",
                                  visible=studio.streaming, buttons=[], **en["stream"])
                result = gr.Audio(type="filepath", interactive=False, elem_id="result-audio",
                                  buttons=["download"], **en["result"])
                files = gr.File(file_count="multiple", interactive=False, elem_id="result-files", **en["files"])
                info = gr.Textbox(lines=3, interactive=False, elem_id="result-info", **en["info"])
                spectrogram = gr.Image(type="filepath", format="png", interactive=False, elem_id="spectrogram",
                                       buttons=["download", "fullscreen"], **en["spectrogram"])
                chroma = gr.Image(type="filepath", format="png", interactive=False, elem_id="chroma",
                                  buttons=["download", "fullscreen"], **en["chroma"])
        with gr.Accordion(open=True, elem_id="history-box", **en["history_box"]) as history_box:
            table = gr.Dataframe(history_table([], "en"), interactive=False, wrap=True, elem_id="history",
                                 max_height=360, column_widths=["8%", "24%", "22%", "13%", "7%", "10%", "16%"],
                                 **en["history"])
            history_files = gr.File(file_count="multiple", interactive=False, elem_id="history-files",
                                    **en["history_files"])

        translated = {"title": title, "prompt": prompt, "examples": examples.dataset, "model": model,
                      "duration": duration, "unconditional": unconditional, "audio_inputs": audio_inputs,
                      "melody": melody, "continuation": continuation, "advanced": advanced, "seed": seed,
                      "random_seed": random_seed, "use_sampling": use_sampling, "top_k": top_k, "top_p": top_p,
                      "temperature": temperature, "cfg_coef": cfg_coef, "extend_stride": extend_stride,
                      "tempo_drafts": tempo_drafts, "stream_on": stream_on, "generate": generate_btn, "hint": hint,
                      "stream": stream,
                      "result": result, "info": info, "files": files, "spectrogram": spectrogram, "chroma": chroma,
                      "history_box": history_box, "history": table, "history_files": history_files}

        def switch_language(code: str, items: list[HistoryItem], item: HistoryItem | None) -> list[Any]:
            code = code if code in TEXT else "en"
            texts = TEXT[code]
            updates = {key: dict(texts[key]) for key in translated}
            if item is not None:
                updates["info"]["value"] = studio.details(item, code)
            return [code, history_table(items, code)] + [gr.update(**updates[key]) for key in translated]

        lang_radio.change(switch_language, [lang_radio, history, shown], [lang, table, *translated.values()],
                          queue=False, show_progress="hidden", api_visibility="private")
        random_seed.change(lambda r: gr.update(interactive=not r), random_seed, seed, queue=False,
                           show_progress="hidden", api_visibility="private")
        stream_on.change(lambda on: gr.update(visible=bool(on)), stream_on, stream, queue=False,
                         show_progress="hidden", api_visibility="private")

        def on_generate(prompt: str, unconditional: bool, model: str, duration: float, melody: str | None,
                        continuation: str | None, use_sampling: bool, top_k: float, top_p: float,
                        temperature: float, cfg_coef: float, extend_stride: float, seed: float | None,
                        random_seed: bool, stream: bool, lang: str, history: list[HistoryItem],
                        tempo_drafts: float = 0,
                        progress: gr.Progress = gr.Progress()) -> Iterator[list[Any]]:  # noqa: B008 - Gradio's API
            # The parameters are the form's values (named as its components: Gradio's API page shows them).
            yield from studio.run(prompt, unconditional, model, duration, melody, continuation, use_sampling, top_k,
                                  top_p, temperature, cfg_coef, extend_stride, seed, random_seed, stream, lang,
                                  history, progress=progress, tempo_drafts=tempo_drafts)

        inputs = [prompt, unconditional, model, duration, melody, continuation, use_sampling, top_k, top_p,
                  temperature, cfg_coef, extend_stride, seed, random_seed, stream_on, lang, history, tempo_drafts]
        outputs = [stream, result, files, info, spectrogram, chroma, history, table, history_files, shown]
        generate_btn.click(on_generate, inputs, outputs, concurrency_limit=concurrency_limit,
                           concurrency_id="yuefu-generate", show_progress_on=[result, info], api_name="generate")
        prompt.submit(on_generate, inputs, outputs, concurrency_limit=concurrency_limit,
                      concurrency_id="yuefu-generate", show_progress_on=[result, info], api_visibility="private")

        def reload(items: list[HistoryItem], code: str, evt: gr.SelectData) -> list[Any]:
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if not items or row is None or not 0 <= row < len(items):
                return [gr.skip()] * 19
            item = items[len(items) - 1 - row]  # the table is newest first
            r = item.request
            return [r["prompts"][0] or "", r["prompts"][0] is None, r["model"] if r["model"] in choices else gr.skip(),
                    min(r["duration"], max_duration), r["use_sampling"], r["top_k"], r["top_p"], r["temperature"],
                    r["cfg_coef"], min(r["extend_stride"], 29.0), gr.update(value=r["seed"], interactive=True), False,
                    item.audio, [item.audio, item.sidecar], studio.details(item, code), item.spectrogram,
                    item.chroma, item, r.get("tempo_drafts", 0)]

        table.select(reload, [history, lang],
                     [prompt, unconditional, model, duration, use_sampling, top_k, top_p, temperature, cfg_coef,
                      extend_stride, seed, random_seed, result, files, info, spectrogram, chroma, shown, tempo_drafts],
                     queue=False, show_progress="hidden", api_visibility="private")
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    return demo


def launch(model: str, host: str = "127.0.0.1", port: int = 7860, models: list[str] | None = None,
           device: str | None = None, dtype: str | None = None, max_duration: float = 30.0, share: bool = False,
           max_upload_mb: float = 20.0, concurrency_limit: int = 1, max_queue: int = 16,
           **kw: Any) -> gr.Blocks:
    """Load ``model`` (failing early, in one line, if it cannot be), build the page and serve it on ``host:port``
    (127.0.0.1: this machine only). Blocks until stopped unless ``prevent_thread_lock=True`` is passed in ``kw``
    (which goes to ``Blocks.launch``); returns the page."""
    pool = ModelPool(device=device, dtype=dtype)
    logger.info("loading %s", model)
    pool.get(model)
    demo = build_app(pool, model, models=models, max_duration=max_duration, max_upload_mb=max_upload_mb,
                     concurrency_limit=concurrency_limit, max_queue=max_queue)
    settings = page_settings(max_upload_mb)
    settings.update(kw)
    demo.launch(server_name=host, server_port=port, share=share, **settings)
    return demo


__all__ = ["EXAMPLES", "TEXT", "HistoryItem", "Studio", "build_app", "history_table", "launch", "page_settings"]
