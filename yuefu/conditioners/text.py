"""Text conditioners: a frozen text encoder, then a learned projection into the LM's dimension.

As in audiocraft, ``None`` or ``""`` is the null condition: its row is all zeros (the projection's bias
included), which is what classifier-free guidance's unconditional branch sees. Padded positions are zeroed too.
Models with a tempo condition (:mod:`yuefu.conditioners.tempo`) append one token for the BPM a text states, and
with a beat clock also give the LM that BPM's beat phase at every frame (:meth:`TextConditioner.clock`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from yuefu.conditioners.tempo import TempoEmbedding, parse_bpm


class TextConditioner(nn.Module):
    """texts -> (cond [B, L, dim], mask [B, L]). Subclasses implement ``encode_text``."""

    def __init__(self, encoder_dim: int, dim: int):
        super().__init__()
        self.output_proj = nn.Linear(encoder_dim, dim)
        self.tempo_proj: TempoEmbedding | None = None  # set by ``add_tempo`` (config ``text.tempo``)

    def add_tempo(self, beat_clock: bool = False) -> TempoEmbedding:
        """Give the conditioner a tempo token, and with ``beat_clock`` the beat clock (both zero-initialised:
        outputs are unchanged until they are trained)."""
        w = self.output_proj.weight
        self.tempo_proj = TempoEmbedding(self.output_proj.out_features, beat_clock=beat_clock).to(
            device=w.device, dtype=w.dtype)
        return self.tempo_proj

    @property
    def has_clock(self) -> bool:
        return self.tempo_proj is not None and self.tempo_proj.clock is not None

    def clock_bpm(self, texts: list[str | None]) -> torch.Tensor | None:
        """[B] the BPM each text gives the beat clock (NaN: none), or None for a model without a clock or a batch
        in which no text states a tempo."""
        if not self.has_clock:
            return None
        bpms = self.tempos(texts)
        if all(b is None for b in bpms):
            return None
        return torch.tensor([math.nan if b is None else b for b in bpms], dtype=torch.float32, device=self.device)

    def clock(self, bpm: torch.Tensor | None, frames: torch.Tensor, frame_rate: float) -> torch.Tensor | None:
        """The beat clock [B, S, dim] at frame indices ``frames`` ([S], or [B, S] per row) for ``bpm`` [B] (from
        :meth:`clock_bpm`)."""
        if bpm is None or self.tempo_proj is None or self.tempo_proj.clock is None:
            return None
        return self.tempo_proj.clock_embedding(bpm, frames, frame_rate)

    def tempos(self, texts: list[str | None]) -> list[float | None]:
        """The BPM of each text that the tempo token carries (None: no token); all None without a tempo condition."""
        if self.tempo_proj is None:
            return [None] * len(texts)
        return [parse_bpm(t) if t else None for t in texts]

    def output_length(self, texts: list[str | None]) -> int:
        """L of ``self(texts)`` [B, L, dim], without running the projection."""
        if all(t is None or t == "" for t in texts):
            return 1
        length = self.encode_text([t or "" for t in texts])[1].shape[1]
        return length + int(any(b is not None for b in self.tempos(texts)))

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> hidden states [B, L, encoder_dim] (float32), attention mask [B, L] (1 = token)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.output_proj.weight.device

    def forward(self, texts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        null = [t is None or t == "" for t in texts]
        dim = self.output_proj.out_features
        dtype = self.output_proj.weight.dtype
        if all(null):
            return (torch.zeros(len(texts), 1, dim, device=self.device, dtype=dtype),
                    torch.zeros(len(texts), 1, dtype=torch.long, device=self.device))
        with torch.no_grad():
            hidden, mask = self.encode_text([t if t else "" for t in texts])  # [B, L, E], [B, L]
        mask = mask.to(self.device).clone()
        mask[torch.tensor(null, device=self.device)] = 0
        cond = self.output_proj(hidden.to(self.device, dtype))  # [B, L, dim]
        cond = cond * mask.unsqueeze(-1).to(dtype)
        bpms = self.tempos(texts)
        if self.tempo_proj is not None and any(b is not None for b in bpms):
            has = torch.tensor([b is not None for b in bpms], device=self.device)  # [B]
            tempo = self.tempo_proj(torch.tensor([b or 100.0 for b in bpms], device=self.device))  # [B, dim]
            cond = torch.cat([cond, (tempo.to(dtype) * has.unsqueeze(-1).to(dtype)).unsqueeze(1)], dim=1)
            mask = torch.cat([mask, has.unsqueeze(-1).to(mask.dtype)], dim=1)  # [B, L + 1]
        return cond, mask


class T5Conditioner(TextConditioner):
    """Frozen T5 encoder (``t5-base`` for the official models) with its tokenizer."""

    def __init__(self, tokenizer: Any, encoder: nn.Module, dim: int):
        super().__init__(encoder.config.d_model, dim)
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc_device = next(self.encoder.parameters()).device
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True)
        ids = inputs["input_ids"].to(enc_device)
        mask = inputs["attention_mask"].to(enc_device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden.float(), mask


def build_t5_encoder(config: dict[str, Any]) -> nn.Module:
    """A randomly initialised T5 encoder from a config dict (weights are loaded afterwards)."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    return T5EncoderModel(cfg)
