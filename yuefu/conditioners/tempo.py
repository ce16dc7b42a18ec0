"""Tempo conditioning: the BPM a prompt states, as one more cross-attention token after the text's.

A sentence encoder hardly tells "73 BPM" from "128 BPM" (yuefu-mini with MiniLM alone: median tempo error 25 BPM,
the same as with shuffled prompts). Models whose config has ``text.tempo`` read the number from the prompt (English,
or Chinese after the normaliser, which writes "每分钟120拍" as "120 BPM"), embed log2(bpm / 100) with Fourier
features and project it to the LM's dimension. Prompts that state no tempo, and the null condition of classifier-free
guidance, get no token (a zero row where a batch mixes both, like text padding). The projection starts at zero, so a
model that gains the condition starts out generating exactly what it did.

Models whose config also has ``text.beat_clock`` get a **beat clock**: the same BPM as a per-frame input, added to
the LM's input at every sequence position. At position ``s`` of a window that starts at frame ``o`` of the piece,
the clock is the beat phase of frame ``o + s`` (the frame that codebook 0 predicts from there),
``phi = (o + s) / frame_rate * bpm / 60``, as sin/cos of ``2 pi h phi`` for the first harmonics ``h``, projected
to the LM's dimension (zero at initialisation). A token tells the model the tempo once; the clock tells it, at each
frame, where the beat falls, which is what placing onsets needs. Training renders start on a downbeat and keep
their tempo, so a crop starting at frame ``o`` has the beat phase ``o / frame_rate * bpm / 60`` at its start.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

MIN_BPM, MAX_BPM = 30.0, 300.0
REFERENCE_BPM = 100.0
_NUM = r"(\d{2,3}(?:\.\d+)?)"
_UNIT = r"(?:bpm|beats\s+(?:per|a)\s+minute|beats/min)(?![a-z])"
_PATTERNS = (  # first match wins; a range gives its middle
    re.compile(rf"(?<![\d.]){_NUM}\s*(?:-|–|to)\s*{_NUM}\s*{_UNIT}", re.I),
    re.compile(rf"(?<![\d.]){_NUM}\s*{_UNIT}", re.I),
    re.compile(rf"(?<![a-z])(?:bpm|tempo)\s*(?:[:=]|of|is|at|around|about)?\s*(?:~\s*)?{_NUM}(?!\d)", re.I),
)


def parse_bpm(text: str | None) -> float | None:
    """The tempo a text states, in beats per minute ("at 112 BPM", "Tempo: 90", "bpm: 128", "100-120 bpm"), or
    None when it states none within [30, 300]."""
    m = _find(text)
    if m is None:
        return None
    values = [float(g) for g in m.groups() if g is not None]
    bpm = sum(values) / len(values)
    return bpm if MIN_BPM <= bpm <= MAX_BPM else None


def _find(text: str | None) -> re.Match[str] | None:
    for pattern in _PATTERNS:
        m = pattern.search(text or "")
        if m:
            return m
    return None


def restate_bpm(text: str, factor: float) -> str | None:
    """``text`` with the tempo it states multiplied by ``factor`` (rounded), or None if it states none. Used to
    measure how much a model relies on the tempo ("tempo_gain" in LM validation)."""
    m = _find(text)
    if m is None or parse_bpm(text) is None:
        return None
    out, last = [], 0
    for i in range(1, len(m.groups()) + 1):
        if m.group(i) is not None:
            out += [text[last:m.start(i)], str(round(float(m.group(i)) * factor))]
            last = m.end(i)
    return "".join(out) + text[last:]


CLOCK_HARMONICS = 4  # sin/cos of the beat phase times 1..4: a pulse sharp enough to place onsets on


def beat_phase(bpm: torch.Tensor, frames: torch.Tensor, frame_rate: float) -> torch.Tensor:
    """bpm [B], frame indices [S] (or [B, S], a row's own) -> beats elapsed at each frame [B, S] (float64, so long
    pieces keep the phase)."""
    f = frames.to(torch.float64)
    return (f if f.dim() == 2 else f.unsqueeze(0)) / frame_rate * bpm.to(torch.float64).unsqueeze(1) / 60.0


def clock_features(bpm: torch.Tensor, frames: torch.Tensor, frame_rate: float,
                   harmonics: int = CLOCK_HARMONICS) -> torch.Tensor:
    """bpm [B] (NaN: no clock), frames [S] or [B, S] -> [B, S, 2 * harmonics]: sin(2 pi h phi), cos(2 pi h phi) for
    h = 1..harmonics; all zero in rows without a BPM."""
    has = ~torch.isnan(bpm)  # [B]
    phi = beat_phase(torch.where(has, bpm, torch.zeros_like(bpm)), frames, frame_rate)  # [B, S]
    angle = 2 * math.pi * (phi - torch.floor(phi)).unsqueeze(-1) * torch.arange(
        1, harmonics + 1, dtype=torch.float64, device=phi.device)  # [B, S, H]
    feats = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()  # [B, S, 2H]
    return feats * has.view(-1, 1, 1).to(feats.dtype)


class TempoEmbedding(nn.Module):
    """bpm [B] -> [B, dim]: Fourier features of log2(bpm / 100), then a linear layer (zero at initialisation).
    With ``add_clock``, also the beat clock: bpm [B], frames [S] -> [B, S, dim] (``clock_embedding``)."""

    def __init__(self, dim: int, num_freqs: int = 8, beat_clock: bool = False):
        super().__init__()
        self.num_freqs = num_freqs
        self.linear = nn.Linear(1 + 2 * num_freqs, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.clock: nn.Linear | None = None
        if beat_clock:
            self.add_clock()

    def add_clock(self) -> nn.Linear:
        """Add the beat clock's projection (zero-initialised: the model's outputs are unchanged until trained)."""
        w = self.linear.weight
        self.clock = nn.Linear(2 * CLOCK_HARMONICS, w.shape[0], bias=False).to(device=w.device, dtype=w.dtype)
        nn.init.zeros_(self.clock.weight)
        return self.clock

    def clock_embedding(self, bpm: torch.Tensor, frames: torch.Tensor, frame_rate: float) -> torch.Tensor:
        """bpm [B] (NaN: none), frames [S] or [B, S] -> [B, S, dim], zero in rows without a BPM."""
        assert self.clock is not None, "this tempo condition has no beat clock"
        w = self.clock.weight
        return self.clock(clock_features(bpm.to(w.device), frames.to(w.device), frame_rate).to(w.dtype))

    def features(self, bpm: torch.Tensor) -> torch.Tensor:
        """bpm [B] -> [B, 1 + 2 * num_freqs]: x, sin(pi 2^i x), cos(pi 2^i x) with x = log2(bpm / 100)."""
        x = torch.log2(bpm.float() / REFERENCE_BPM).unsqueeze(-1)  # [B, 1]; 30..300 BPM -> -1.7..1.6
        freqs = math.pi * 2.0 ** torch.arange(self.num_freqs, dtype=torch.float32, device=bpm.device) / 4  # [F]
        phase = x * freqs  # [B, F]
        return torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=-1)

    def forward(self, bpm: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        return self.linear(self.features(bpm.to(w.device)).to(w.dtype))
