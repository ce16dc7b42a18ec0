"""Instrument classifier trained on real renders only: which family of instrument plays the melody.

Labels are instrument families of the clip's lead (sidecar ``render.lead``); the corpus has 30-odd leads with as
few as one clip each, so leads are grouped by how they sound (:data:`FAMILIES`). Features are the per-clip log-mel
statistics of :func:`yuefu.eval.features.clip_statistics` (256 numbers), standardised with the training set's mean
and std; the model is multinomial logistic regression (one linear layer, softmax, L2 penalty) fitted in torch with
full-batch L-BFGS from zero weights, so training is deterministic.
"""

from __future__ import annotations

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
# The L2 weight was chosen by 5-fold cross-validation on the train split of the reference corpus (folds by piece):
# 1e-3: 78.2%, 1e-2: 79.0%, 0.1: 80.1%, 1: 79.6% accuracy over the 8 families.
L2 = 0.1
FAMILY_OF: dict[str, str] = {lead: family for family, leads in FAMILIES.items() for lead in leads}


def family_of(lead: str) -> str:
    """The family of a lead instrument key (``"koto"`` -> ``"plucked strings"``)."""
    try:
        return FAMILY_OF[lead]
    except KeyError:
        raise InvalidArgumentError(f"unknown lead instrument {lead!r}: add it to yuefu.eval.classifier.FAMILIES") \
            from None


def chance_level(labels: Sequence[str], num_classes: int) -> float:
    """The higher of 1 / num_classes and the majority-class rate of ``labels``."""
    if not labels:
        return 1.0 / max(num_classes, 1)
    return max(1.0 / num_classes, Counter(labels).most_common(1)[0][1] / len(labels))


@dataclass
class InstrumentClassifier:
    """A fitted softmax classifier: features [N, D] -> class names."""

    classes: list[str]
    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, D] -> logits [N, C]."""
        x = (features.double() - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> list[str]:
        """features [N, D] -> one class name per row."""
        return [self.classes[i] for i in self.logits(features).argmax(-1).tolist()]

    def accuracy(self, features: torch.Tensor, labels: Sequence[str]) -> float:
        """Fraction of rows of ``features`` [N, D] predicted as ``labels``."""
        if len(labels) == 0:
            return float("nan")
        return sum(p == t for p, t in zip(self.predict(features), labels)) / len(labels)


def train_classifier(features: torch.Tensor, labels: Sequence[str], l2: float = L2,
                     max_iter: int = 300) -> InstrumentClassifier:
    """Fit softmax regression on features [N, D] and ``labels`` (N names); ``l2`` weights the mean squared weight.

    Classes are weighted equally (each row by N / (C x count of its class)), so rare families are not ignored.
    """
    if features.dim() != 2 or features.shape[0] != len(labels) or len(labels) < 2:
        raise InvalidArgumentError(f"need features [N, D] with N >= 2 and N labels, got {tuple(features.shape)} and "
                                   f"{len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise InvalidArgumentError(f"the training set has one instrument family only ({classes[0]})")
    x = features.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std  # [N, D]
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[t] for t in labels])  # [N]
    counts = torch.bincount(y, minlength=len(classes)).double()
    row_weight = (len(labels) / (len(classes) * counts))[y]  # [N]
    weight = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy(x @ weight.T + bias, y, reduction="none")
        loss = (nll * row_weight).mean() + l2 * weight.pow(2).sum() / x.shape[1]
        loss.backward()
        return loss

    opt.step(closure)
    return InstrumentClassifier(classes, mean, std, weight.detach(), bias.detach())


__all__ = ["FAMILIES", "L2", "InstrumentClassifier", "chance_level", "family_of", "train_classifier"]
