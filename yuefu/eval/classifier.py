"""Instrument classifier trained on real renders only: which family of instrument plays the melody.

Labels are instrument families of the clip's lead (sidecar ``render.lead``); the corpus has 30-odd leads with as
few as one clip each, so leads are grouped by how they sound (:data:`FAMILIES`).

The judge looks at 0.5 s windows: each window is the mean and the standard deviation over its 50 frames of the 64
log-mel bands (:func:`window_features`, 128 numbers), standardised with the training set's mean and std. A small
MLP (128 -> 256 -> 256 -> classes, GELU, dropout 0.2) gives each window log-probabilities; a clip's family is the
argmax of their sum over its windows. Training sees every real clip twice: as it is, and with a noise floor added
(:func:`noise_floor`, 20-50 dB below the clip's loudest band-frame), so that the judge hears instruments, not the
recording's silence; a codec fills silences with noise. Training is seeded and deterministic for a thread count.

Measured on corpus8 (2738 train, 142 held-out clips) against the previous judge (softmax regression on 256
whole-clip log-mel statistics): real held-out clips 0.86 -> 0.93, the same clips through yuefu-mini's codec
0.42 -> 0.63, 600 train clips through the codec 0.39 -> 0.73 (train clips as they are: 0.96 -> 0.99). The design was
chosen on those real and codec-resynthesised clips; no generated audio was used for it. The whole-clip statistics
failed on codec audio because their frame-to-frame change and spread over time are what a 50 Hz codec alters most.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from yuefu.errors import InvalidArgumentError

FAMILIES: dict[str, tuple[str, ...]] = {
    "keyboard & mallets": ("piano", "electric_piano", "harpsichord", "celesta", "glockenspiel", "music_box",
                           "vibraphone", "marimba", "dulcimer", "kalimba"),
    "organ & free reeds": ("organ", "rock_organ", "accordion", "harmonica"),
    "plucked strings": ("nylon_guitar", "acoustic_guitar", "clean_guitar", "harp", "sitar", "banjo", "shamisen",
                        "koto"),
    "bowed strings": ("violin", "viola", "cello", "fiddle", "strings", "synth_strings"),
    "flutes": ("flute", "recorder", "pan_flute", "shakuhachi", "whistle", "ocarina"),
    "reeds & brass": ("oboe", "clarinet", "bassoon", "alto_sax", "tenor_sax", "shehnai", "bagpipe", "trumpet",
                      "trombone", "tuba", "french_horn"),
    "synth leads & distorted guitar": ("square_lead", "saw_lead", "overdrive_guitar", "distortion_guitar"),
    "voices & pads": ("choir", "warm_pad", "poly_pad"),
}
FAMILY_OF: dict[str, str] = {lead: family for family, leads in FAMILIES.items() for lead in leads}


def family_of(lead: str) -> str:
    """The family of a lead instrument key (``"koto"`` -> ``"plucked strings"``)."""
    try:
        return FAMILY_OF[lead]
    except KeyError:
        raise InvalidArgumentError(f"unknown lead instrument {lead!r}: add it to yuefu.eval.classifier.FAMILIES") \
            from None


WINDOW = 50  # log-mel frames per window: 0.5 s at 10 ms
FLOOR_DB = (20.0, 50.0)  # the training noise floor lies this far below the clip's loudest band-frame
HIDDEN = 256


def window_features(logmel: torch.Tensor) -> torch.Tensor:
    """Log-mel [frames, bands] -> [windows, 2 x bands]: mean and std over each run of 50 frames (a clip shorter
    than a window is one window); a tail shorter than a window is dropped."""
    if logmel.dim() != 2 or logmel.shape[0] == 0:
        raise InvalidArgumentError(f"window_features takes one clip's log-mel [frames, bands], got "
                                   f"{tuple(logmel.shape)}")
    x = logmel.float()
    w = x[None] if x.shape[0] < WINDOW else x.unfold(0, WINDOW, WINDOW).transpose(1, 2)  # [W, frames, bands]
    return torch.cat([w.mean(1), w.std(1, unbiased=False)], dim=-1)


def noise_floor(logmel: torch.Tensor, depth_db: float) -> torch.Tensor:
    """Log-mel in dB [frames, bands] with a flat floor ``depth_db`` below its maximum added in power."""
    floor = float(logmel.max()) - depth_db
    return 10.0 * torch.log10(torch.pow(10.0, logmel / 10.0) + 10.0 ** (floor / 10.0))


def training_views(logmel: torch.Tensor, rng: random.Random) -> list[torch.Tensor]:
    """What training sees of one real clip [frames, bands]: its window features as they are, and with a noise floor
    drawn from ``rng`` in :data:`FLOOR_DB`."""
    return [window_features(logmel), window_features(noise_floor(logmel, rng.uniform(*FLOOR_DB)))]


def chance_level(labels: Sequence[str], num_classes: int) -> float:
    """The higher of 1 / num_classes and the majority-class rate of ``labels``."""
    if not labels:
        return 1.0 / max(num_classes, 1)
    return max(1.0 / num_classes, Counter(labels).most_common(1)[0][1] / len(labels))


def _mlp(inputs: int, classes: int, hidden: int = HIDDEN) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(hidden, classes))


@dataclass
class InstrumentClassifier:
    """A fitted window classifier: clips' window features [W_i, D] -> class names."""

    classes: list[str]
    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    net: torch.nn.Sequential  # [N, D] -> logits [N, C], in eval mode

    def clip_log_probs(self, windows: torch.Tensor) -> torch.Tensor:
        """One clip's window features [W, D] -> the sum of its windows' log-probabilities [C]."""
        with torch.inference_mode():
            return torch.log_softmax(self.net((windows.float() - self.mean) / self.std), dim=-1).sum(0)

    def predict(self, clips: Sequence[torch.Tensor]) -> list[str]:
        """Window features of each clip ([W_i, D] each) -> one class name per clip."""
        return [self.classes[int(self.clip_log_probs(w).argmax())] for w in clips]

    def accuracy(self, clips: Sequence[torch.Tensor], labels: Sequence[str]) -> float:
        """Fraction of ``clips`` (window features [W_i, D] each) predicted as ``labels``."""
        if len(labels) == 0:
            return float("nan")
        return sum(p == t for p, t in zip(self.predict(clips), labels)) / len(labels)


def train_classifier(clips: Sequence[torch.Tensor], labels: Sequence[str], epochs: int = 20, min_steps: int = 500,
                     batch_size: int = 512, seed: int = 0) -> InstrumentClassifier:
    """Fit the window MLP on clips' window features ([W_i, D] each; augmented views are more clips with the same
    label) with AdamW (lr 1e-3, weight decay 0.01) for ``epochs`` passes over the windows, and at least
    ``min_steps`` steps. Classes are weighted equally (each window by N / (C x windows of its class)), so rare
    families are not ignored. Seeded: the caller's random state is left as it was."""
    if len(clips) != len(labels) or len(labels) < 2:
        raise InvalidArgumentError(f"need at least 2 clips and one label per clip, got {len(clips)} clips and "
                                   f"{len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise InvalidArgumentError(f"the training set has one instrument family only ({classes[0]})")
    if any(w.dim() != 2 or w.shape[-1] != clips[0].shape[-1] or w.shape[0] == 0 for w in clips):
        raise InvalidArgumentError("every clip needs window features [windows, D] with the same D")
    index = {c: i for i, c in enumerate(classes)}
    x = torch.cat([w.float() for w in clips])  # [N, D]
    y = torch.cat([torch.full((w.shape[0],), index[t]) for w, t in zip(clips, labels)])  # [N]
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    counts = torch.bincount(y, minlength=len(classes)).float()
    class_weight = len(y) / (len(classes) * counts.clamp_min(1.0))
    steps = max(min_steps, epochs * math.ceil(len(y) / batch_size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _mlp(x.shape[1], len(classes))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
        order = torch.randperm(len(y))
        for step in range(steps):
            start = (step * batch_size) % len(y)
            if start < batch_size and step > 0:  # a new pass, over a new permutation (as the step count wraps, its
                order = torch.randperm(len(y))  # first `start` windows, random ones, are left out of this pass)
            i = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x[i]), y[i], weight=class_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return InstrumentClassifier(classes, mean, std, net.eval())


__all__ = ["FAMILIES", "FLOOR_DB", "WINDOW", "InstrumentClassifier", "chance_level", "family_of", "noise_floor",
           "train_classifier", "training_views", "window_features"]
