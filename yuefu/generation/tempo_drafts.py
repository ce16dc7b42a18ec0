"""Tempo drafts: generate N candidates of the first window per prompt, keep the one whose tempo is nearest the BPM
the prompt states, and continue it (long-form windows follow from it).

An LM sets the tempo in its first beats and then mostly keeps it from its own context, so the first window decides
the piece's tempo. Shorter drafts (``tempo_draft_seconds``) cost less but rely on the LM to hold the tempo they set,
which yuefu-mini does poorly (README, "Built-in model"). The tempo of a draft is estimated here, in torch, from the
autocorrelation of its onset envelope (spectral flux of the log-magnitude STFT) weighted by a log-normal prior
around 120 BPM, the usual way of estimating a global tempo. Evaluation (:mod:`yuefu.eval.tempo`) uses librosa's
beat tracker instead, an independent implementation.
"""

from __future__ import annotations

import math

import torch

MAX_DRAFTS = 16  # the most candidates per prompt that the API, CLI and server accept
ENVELOPE_RATE = 100.0  # onset envelope frames per second
MIN_BPM, MAX_BPM = 40.0, 240.0
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.0  # log-normal prior over tempo: centre and standard deviation in octaves


def onset_envelope(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """wav [T] or [C, T] -> onset strength [F] at ENVELOPE_RATE: positive log-magnitude flux, mean over bins."""
    mono = wav.float().mean(0) if wav.dim() == 2 else wav.float()
    hop = int(round(sample_rate / ENVELOPE_RATE))
    n_fft = 1 << max(8, math.ceil(math.log2(4 * hop)))
    spec = torch.stft(mono, n_fft, hop_length=hop, window=torch.hann_window(n_fft, device=mono.device),
                      return_complex=True).abs()  # [bins, F]
    logmag = torch.log1p(100.0 * spec)
    flux = (logmag[:, 1:] - logmag[:, :-1]).clamp(min=0).mean(0)  # [F - 1]
    return torch.cat([flux.new_zeros(1), flux])


def estimate_bpm(wav: torch.Tensor, sample_rate: int) -> float:
    """The global tempo of a clip in BPM (0.0 for silence): the best-weighted autocorrelation lag of its onset
    envelope between 40 and 240 BPM."""
    if wav.shape[-1] < sample_rate // 2:  # under half a second: no tempo to speak of
        return 0.0
    env = onset_envelope(wav, sample_rate)
    env = env - env.mean()
    n = env.shape[0]
    if n < 8 or float(env.abs().max()) < 1e-8:
        return 0.0
    spec = torch.fft.rfft(env, 2 * n)
    acf = torch.fft.irfft(spec.abs() ** 2, 2 * n)[:n]  # [n]; biased (not divided by the overlap), as a
    # tempogram's: it decays with the lag, which with the prior keeps a fast pulse from halving to its bar rate
    lags = torch.arange(n, dtype=torch.float32)
    bpm = 60.0 * ENVELOPE_RATE / lags.clamp(min=1)
    usable = (bpm >= MIN_BPM) & (bpm <= MAX_BPM) & (lags >= 1) & (lags <= n // 2)
    if not usable.any():
        return 0.0
    prior = torch.exp(-0.5 * (torch.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    score = torch.where(usable, acf.clamp(min=0) * prior, torch.full_like(acf, -1.0))
    best = int(score.argmax())
    if 1 <= best < n - 1 and usable[best - 1] and usable[best + 1]:  # parabolic refinement of the peak lag
        a, b, c = (float(score[best + d]) for d in (-1, 0, 1))
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        return float(60.0 * ENVELOPE_RATE / (best + max(-0.5, min(0.5, shift))))
    return float(bpm[best])


def pick_drafts(estimates: list[float], targets: list[float | None], drafts: int) -> list[int]:
    """For each of the B prompts, the index (0..drafts-1) of its draft nearest its target in octaves; draft 0 for
    prompts without a target. ``estimates`` holds B * drafts values, prompt-major."""
    picks = []
    for b, target in enumerate(targets):
        mine = estimates[b * drafts:(b + 1) * drafts]
        if target is None:
            picks.append(0)
            continue
        errors = [abs(math.log2(e / target)) if e > 0 else math.inf for e in mine]
        picks.append(min(range(drafts), key=lambda i: errors[i]))
    return picks
