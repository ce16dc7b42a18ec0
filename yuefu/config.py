"""Model configuration: the one description of an architecture that every checkpoint format maps onto.

Checkpoint adapters (``yuefu.checkpoints``) read a foreign config (audiocraft's ``xp.cfg`` YAML, transformers'
``config.json``) and produce a :class:`MusicGenConfig`; the modules are built from it and never know where it
came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CodecConfig:
    """EnCodec-style codec: SEANet encoder/decoder plus residual VQ."""

    sample_rate: int = 32000
    channels: int = 1
    dimension: int = 128  # latent dimension (= codebook dimension)
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 4])  # encoder order is reversed
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 7
    dilation_base: int = 2
    causal: bool = False
    pad_mode: str = "constant"
    true_skip: bool = True  # identity on the residual shortcut (False: 1x1 conv)
    compress: int = 2
    lstm: int = 2
    norm: str = "weight_norm"
    trim_right_ratio: float = 1.0
    activation_alpha: float = 1.0  # ELU alpha
    n_q: int = 4
    bins: int = 2048
    renormalize: bool = False

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.ratios:
            hop *= r
        return hop

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass
class LMConfig:
    """Transformer language model over codebook tokens."""

    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int = 4096
    n_q: int = 4
    card: int = 2048
    cross_attention: bool = True  # text through cross-attention (False: prepended, as the melody models)
    max_period: float = 10000.0
    norm_eps: float = 1e-5
    pattern: str = "delay"  # delay | parallel | flatten | coarse_first
    delays: list[int] = field(default_factory=lambda: [0, 1, 2, 3])

    @property
    def special_token(self) -> int:
        """Token id of empty pattern cells and of the start step (= card)."""
        return self.card


@dataclass
class TextConfig:
    """Frozen text encoder and its projection into the LM."""

    kind: str = "t5"  # t5 | sentence (any encoder with the same interface)
    name: str = "t5-base"  # hub id or local folder of the encoder and tokenizer
    encoder_dim: int = 768
    # A transformers T5Config as a dict when the encoder weights ship inside the checkpoint (transformers format).
    encoder_config: dict[str, Any] | None = None
    tempo: bool = False  # a tempo token: the BPM a text states, after the text's tokens (yuefu.conditioners.tempo)
    beat_clock: bool = False  # with ``tempo``: that BPM's beat phase added to the LM input at every frame


@dataclass
class MusicGenConfig:
    codec: CodecConfig = field(default_factory=CodecConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    text: TextConfig = field(default_factory=TextConfig)
    channels: int = 1  # audio channels of the whole model (2: stereo, codebooks interleaved [L1, R1, L2, R2, ...])
    max_duration: float = 30.0  # seconds per window, as trained
    melody: bool = False  # chroma conditioning: chroma frames then text prepended (no cross-attention)
    num_chroma: int = 12  # chroma bins of the melody condition (Linear(num_chroma, lm.dim) projection)
    chroma_frames: int = 235  # chroma frames per window (30 s at 32 kHz, hop 4096)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MusicGenConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(
            codec=_build(CodecConfig, d.pop("codec", {})),
            lm=_build(LMConfig, d.pop("lm", {})),
            text=_build(TextConfig, d.pop("text", {})),
            **d,
        )


def _build(cls: type, d: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)
