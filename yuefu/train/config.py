"""Training configs: YAML files validated into dataclasses, with one-line errors that name the key.

``load_config("codec-tiny.yaml", CodecTrainConfig)`` reads the YAML, applies ``--set key.path=value`` overrides,
rejects unknown keys (suggesting the closest known one), checks every value's type and range, and returns the
dataclass. Every section has defaults (audiocraft's where it has one), so a config only states what differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yuefu.config import CodecConfig, TextConfig
from yuefu.errors import InvalidArgumentError

# --- sections shared by both trainers ---------------------------------------------------------------------------


@dataclass
class DataConfig:
    path: str = ""  # folder of audio with JSON sidecars, or a JSONL manifest
    valid_path: str | None = None  # separate validation set; else ``valid_fraction`` of ``path``, split by file
    valid_fraction: float = 0.05
    segment_seconds: float = 1.0
    batch_size: int = 8  # global: split evenly over the processes
    num_workers: int = 0  # DataLoader worker processes per rank


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1  # AdamW; norms, biases and 1-d parameters are not decayed
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | constant (after the linear warmup)
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    max_norm: float = 1.0  # gradient clipping (0: off)


@dataclass
class EMAConfig:
    use: bool = False  # keep an exponential moving average of the weights; exported checkpoints use it
    decay: float = 0.99
    every: int = 1  # update every N steps


@dataclass
class RunConfig:
    max_steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    distributed: str = "ddp"  # ddp | fsdp (used under torchrun with more than one process)
    grad_accum: int = 1  # micro-batches per step (LM): each process runs batch_size / (processes x grad_accum)
    threads: int | None = None  # torch CPU threads per process (None: torch's default)


@dataclass
class CheckpointConfig:
    every: int = 1000  # steps; a killed run loses at most this many
    keep_last: int = 3


@dataclass
class LogConfig:
    every: int = 10  # steps between logged training scalars
    csv: bool = True  # RUN/metrics.csv
    tensorboard: bool = False  # RUN/tensorboard (needs the tensorboard package)
    progress: bool = True  # tqdm progress bar
    valid_every: int = 1000  # steps between validations (0: only at the end)
    valid_batches: int = 8
    samples_every: int = 0  # steps between audio samples (0: only at the end; -1: never)
    num_samples: int = 2
    sample_seconds: float = 5.0  # LM samples: generated length


# --- codec --------------------------------------------------------------------------------------------------------


@dataclass
class QuantizerTrainConfig:
    decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0


@dataclass
class CodecModelConfig:
    init_from: str | None = None  # a codec folder written by ``yuefu train codec``, to fine-tune
    # parts kept fixed while fine-tuning (encoder, quantizer, decoder): freezing encoder and quantizer trains the
    # decoder alone, so the codes - and any LM trained on them - stay valid
    freeze: list[str] = field(default_factory=list)
    codec: CodecConfig = field(default_factory=CodecConfig)
    quantizer: QuantizerTrainConfig = field(default_factory=QuantizerTrainConfig)


@dataclass
class CodecLossConfig:
    """Loss weights (audiocraft's compression defaults); l1/msspec/mel/adv/feat go through the balancer."""

    l1: float = 0.1
    msspec: float = 2.0
    mel: float = 0.0
    adv: float = 4.0
    feat: float = 4.0
    commit: float = 1.0  # commitment loss, added outside the balancer


@dataclass
class MelLossConfig:
    range_start: int = 6  # multi-scale mel: window 2^i for i in [range_start, range_end)
    range_end: int = 11
    n_mels: int = 64
    f_min: float = 64.0
    f_max: float | None = None
    normalized: bool = True


@dataclass
class DiscriminatorConfig:
    filters: int = 32
    n_ffts: list[int] = field(default_factory=lambda: [1024, 2048, 512, 256, 128])
    hop_lengths: list[int] = field(default_factory=lambda: [256, 512, 128, 64, 32])
    win_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 512, 256, 128])
    every: int = 1  # train the discriminator every N steps
    warmup_steps: int = 0  # the first N steps train the discriminator alone; the codec is held fixed


@dataclass
class BalancerConfig:
    balance_grads: bool = True
    total_norm: float = 1.0
    ema_decay: float = 0.999
    per_batch_item: bool = True


def _codec_optim() -> OptimConfig:
    return OptimConfig(lr=3e-4, betas=[0.5, 0.9], weight_decay=0.0, schedule="constant", max_norm=0.0)


@dataclass
class CodecTrainConfig:
    run_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: CodecModelConfig = field(default_factory=CodecModelConfig)
    losses: CodecLossConfig = field(default_factory=CodecLossConfig)
    msspec: MelLossConfig = field(default_factory=MelLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    optim: OptimConfig = field(default_factory=_codec_optim)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --- language model -----------------------------------------------------------------------------------------------


@dataclass
class LMDataConfig(DataConfig):
    token_cache: str | None = None  # folder of cached codec tokens (default RUN_DIR/token_cache)
    merge_text_p: float = 0.25
    drop_desc_p: float = 0.5
    drop_other_p: float = 0.5
    word_dropout: float = 0.3
    cond_dropout: float = 0.2  # null text for classifier-free guidance
    caption_p: float = 0.5  # one of a sidecar's other captions instead of its description, when it has some


LORA_TARGETS = ("self_attn.in_proj", "self_attn.out_proj", "cross_attention.q_proj", "cross_attention.kv_proj",
                "cross_attention.out_proj", "ffn.linear1", "ffn.linear2")


@dataclass
class LoRAConfig:
    use: bool = False
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


@dataclass
class LMModelConfig:
    init_from: str | None = None  # fine-tune: any checkpoint MusicGen.from_pretrained loads (hub id or folder)
    codec: str | None = None  # from scratch: a codec folder, a MusicGen checkpoint, or a transformers EnCodec
    lm: dict[str, Any] = field(default_factory=dict)  # LMConfig fields; n_q, card and delays follow the codec
    text: TextConfig = field(default_factory=TextConfig)
    channels: int = 1  # 2: stereo, codebooks interleaved [L1, R1, L2, R2, ...]
    max_duration: float | None = None  # generation window of the saved model (default: the segment length)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # a tempo condition: the BPM a text states as one more cross-attention token (added to an init_from model
    # that has none; yuefu.conditioners.tempo)
    tempo: bool = False
    # with ``tempo``: the beat clock, that BPM's beat phase added to the LM input at every frame (added to an
    # init_from model that has none). It assumes each training file starts on a beat and keeps its tempo, as the
    # corpus renderer's clips do
    beat_clock: bool = False


@dataclass
class LMLossConfig:
    # the targets of a crop's first ``onset_seconds`` weigh ``onset_weight`` times the rest: there the context has
    # not yet revealed tempo and timbre, so the condition is all the model has to go on
    onset_seconds: float = 0.0
    onset_weight: float = 1.0


@dataclass
class LMTrainConfig:
    run_dir: str = ""
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: LMModelConfig = field(default_factory=LMModelConfig)
    loss: LMLossConfig = field(default_factory=LMLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --- loading and validation ---------------------------------------------------------------------------------------

T = typing.TypeVar("T")


def load_config(path: str | os.PathLike, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read, override (``a.b=value``, the value parsed as YAML) and validate a YAML config into ``cls``."""
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidArgumentError(f"config {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidArgumentError(f"config {path}: invalid YAML{where} ({getattr(e, 'problem', e)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"config {path}: expected a mapping of sections at the top level")
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(cls, data, source=str(path))


def apply_override(data: dict[str, Any], item: str) -> None:
    """``a.b.c=value`` into the nested dict (the value is YAML: numbers, booleans, lists work)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise InvalidArgumentError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InvalidArgumentError(f"--set {item!r}: {part} is not a section")
    node[parts[-1]] = value


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got "
                                   f"{_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(fields)})"
        raise InvalidArgumentError(f"{source}: unknown key {prefix}{key}{hint}")
    kwargs = {name: _convert(hints[name], value, source, f"{prefix}{name}") for name, value in data.items()}
    obj = cls(**kwargs)
    check = _CHECKS.get(cls)
    if check is not None:
        problem = check(obj)
        if problem:
            name, message = problem
            raise InvalidArgumentError(f"{source}: {prefix}{name}: {message}")
    return obj


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, source, key)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, source, key + ".")
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise InvalidArgumentError(f"{source}: {key}: expected a list, got {_show(value)}")
        return [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"{source}: {key}: expected a mapping, got {_show(value)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{source}: {key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{source}: {key}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError(f"{source}: {key}: expected a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvalidArgumentError(f"{source}: {key}: expected a string, got {_show(value)}")
        return str(value)
    return value


# --- value checks: (field, message) of the first problem, or None ------------------------------------------------


def _check_data(c: DataConfig) -> tuple[str, str] | None:
    if not c.path:
        return "path", "is required (a folder of audio or a JSONL manifest)"
    if not 0 <= c.valid_fraction < 1:
        return "valid_fraction", f"must be in [0, 1), got {c.valid_fraction}"
    if c.segment_seconds <= 0:
        return "segment_seconds", f"must be positive, got {c.segment_seconds}"
    if c.batch_size < 1:
        return "batch_size", f"must be >= 1, got {c.batch_size}"
    if c.num_workers < 0:
        return "num_workers", f"must be >= 0, got {c.num_workers}"
    return None


def _check_lm_data(c: LMDataConfig) -> tuple[str, str] | None:
    for name in ("merge_text_p", "drop_desc_p", "drop_other_p", "word_dropout", "cond_dropout"):
        if not 0 <= getattr(c, name) <= 1:
            return name, f"must be a probability in [0, 1], got {getattr(c, name)}"
    return _check_data(c)


def _check_optim(c: OptimConfig) -> tuple[str, str] | None:
    if c.lr <= 0:
        return "lr", f"must be positive, got {c.lr}"
    if len(c.betas) != 2 or not all(0 <= b < 1 for b in c.betas):
        return "betas", f"must be two numbers in [0, 1), got {c.betas}"
    if c.schedule not in ("cosine", "constant"):
        return "schedule", f"must be cosine or constant, got {c.schedule!r}"
    if c.warmup_steps < 0 or c.max_norm < 0 or c.weight_decay < 0:
        return "warmup_steps", "warmup_steps, max_norm and weight_decay must be >= 0"
    if not 0 <= c.min_lr_ratio <= 1:
        return "min_lr_ratio", f"must be in [0, 1], got {c.min_lr_ratio}"
    return None


def _check_run(c: RunConfig) -> tuple[str, str] | None:
    if c.max_steps < 1:
        return "max_steps", f"must be >= 1, got {c.max_steps}"
    if c.device not in ("auto", "cpu", "cuda") and not c.device.startswith("cuda:"):
        return "device", f"must be auto, cpu or cuda, got {c.device!r}"
    if c.precision not in ("auto", "fp32", "bf16", "fp16"):
        return "precision", f"must be auto, fp32, bf16 or fp16, got {c.precision!r}"
    if c.distributed not in ("ddp", "fsdp"):
        return "distributed", f"must be ddp or fsdp, got {c.distributed!r}"
    if c.grad_accum < 1:
        return "grad_accum", f"must be >= 1, got {c.grad_accum}"
    if c.threads is not None and c.threads < 1:
        return "threads", f"must be >= 1, got {c.threads}"
    return None


def _check_ema(c: EMAConfig) -> tuple[str, str] | None:
    if not 0 <= c.decay < 1:
        return "decay", f"must be in [0, 1), got {c.decay}"
    if c.every < 1:
        return "every", f"must be >= 1, got {c.every}"
    return None


def _check_checkpoint(c: CheckpointConfig) -> tuple[str, str] | None:
    if c.every < 1:
        return "every", f"must be >= 1, got {c.every}"
    if c.keep_last < 1:
        return "keep_last", f"must be >= 1, got {c.keep_last}"
    return None


def _check_log(c: LogConfig) -> tuple[str, str] | None:
    if c.every < 1:
        return "every", f"must be >= 1, got {c.every}"
    if c.valid_every < 0 or c.valid_batches < 0 or c.num_samples < 0:
        return "valid_every", "valid_every, valid_batches and num_samples must be >= 0"
    return None


def _check_disc(c: DiscriminatorConfig) -> tuple[str, str] | None:
    if not len(c.n_ffts) == len(c.hop_lengths) == len(c.win_lengths):
        return "n_ffts", "n_ffts, hop_lengths and win_lengths must have the same length"
    if c.every < 1:
        return "every", f"must be >= 1, got {c.every}"
    if c.warmup_steps < 0:
        return "warmup_steps", f"must be >= 0, got {c.warmup_steps}"
    return None


def _check_lora(c: LoRAConfig) -> tuple[str, str] | None:
    if c.rank < 1:
        return "rank", f"must be >= 1, got {c.rank}"
    bad = [t for t in c.targets if t not in LORA_TARGETS]
    if bad:
        return "targets", f"unknown target {bad[0]!r} (known: {', '.join(LORA_TARGETS)})"
    return None


def _check_lm_model(c: LMModelConfig) -> tuple[str, str] | None:
    if c.init_from is None and c.codec is None:
        return "codec", "is required when training from scratch (or set model.init_from to fine-tune)"
    if c.init_from is not None and c.lm:
        return "lm", "cannot be set together with init_from (the architecture comes from the checkpoint)"
    if c.channels not in (1, 2):
        return "channels", f"must be 1 or 2, got {c.channels}"
    return None


CODEC_PARTS = ("encoder", "quantizer", "decoder")


def _check_codec_model(c: CodecModelConfig) -> tuple[str, str] | None:
    bad = [p for p in c.freeze if p not in CODEC_PARTS]
    if bad:
        return "freeze", f"unknown part {bad[0]!r} (known: {', '.join(CODEC_PARTS)})"
    if c.freeze and c.init_from is None:
        return "freeze", "needs model.init_from (freezing parts of a codec trained from scratch leaves them random)"
    if set(c.freeze) == set(CODEC_PARTS):
        return "freeze", "leaves nothing to train"
    return None


def _check_lm_loss(c: LMLossConfig) -> tuple[str, str] | None:
    if not (c.onset_seconds >= 0 and math.isfinite(c.onset_seconds)):
        return "onset_seconds", f"must be >= 0, got {c.onset_seconds}"
    if not (c.onset_weight > 0 and math.isfinite(c.onset_weight)):
        return "onset_weight", f"must be > 0, got {c.onset_weight}"
    return None


def _check_run_dir(c: Any) -> tuple[str, str] | None:
    if not c.run_dir:
        return "run_dir", "is required (the folder for checkpoints, logs and samples)"
    return None


def _check_codec_train(c: CodecTrainConfig) -> tuple[str, str] | None:
    warmup = c.discriminator.warmup_steps
    if warmup and not (c.losses.adv > 0 or c.losses.feat > 0):
        return "discriminator.warmup_steps", "needs an adversarial loss (losses.adv or losses.feat > 0)"
    if warmup and warmup >= c.train.max_steps:
        return "discriminator.warmup_steps", (f"must be below train.max_steps ({c.train.max_steps}), got {warmup}: "
                                              "the codec would never train")
    return _check_run_dir(c)


_CHECKS: dict[type, Any] = {
    DataConfig: _check_data, LMDataConfig: _check_lm_data, OptimConfig: _check_optim, RunConfig: _check_run,
    EMAConfig: _check_ema, CheckpointConfig: _check_checkpoint, LogConfig: _check_log,
    DiscriminatorConfig: _check_disc, LoRAConfig: _check_lora, LMModelConfig: _check_lm_model,
    CodecModelConfig: _check_codec_model, LMLossConfig: _check_lm_loss,
    CodecTrainConfig: _check_codec_train, LMTrainConfig: _check_run_dir,
}


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
