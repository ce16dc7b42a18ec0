"""``MusicGen``: the user-facing model, API-compatible with audiocraft's ``MusicGen``.

It holds the codec, the LM and the text conditioner, turns user requests into :class:`Conditions` and calls the
one generation loop (``yuefu.generation.loop``); long pieces are windows of that same loop.

Melody models (``facebook/musicgen-melody``...) have no cross-attention: their conditions are a prefix
[chroma frames (235, projected by ``melody_proj``), text states (padding zeroed, not masked)] prepended to the audio
steps. Under classifier-free guidance the null prefix is [chroma of silence (bin C on every frame), zeros], as
audiocraft and transformers both build it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from yuefu.checkpoints import Checkpoint, hub, read_checkpoint, write_checkpoint
from yuefu.checkpoints.bundle import check_keys
from yuefu.checkpoints.safetensors_read import materialize
from yuefu.codec import CompressionModel
from yuefu.conditioners.chroma import (
    CHROMA_SAMPLE_RATE,
    check_melody,
    cyclic_melody_window,
    melody_chroma,
    null_melody_chroma,
    separate_melody_stems,
)
from yuefu.conditioners.tempo import parse_bpm
from yuefu.conditioners.text import T5Conditioner, TextConditioner, build_t5_encoder
from yuefu.config import MusicGenConfig
from yuefu.errors import CheckpointError, InvalidArgumentError, ModelNotFoundError
from yuefu.generation import tempo_drafts as tempo_drafts_mod
from yuefu.generation.loop import Conditions, ProgressCallback, generate_tokens, iter_generate
from yuefu.generation.sampling import SamplingParams
from yuefu.lm.model import LMModel
from yuefu.lm.patterns import make_pattern
from yuefu.lm.quantize import Int8Linear, quantizes
from yuefu.memory import release_free_memory

OFFICIAL_DEFAULT = "facebook/musicgen-small"


def default_model() -> str:
    """The built-in ``yuefu-mini`` when this installation ships it (offline), else ``facebook/musicgen-small``."""
    from yuefu.checkpoints.builtin import available

    builtin = available()
    return builtin[0] if builtin else OFFICIAL_DEFAULT


DEFAULT_MODEL = OFFICIAL_DEFAULT  # kept for callers that import it; from_pretrained() uses default_model()
logger = logging.getLogger("yuefu")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class MusicGen:
    """Text-to-music model: ``generate(["lo-fi hip hop"])`` -> audio [B, C, T] at ``sample_rate``."""

    def __init__(self, name: str, compression_model: CompressionModel, lm: LMModel, conditioner: TextConditioner,
                 config: MusicGenConfig, melody_proj: torch.nn.Linear | None = None):
        self.name = name
        self.melody_proj = melody_proj.eval() if melody_proj is not None else None  # chroma bins -> LM dim
        if config.melody and melody_proj is None:
            raise CheckpointError("a melody model needs its chroma projection")
        self.separate_melody_stems = True  # Demucs (vocals + other) before chroma, as audiocraft; mix if unavailable
        self.compression_model = compression_model.eval()
        self.lm = lm.eval()
        self.conditioner = conditioner.eval()
        self.config = config
        self.params = SamplingParams()
        self.duration = 15.0
        self.extend_stride = 18.0 if config.max_duration >= 30 else 0.6 * config.max_duration
        self.tempo_drafts = 0  # set_generation_params(tempo_drafts=N): N first windows per prompt stating a BPM
        self.tempo_draft_seconds: float | None = None  # None: drafts are the whole first window
        self.last_tempo_drafts: tuple[list[list[float]], list[int]] | None = None  # (estimated BPMs, picks)
        self._progress_callback: ProgressCallback | None = None
        self.normalize_prompts = True  # translate Chinese music vocabulary before the English-only text encoder
        self.last_prompts_used: list[str | None] = []
        self.last_prompts_left_out: list[list[str]] = []  # per prompt: the words the normaliser could not read
        # autocast dtype of the codec decoder; from_pretrained sets bfloat16 for the fast modes (dtype=bf16/fp16 or
        # quantize="int8"): 2.2x faster on the CPU, -44 dB from the float32 decode (README, "Performance")
        self.codec_dtype: torch.dtype | None = None

    # --- loading ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, text_encoder: str | None = None,
                        quantize: str | None = None) -> MusicGen:
        """Load an official id (``facebook/musicgen-small``), any hub repo, or a local folder in the audiocraft,
        transformers or yuefu format. ``text_encoder`` overrides the T5 name or folder; ``dtype`` applies to the
        LM (e.g. ``torch.bfloat16``); ``quantize="int8"`` stores the LM's per-step weights in int8. Without a name:
        the built-in ``yuefu-mini`` (no download) when shipped, else ``facebook/musicgen-small``."""
        name_or_path = name_or_path or default_model()
        folder = hub.resolve_model(name_or_path)
        ckpt = read_checkpoint(folder, lazy=True)  # the LM is read tensor by tensor as it is built
        return cls.from_checkpoint(ckpt, name=name_or_path, device=device, dtype=dtype, text_encoder=text_encoder,
                                   quantize=quantize, consume=True)

    get_pretrained = from_pretrained  # audiocraft's name

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, name: str = "", device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, text_encoder: str | None = None,
                        quantize: str | None = None, consume: bool = False) -> MusicGen:
        """A model from checkpoint tensors. ``consume=True`` moves the LM tensors into the model and empties
        ``ckpt.lm`` (and drops ``ckpt.codec`` and ``ckpt.text_encoder`` once copied), so a bf16 or int8 load converts
        them one by one instead of holding two copies."""
        device = torch.device(device or _default_device())
        cfg = ckpt.config
        if cfg.melody and cfg.lm.cross_attention:
            raise CheckpointError("unsupported: a melody model with text cross-attention (melody models prepend)")
        codec_sd = ckpt.codec
        if codec_sd is None:
            codec_sd = _load_codec_ref(ckpt)
        codec = CompressionModel(cfg.codec).remove_weight_norm()  # inference: plain weights
        try:
            codec.load_state_dict(codec_sd)  # accepts plain, weight_g/v and parametrized spellings
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"codec weights: {str(e).splitlines()[0][:300]}") from None
        del codec_sd
        if consume:  # the codec holds its own copy now; free the checkpoint's before the LM is read
            ckpt.codec = None

        if quantize not in (None, "int8"):
            raise InvalidArgumentError(f"unknown quantization {quantize!r} (expected int8)")
        with torch.device("meta"):  # no random init: the checkpoint's tensors become the parameters
            lm = LMModel(cfg.lm)
        lm_sd = ckpt.lm
        if consume:
            ckpt.lm = {}
        _stream_lm(lm, lm_sd, device, _dtype(dtype), quantize == "int8", consume)
        del lm_sd
        conditioner = _build_conditioner(ckpt, text_encoder)
        if consume:
            ckpt.text_encoder = None
        _load(conditioner.output_proj, ckpt.text_proj, "text projection")
        if cfg.text.tempo:
            _load(conditioner.add_tempo(beat_clock=cfg.text.beat_clock), ckpt.tempo_proj or {}, "tempo projection")
        conditioner.to(device)
        melody_proj = None
        if cfg.melody:
            melody_proj = torch.nn.Linear(cfg.num_chroma, cfg.lm.dim)
            _load(melody_proj, ckpt.melody_proj or {}, "melody (chroma) projection")
            melody_proj.to(device)
        model = cls(name or cfg.name, codec.to(device), lm, conditioner, cfg, melody_proj)
        lm_dtype = _dtype(dtype)
        if quantize is not None or lm_dtype in (torch.bfloat16, torch.float16):
            model.codec_dtype = torch.bfloat16 if device.type == "cpu" or lm_dtype is None else lm_dtype
        return model

    def to_checkpoint(self) -> Checkpoint:
        """The model's weights in our module names."""
        if getattr(self.lm, "quantized", None):
            raise CheckpointError("a quantized model cannot be saved; load it without quantize= to convert or save")
        cfg = self.config
        text_encoder = None
        if isinstance(self.conditioner, T5Conditioner):
            text_encoder = {k: v.cpu() for k, v in self.conditioner.encoder.state_dict().items()}
            if text_encoder.get("encoder.embed_tokens.weight") is not None and "shared.weight" in text_encoder:
                text_encoder.pop("encoder.embed_tokens.weight")  # tied to shared.weight; re-tied on load
            cfg.text.encoder_config = self.conditioner.encoder.config.to_dict()
        tok_dir = None
        tokenizer = getattr(self.conditioner, "tokenizer", None)
        if tokenizer is not None:
            tok_dir = tempfile.mkdtemp(prefix="yuefu-tok-")
            tokenizer.save_pretrained(tok_dir)
        return Checkpoint(
            config=cfg,
            lm={k: v.cpu() for k, v in self.lm.state_dict().items()},
            text_proj={k: v.cpu() for k, v in self.conditioner.output_proj.state_dict().items()},
            codec={k: v.cpu() for k, v in self.compression_model.state_dict().items()},
            text_encoder=text_encoder, tokenizer_dir=tok_dir, source_format="yuefu",
            melody_proj=None if self.melody_proj is None else {
                k: v.cpu() for k, v in self.melody_proj.state_dict().items()},
            tempo_proj=None if self.conditioner.tempo_proj is None else {
                k: v.cpu() for k, v in self.conditioner.tempo_proj.state_dict().items()})

    def save_pretrained(self, folder: str | os.PathLike, format: str = "yuefu") -> Path:
        """Write safetensors + config (``format``: yuefu, transformers or audiocraft), atomically."""
        ckpt = self.to_checkpoint()
        try:
            return write_checkpoint(ckpt, folder, format)
        finally:
            if ckpt.tokenizer_dir:
                import shutil

                shutil.rmtree(ckpt.tokenizer_dir, ignore_errors=True)

    # --- properties ------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.compression_model.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.compression_model.frame_rate

    @property
    def audio_channels(self) -> int:
        return self.config.channels

    @property
    def max_duration(self) -> float:
        return self.config.max_duration

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    # --- settings --------------------------------------------------------------------------------------------------
    def set_generation_params(self, use_sampling: bool = True, top_k: int = 250, top_p: float = 0.0,
                              temperature: float = 1.0, duration: float = 30.0, cfg_coef: float = 3.0,
                              extend_stride: float | None = None, tempo_drafts: int = 0,
                              tempo_draft_seconds: float | None = None) -> None:
        """audiocraft's parameters and defaults; ``duration`` beyond ``max_duration`` uses sliding windows that
        start every ``extend_stride`` seconds (default 18, audiocraft's, or 60 % of a window shorter than 30 s).

        ``tempo_drafts=N`` (yuefu's own, off by default): for each prompt that states a tempo ("at 90 BPM",
        "每分钟90拍"), generate N candidates of the first window (or of ``tempo_draft_seconds``), keep the one whose
        estimated tempo is nearest and continue it (:mod:`yuefu.generation.tempo_drafts`). The candidates are one
        batch of N x the prompts."""
        if extend_stride is None:
            extend_stride = 18.0 if self.max_duration >= 30 else 0.6 * self.max_duration
        if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
            raise InvalidArgumentError(f"duration must be a positive number of seconds, got {duration!r}")
        if not 0 < extend_stride < self.max_duration:
            raise InvalidArgumentError(f"extend_stride must be in (0, {self.max_duration}), got {extend_stride}")
        if top_k < 0 or not 0 <= top_p <= 1 or temperature < 0:
            raise InvalidArgumentError("need top_k >= 0, 0 <= top_p <= 1 and temperature >= 0")
        if type(tempo_drafts) is not int or not 0 <= tempo_drafts <= tempo_drafts_mod.MAX_DRAFTS:
            raise InvalidArgumentError(f"tempo_drafts must be an integer from 0 to {tempo_drafts_mod.MAX_DRAFTS}, "
                                       f"got {tempo_drafts!r}")
        if tempo_draft_seconds is not None and not (isinstance(tempo_draft_seconds, (int, float))
                                                    and math.isfinite(tempo_draft_seconds) and tempo_draft_seconds > 0):
            raise InvalidArgumentError(f"tempo_draft_seconds must be a positive number, got {tempo_draft_seconds!r}")
        self.params = SamplingParams(use_sampling=use_sampling, temperature=temperature, top_k=top_k, top_p=top_p,
                                     cfg_coef=cfg_coef)
        self.duration = float(duration)
        self.extend_stride = float(extend_stride)
        self.tempo_drafts = tempo_drafts
        self.tempo_draft_seconds = None if tempo_draft_seconds is None else float(tempo_draft_seconds)

    def set_custom_progress_callback(self, progress_callback: Callable[[int, int], None] | None = None) -> None:
        """``fn(generated_steps, total_steps)``, called after every step (across windows)."""
        self._progress_callback = progress_callback

    # --- generation ------------------------------------------------------------------------------------------------
    def generate(self, descriptions: list[str], progress: bool = False, return_tokens: bool = False,
                 seed: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Audio [B, C, T] for each text description (+ tokens [B, K, frames] with ``return_tokens``)."""
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        if not descriptions:
            raise InvalidArgumentError("no descriptions given")
        return self._generate(list(descriptions), progress, return_tokens, seed)

    def generate_unconditional(self, num_samples: int, progress: bool = False, return_tokens: bool = False,
                               seed: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Audio [num_samples, C, T] with no text condition."""
        if num_samples < 1:
            raise InvalidArgumentError("num_samples must be >= 1")
        return self._generate([None] * num_samples, progress, return_tokens, seed)

    def prepare_prompts(self, descriptions: list[str | None]) -> list[str | None]:
        """The prompts the text encoder will see: Chinese music vocabulary is translated to English first
        (T5 and MiniLM are English-only), unless ``normalize_prompts`` is off. Kept in ``last_prompts_used``, and
        the words it could not read in ``last_prompts_left_out``."""
        from yuefu.conditioners.normalize import needs_normalization, normalize_prompt

        used: list[str | None] = []
        left_out: list[list[str]] = []
        for d in descriptions:
            if d and self.normalize_prompts and needs_normalization(d):
                n = normalize_prompt(d)
                if not n.text_used:
                    raise InvalidArgumentError(f"no words of the prompt {d!r} could be understood; "
                                               "try English or other words")
                if n.unknown:
                    logger.warning("prompt %r: not understood, left out: %s", d, ", ".join(n.unknown))
                if n.text_used != d:
                    logger.info("prompt used: %r (from %r)", n.text_used, d)
                used.append(n.text_used)
                left_out.append(list(n.unknown))
            else:
                used.append(d)
                left_out.append([])
        self.last_prompts_used = used
        self.last_prompts_left_out = left_out
        return used

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: list[str | None] | None = None, progress: bool = False,
                              return_tokens: bool = False,
                              seed: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Continue ``prompt`` [B, C, T] (or [C, T]); the output [B, C, T'] starts with the prompt itself and
        lasts ``duration`` seconds in all. The prompt's tokens are kept fixed."""
        tokens = self.encode_audio(prompt, prompt_sample_rate)  # [B, K, P]
        if descriptions is None:
            descriptions = [None] * tokens.shape[0]
        if len(descriptions) != tokens.shape[0]:
            raise InvalidArgumentError(f"{len(descriptions)} descriptions for {tokens.shape[0]} prompts")
        return self._generate(list(descriptions), progress, return_tokens, seed, prompt_tokens=tokens)

    def encode_audio(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Audio [B, C, T] or [C, T] at any rate -> tokens [B, K, frames] (stereo models: interleaved L/R)."""
        from yuefu.audio import resample

        if wav.dim() == 2:
            wav = wav[None]
        if wav.dim() != 3 or wav.shape[-1] == 0:
            raise InvalidArgumentError(f"audio prompt must be [B, C, T] with T > 0, got {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise InvalidArgumentError("audio prompt contains NaN or infinite samples")
        wav = wav.float()
        if sample_rate != self.sample_rate:
            wav = resample(wav, sample_rate, self.sample_rate)
        if self.audio_channels == 1:
            wav = wav.mean(dim=1, keepdim=True)
        elif wav.shape[1] == 1:
            wav = wav.expand(-1, 2, -1)
        wav = wav.to(self.device)
        with torch.inference_mode():
            if self.audio_channels == 2:
                left, right = (self.compression_model.encode(wav[:, c:c + 1]) for c in (0, 1))
                return torch.stack([left, right], dim=2).flatten(1, 2)  # [B, 2K, F]: L1, R1, L2, R2, ...
            return self.compression_model.encode(wav)

    def generate_stream(self, descriptions: list[str | None], chunk_seconds: float = 1.0, seed: int | None = None,
                        context_frames: int = 100, lookahead_frames: int = 8) -> Iterator[torch.Tensor]:
        """Yield audio chunks [B, C, n] while tokens are still being generated (one window, <= max_duration).

        Each chunk is decoded with ``context_frames`` of already-emitted frames before it, and the last
        ``lookahead_frames`` are held back until more frames exist, so chunk boundaries match the one-shot decode
        closely (the codec's convolutions see both sides; its LSTM sees ``context_frames`` of the past).
        """
        if self.duration > self.max_duration:
            raise InvalidArgumentError(f"streaming covers one window: duration <= {self.max_duration} s")
        descriptions = self.prepare_prompts(list(descriptions))
        generator = torch.Generator(device=self.device).manual_seed(int(seed)) if seed is not None else None
        hop = self.compression_model.hop_length
        n_frames = int(self.duration * self.frame_rate)
        chunk = max(1, int(chunk_seconds * self.frame_rate))
        pattern = self._pattern(n_frames)
        emitted = 0  # frames already sent
        with torch.inference_mode():
            conditions = self.clocked(self.encode_conditions(descriptions), 0, pattern.num_steps)
            params = self._params_for(conditions)
            for state in iter_generate(self.lm, pattern, conditions, len(descriptions), params, None, generator):
                done = state.frames_done
                final = done == n_frames
                ready = done if final else done - lookahead_frames
                if ready - emitted < (1 if final else chunk):
                    continue
                codes = pattern.revert(state.sequence.clone().clamp(min=0))  # [B, K, T]; unfinished cells unused
                start = max(0, emitted - context_frames)
                end = done
                wav = self.decode_tokens(codes[..., start:end])
                yield wav[..., (emitted - start) * hop:(ready - start) * hop]
                emitted = ready
                if final:
                    break

    def clocked(self, conditions: Conditions, first_frame: int, num_steps: int) -> Conditions:
        """``conditions`` with the beat clock of a window that starts at frame ``first_frame`` of the piece and
        has ``num_steps`` pattern steps (unchanged for models or prompts without a clock)."""
        if conditions.clock_bpm is None:
            return conditions
        frames = torch.arange(first_frame, first_frame + num_steps, device=self.device)  # [S]
        clock = self.conditioner.clock(conditions.clock_bpm, frames, self.frame_rate)  # [B, S, D]
        return dataclasses.replace(conditions, clock=clock)

    def _params_for(self, conditions: Conditions) -> SamplingParams:
        if conditions.null_cross is None and conditions.null_prefix is None:  # both CFG branches would be equal
            return SamplingParams(**{**self.params.__dict__, "cfg_coef": 1.0})
        return self.params

    def encode_conditions(self, descriptions: list[str | None], chroma: torch.Tensor | None = None,
                          has_melody: bool | None = None) -> Conditions:
        """Text (and, for melody models, chroma [B, F, n_chroma]; None: the null melody) -> :class:`Conditions`.

        Text models: cross-attention source. Melody models: prefix [chroma projected, text] with null prefix
        [null chroma projected, zeros]; ``has_melody`` says whether any row has a real melody (default: any
        ``chroma`` given), which decides, with the text, whether the two CFG branches differ at all.
        """
        cond, _ = self.conditioner(descriptions)  # [B, L, D], padding zeroed
        no_text = all(d is None or d == "" for d in descriptions)
        if not self.config.melody:
            if no_text:
                return Conditions(cross=cond)
            return Conditions(cross=cond, null_cross=torch.zeros_like(cond),
                              clock_bpm=self.conditioner.clock_bpm(descriptions))
        assert self.melody_proj is not None
        B = len(descriptions)
        null_chroma = null_melody_chroma(B, self.config.chroma_frames, self.config.num_chroma, device=cond.device)
        if has_melody is None:
            has_melody = chroma is not None
        if chroma is None:
            chroma = null_chroma
        w = self.melody_proj.weight
        mel = self.melody_proj(chroma.to(device=w.device, dtype=w.dtype)).to(cond.dtype)  # [B, F, D]
        prefix = torch.cat([mel, cond], dim=1)  # [B, F + L, D]: chroma, then text
        if no_text and not has_melody:
            return Conditions(prefix=prefix)  # both CFG branches would be equal
        null_mel = self.melody_proj(null_chroma.to(w.dtype)).to(cond.dtype)  # [B, F, D]
        return Conditions(prefix=prefix, null_prefix=torch.cat([null_mel, torch.zeros_like(cond)], dim=1))

    # --- melody ----------------------------------------------------------------------------------------------------
    def generate_with_chroma(self, descriptions: list[str | None], melody_wavs: Any, melody_sample_rate: int,
                             progress: bool = False, return_tokens: bool = False,
                             seed: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Audio [B, C, T] conditioned on text and melody (audiocraft's API; melody models only).

        ``melody_wavs``: a tensor [B, C, T] or [C, T], or a list of B tensors [C, T] (None entries: no melody, the
        null chroma). Each melody is checked (:func:`check_melody`: empty, NaN, silent or over-long audio gives a
        one-line error), resampled to 32 kHz, stem-separated (Demucs vocals + other when available, else the mix
        with one warning), and its chroma tiled/truncated to ``chroma_frames``. Past ``max_duration`` each window
        reads the melody cyclically from its own time offset, as audiocraft.
        """
        if not self.config.melody:
            raise InvalidArgumentError(f"{self.name or 'this model'} has no melody conditioning; use a melody model "
                                       "such as facebook/musicgen-melody")
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        melodies = self._prepare_melodies(melody_wavs, melody_sample_rate)
        if descriptions is None:
            descriptions = [None] * len(melodies)
        if len(descriptions) != len(melodies):
            raise InvalidArgumentError(f"{len(descriptions)} descriptions for {len(melodies)} melodies")
        if not descriptions:
            raise InvalidArgumentError("no descriptions given")
        return self._generate(list(descriptions), progress, return_tokens, seed, melodies=melodies)

    def _prepare_melodies(self, melody_wavs: Any, sample_rate: int) -> list[torch.Tensor | None]:
        """-> one mono waveform [1, 1, T] at the chroma rate (32 kHz) per item, or None for no melody."""
        from yuefu.audio import resample

        if isinstance(melody_wavs, torch.Tensor):
            if melody_wavs.dim() == 2:
                melody_wavs = melody_wavs[None]
            if melody_wavs.dim() != 3:
                raise InvalidArgumentError(f"melody_wavs must be [B, C, T], [C, T] or a list of [C, T], got shape "
                                           f"{tuple(melody_wavs.shape)}")
            melody_wavs = list(melody_wavs)
        if not isinstance(melody_wavs, (list, tuple)):
            raise InvalidArgumentError("melody_wavs must be a tensor or a list of tensors (None: no melody)")
        out: list[torch.Tensor | None] = []
        for i, wav in enumerate(melody_wavs):
            if wav is None:
                out.append(None)
                continue
            name = "melody" if len(melody_wavs) == 1 else f"melody {i}"
            wav = check_melody(wav, sample_rate, name=name)  # [1, C, T] (a [B, C, T] item arrives as [C, T])
            if wav.shape[0] != 1:
                raise InvalidArgumentError(f"{name}: expected [channels, samples], got {tuple(wav.shape)}")
            wav = resample(wav.to(self.device), sample_rate, CHROMA_SAMPLE_RATE)  # [1, C, T']
            if self.separate_melody_stems:
                wav = separate_melody_stems(wav, CHROMA_SAMPLE_RATE)  # [1, 1, T']
            out.append(wav.mean(dim=1, keepdim=True))
        return out

    def melody_chroma_at(self, melodies: list[torch.Tensor | None],
                         offset_seconds: float | None = None) -> torch.Tensor:
        """Chroma [B, chroma_frames, n_chroma] of a window.

        ``offset_seconds`` None (a single window): the whole melody, its chroma tiled or truncated to
        ``chroma_frames``. A number (long-form; every window, the first included, as audiocraft): ``max_duration``
        seconds of waveform read cyclically from that offset. A None melody gives the null chroma.

        As audiocraft (which collates the batch's melodies) and transformers' processor (``padding=True``), the
        melodies of one batch are zero-padded to the longest before the chroma, so a short melody's tiling period
        is the batch's longest melody: each row equals what either reference gives for the same batch.
        """
        F = self.config.chroma_frames
        longest = max((w.shape[-1] for w in melodies if w is not None), default=0)
        rows = []
        for wav in melodies:
            if wav is not None and offset_seconds is None and wav.shape[-1] < longest:
                wav = torch.nn.functional.pad(wav, (0, longest - wav.shape[-1]))  # [1, 1, longest]
            if wav is None:
                rows.append(null_melody_chroma(1, F, self.config.num_chroma, device=self.device))
                continue
            if offset_seconds is not None:
                wav = cyclic_melody_window(wav, CHROMA_SAMPLE_RATE, offset_seconds, self.max_duration)
            rows.append(melody_chroma(wav, CHROMA_SAMPLE_RATE, target_frames=F))  # [1, F, 12]
        return torch.cat(rows)

    def _generate(self, descriptions: list[str | None], progress: bool, return_tokens: bool,
                  seed: int | None, prompt_tokens: torch.Tensor | None = None,
                  melodies: list[torch.Tensor | None] | None = None,
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        descriptions = self.prepare_prompts(descriptions)
        with torch.inference_mode():
            conditions_at = None
            if melodies is not None and any(m is not None for m in melodies):
                has = True

                def conditions_at(offset: float | None) -> Conditions:
                    return self.encode_conditions(descriptions, self.melody_chroma_at(melodies, offset), has)

                conditions = conditions_at(None)
            else:
                conditions = self.encode_conditions(descriptions)
            if prompt_tokens is not None:
                # a continuation's audio sets its own beat, whose phase the clock does not know: no clock
                conditions = dataclasses.replace(conditions, clock_bpm=None)
            drafted, span = None, None
            if prompt_tokens is None and self.tempo_drafts > 1:
                drafted = prompt_tokens = self._tempo_draft(descriptions, conditions, generator, progress)
            if drafted is not None and drafted.shape[-1] >= int(self.duration * self.frame_rate):
                tokens = drafted  # the chosen draft is the whole request
            else:
                if drafted is not None:  # progress goes on from the drafts' steps to the end of the request
                    draft_steps = self._steps(self._draft_seconds())
                    span = (draft_steps, draft_steps + self._steps(self.duration, drafted.shape[-1]))
                tokens = self.generate_tokens(conditions, len(descriptions), self._params_for(conditions),
                                              self.duration, prompt=prompt_tokens, generator=generator,
                                              progress=progress, conditions_at=conditions_at, progress_span=span)
            audio = self.decode_tokens(tokens)
        return (audio, tokens) if return_tokens else audio

    def _tempo_draft(self, descriptions: list[str | None], conditions: Conditions,
                     generator: torch.Generator | None, progress: bool) -> torch.Tensor | None:
        """The chosen first windows [B, K, F] (see ``tempo_drafts``), or None when no prompt states a tempo."""
        targets = [parse_bpm(d) for d in descriptions]
        if all(t is None for t in targets):
            return None
        n, B = self.tempo_drafts, len(descriptions)
        seconds = self._draft_seconds()
        repeated = Conditions(**{f.name: None if getattr(conditions, f.name) is None else
                                 getattr(conditions, f.name).repeat_interleave(n, dim=0)
                                 for f in dataclasses.fields(Conditions)})  # [B * n, ...], prompt-major
        span = None
        if seconds < self.duration:  # the drafts are the first steps of the request's progress
            draft_steps = self._steps(seconds)
            span = (0, draft_steps + self._steps(self.duration, int(seconds * self.frame_rate)))
        drafts = self.generate_tokens(repeated, B * n, self._params_for(conditions), seconds, generator=generator,
                                      progress=progress, progress_span=span, desc="tempo drafts")  # [B * n, K, F]
        estimates: list[float] = []
        for chunk in drafts.split(B):  # decoded B at a time: the memory of the batch asked for, not n times it
            estimates += [tempo_drafts_mod.estimate_bpm(a, self.sample_rate) for a in self.decode_tokens(chunk)]
        picks = tempo_drafts_mod.pick_drafts(estimates, targets, n)
        self.last_tempo_drafts = [estimates[b * n:(b + 1) * n] for b in range(B)], picks
        return drafts.view(B, n, *drafts.shape[1:])[torch.arange(B), torch.tensor(picks)]

    def _draft_seconds(self) -> float:
        """How long each tempo draft is: ``tempo_draft_seconds``, at most the request and one window."""
        return min(self.tempo_draft_seconds or math.inf, self.duration, self.max_duration)

    def generate_tokens(self, conditions: Conditions, batch_size: int, params: SamplingParams, duration: float,
                        prompt: torch.Tensor | None = None, generator: torch.Generator | None = None,
                        progress: bool = False,
                        conditions_at: Callable[[float | None], Conditions] | None = None,
                        progress_span: tuple[int, int] | None = None, desc: str = "generating") -> torch.Tensor:
        """Tokens [B, K, frames] for ``duration`` seconds, in windows of ``max_duration`` when longer.

        ``conditions_at(offset_seconds)`` gives each window's conditions when there is more than one window (the
        melody moves with time: audiocraft re-reads it from every window's offset, the first included); without
        it every window reuses ``conditions``.

        A ``prompt`` [B, K, P] (continuation) is the first window's fixed start, so it may be at most one window
        long: as audiocraft's ``_generate_tokens``, which asserts ``P <= min(duration, max_duration) * frame_rate``,
        a longer prompt is refused (:class:`InvalidArgumentError`), and a prompt exactly one window long is
        accepted (the first window is then the prompt itself, and the next windows continue from its tail).

        Progress (the bar and the progress callback) counts steps over all windows; ``progress_span=(start, total)``
        places them within a larger task (tempo drafts, then the rest of the request), so it never goes back.
        """
        plan, steps = self._window_plan(duration, 0 if prompt is None else prompt.shape[-1])
        start, total_steps = progress_span or (0, sum(steps))
        bar = _progress_bar(total_steps, start, desc) if progress else None
        done = start

        def report(step: int, _total: int) -> None:
            if bar is not None:
                bar.update(done + step - bar.n)
            if self._progress_callback is not None:
                self._progress_callback(done + step, total_steps)

        fr, stride = self.frame_rate, int(self.extend_stride * self.frame_rate)
        out: list[torch.Tensor] = []
        try:
            for i, (n, p_len) in enumerate(plan):
                if conditions_at is not None and len(plan) > 1:
                    conditions = conditions_at(i * stride / fr)
                pattern = self._pattern(n)
                codes = generate_tokens(self.lm, pattern, self.clocked(conditions, i * stride, pattern.num_steps),
                                        batch_size, params, prompt, generator, report)
                out.append(codes if i == 0 else codes[..., p_len:])
                done += steps[i]
                prompt = codes[..., stride:]
        finally:
            if bar is not None:
                bar.close()
        return torch.cat(out, dim=-1)

    def _window_plan(self, duration: float, p_len: int = 0) -> tuple[list[tuple[int, int]], list[int]]:
        """The windows of a ``duration``-second request with a ``p_len``-frame prompt: [(frames in the window, of
        which prompt frames)], and the sampling steps of each."""
        fr = self.frame_rate
        total_frames = int(duration * fr)
        window = int(self.max_duration * fr)
        stride = int(self.extend_stride * fr)
        # Window i covers frames [i * stride, i * stride + n_i) and is prompted with the previous window's tail
        # (audiocraft's scheme); the plan is known up front, so progress counts steps across all windows.
        plan: list[tuple[int, int]] = []  # (frames in the window, of which prompt frames)
        offset = 0
        if p_len > total_frames:
            raise InvalidArgumentError(f"the prompt ({p_len / fr:.1f} s) is longer than the duration ({duration} s)")
        if p_len > window:
            raise InvalidArgumentError(f"the prompt ({p_len / fr:.2f} s) must not be longer than the model's "
                                       f"{self.max_duration:g} s window; use a shorter prompt")
        while True:
            n = min(total_frames - offset, window)
            plan.append((n, p_len))
            if offset + n >= total_frames:
                break
            offset, p_len = offset + stride, n - stride
        return plan, [self._pattern(n).num_steps - self._pattern(n).first_step_with_frame(pl) for n, pl in plan]

    def _steps(self, duration: float, p_len: int = 0) -> int:
        """Sampling steps of a ``duration``-second request with a ``p_len``-frame prompt."""
        return sum(self._window_plan(duration, p_len)[1])

    def _pattern(self, num_frames: int):
        lm = self.config.lm
        return make_pattern(lm.pattern, lm.n_q, num_frames, lm.delays)

    def decode_tokens(self, tokens: torch.Tensor, chunk_frames: int | None = None, context_frames: int = 100,
                      lookahead_frames: int = 8) -> torch.Tensor:
        """tokens [B, K, frames] -> audio [B, C, frames * hop] (stereo: codebooks interleaved L/R).

        Up to ``chunk_frames`` frames (default: one window, ``max_duration``) decode in one piece. Longer token
        sequences (long-form output) decode piece by piece, as :meth:`generate_stream` does: each piece of
        ``chunk_frames`` is decoded with ``context_frames`` before it and ``lookahead_frames`` after it, and only
        its own samples are kept. The codec's convolutions thus see both sides of every boundary and its LSTM
        ``context_frames`` of the past, so the result matches the one-shot decode closely (not bit for bit), while
        the codec's working memory is bounded by the window rather than the total duration.
        """
        n = tokens.shape[-1]
        if chunk_frames is None:
            chunk_frames = int(self.max_duration * self.frame_rate)
        chunk_frames = max(1, chunk_frames)
        if n <= chunk_frames:
            return self._decode(tokens)
        hop = self.compression_model.hop_length
        out: torch.Tensor | None = None
        for a in range(0, n, chunk_frames):
            b = min(n, a + chunk_frames)
            start, end = max(0, a - context_frames), min(n, b + lookahead_frames)
            wav = self._decode(tokens[..., start:end])  # [B, C, (end - start) * hop]
            if out is None:
                out = wav.new_empty(wav.shape[0], wav.shape[1], n * hop)
            out[..., a * hop:b * hop] = wav[..., (a - start) * hop:(b - start) * hop]
        assert out is not None
        return out

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One-shot decode of tokens [B, K, frames] (under autocast to ``codec_dtype`` when set), float32 out."""
        if self.codec_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.codec_dtype):
                return self._decode_plain(tokens).float()
        return self._decode_plain(tokens)

    def _decode_plain(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.audio_channels == 2:
            left = self.compression_model.decode(tokens[:, 0::2])
            right = self.compression_model.decode(tokens[:, 1::2])
            return torch.cat([left, right], dim=1)
        return self.compression_model.decode(tokens)


# --- helpers ------------------------------------------------------------------------------------------------------
def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in names:
            raise InvalidArgumentError(f"unknown dtype {dtype!r} (expected one of {', '.join(names)})")
        return names[dtype]
    return dtype


def _check_state(expected: dict[str, torch.Tensor], sd: dict[str, Any], what: str) -> None:
    check_keys(set(expected), set(sd), f"{what} weights")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{what} weights: {k} has shape {tuple(v.shape)}, the architecture wants "
                                  f"{tuple(expected[k].shape)}")


def _load(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, assign: bool = False) -> None:
    expected = module.state_dict()
    _check_state(expected, sd, what)
    module.load_state_dict({k: materialize(v).to(expected[k].dtype) for k, v in sd.items()}, assign=assign)


def _stream_lm(lm: LMModel, sd: dict[str, Any], device: torch.device, dtype: torch.dtype | None, int8: bool,
               consume: bool) -> None:
    """Fill a meta-device LM from checkpoint tensors one module at a time: each tensor is read (a lazy one from
    its file), cast, moved and - with ``int8`` - its layer quantized before the next is touched. With ``consume``
    the entries are popped from ``sd``, so the load never holds more than the finished model plus one layer."""
    _check_state(lm.state_dict(), sd, "LM")

    def tensor(key: str, like: torch.Tensor) -> torch.Tensor:
        t = materialize(sd.pop(key) if consume else sd[key]).to(like.dtype)  # as load_state_dict would
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

    def fill(module: torch.nn.Module, prefix: str) -> None:
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(tensor(prefix + name, p), p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None and name not in module._non_persistent_buffers_set:
                module._buffers[name] = tensor(prefix + name, b)
        for name, child in list(module._modules.items()):
            if child is not None:
                fill(child, f"{prefix}{name}.")
                if int8 and quantizes(name, child):
                    module._modules[name] = Int8Linear(child)  # the fp32 layer is dropped here
        if prefix.count(".") == 2:  # after each transformer layer: hand the freed read buffers back
            release_free_memory()

    fill(lm, "")
    release_free_memory()
    if int8:
        lm.quantized = "int8"


def _load_codec_ref(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Weights (and config) of a codec the checkpoint only names, e.g. ``facebook/encodec_32khz``."""
    import json

    from yuefu.checkpoints.codec_keys import codec_config_from_transformers, codec_state_from_transformers
    from yuefu.checkpoints.transformers_format import read_weights

    folder = hub.resolve_codec(ckpt.codec_ref or "facebook/encodec_32khz")
    try:
        ccfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{folder}: no readable EnCodec config.json") from None
    ckpt.config.codec = codec_config_from_transformers(ccfg)
    sd = read_weights(folder)
    return codec_state_from_transformers(sd)


def _build_conditioner(ckpt: Checkpoint, text_encoder: str | None) -> TextConditioner:
    cfg = ckpt.config
    if cfg.text.kind == "sentence":
        from yuefu.conditioners.sentence import build_sentence_conditioner

        return build_sentence_conditioner(text_encoder or cfg.text.name, cfg.lm.dim)
    if cfg.text.kind != "t5":
        raise CheckpointError(f"unknown text conditioner kind {cfg.text.kind!r}")
    from transformers import AutoTokenizer

    if text_encoder is None and ckpt.text_encoder is not None and cfg.text.encoder_config is not None:
        encoder = build_t5_encoder(cfg.text.encoder_config)
        sd = ckpt.text_encoder
        expected = set(encoder.state_dict())
        tied = {"encoder.embed_tokens.weight"} if "shared.weight" in sd else {"shared.weight"}
        check_keys(expected, set(sd), "T5 encoder weights", optional=tied)
        encoder.load_state_dict(sd, strict=False)
        encoder.tie_weights()
        tok_source = ckpt.tokenizer_dir or hub.resolve_text_encoder(cfg.text.name)
    else:
        source = hub.resolve_text_encoder(text_encoder or cfg.text.name)
        encoder = _load_t5_encoder(source)
        tok_source = source
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    # A MusicGen folder's config.json, which the tokenizer reads for its type, names the special token (= card) as
    # pad/bos id; transformers warns that it lies outside the vocabulary. It is by design: keep the console quiet.
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"tokenizer {tok_source}: {str(e).splitlines()[0][:200]}") from None
    finally:
        hf_logging.set_verbosity(level)
    return T5Conditioner(tokenizer, encoder, cfg.lm.dim)


def _load_t5_encoder(folder: str) -> torch.nn.Module:
    """A pretrained T5 encoder from ``folder``; refuses folders that hold something else or miss weights (which
    transformers would otherwise fill with random values)."""
    import json

    from transformers import T5EncoderModel

    try:
        model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        raise ModelNotFoundError(f"text encoder {folder}: no readable config.json") from None
    if model_type != "t5":
        raise ModelNotFoundError(f"text encoder {folder}: not a T5 model (model_type={model_type!r})")
    try:
        encoder, info = T5EncoderModel.from_pretrained(folder, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"text encoder {folder}: {str(e).splitlines()[0][:200]}") from None
    missing = [k for k in info.get("missing_keys", []) if k != "encoder.embed_tokens.weight"]
    if missing:
        raise CheckpointError(f"text encoder {folder}: {len(missing)} weights missing, e.g. {missing[:3]}")
    return encoder


def _progress_bar(total: int, start: int = 0, desc: str = "generating") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, unit="step", desc=desc, dynamic_ncols=True)


get_pretrained = MusicGen.from_pretrained
