"""EnCodec's multi-scale STFT discriminator (MS-STFTD) and the adversarial losses around it.

Each scale looks at the complex STFT (real and imaginary parts as channels, [B, 2C, frames, freqs]) through a
stack of 2-d convolutions: a plain one, then weight-normed ones dilated in time and strided in frequency; it returns
its logits and every hidden feature map. The layer layout follows audiocraft's
``adversarial/discriminators/msstftd.py``; the hinge losses and the relative feature-matching loss follow its
``adversarial/losses.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from yuefu.train.losses import stft


def _pad(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0]) // 2, ((kernel[1] - 1) * dilation[1]) // 2


class STFTDiscriminator(nn.Module):
    """One scale: audio [B, C, T] -> (logits [B, 1, frames', freqs'], feature maps)."""

    def __init__(self, filters: int, channels: int = 1, n_fft: int = 1024, hop_length: int = 256,
                 win_length: int = 1024, kernel: tuple[int, int] = (3, 9), dilations: tuple[int, ...] = (1, 2, 4),
                 stride: tuple[int, int] = (1, 2), negative_slope: float = 0.3):
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop_length, win_length
        self.negative_slope = negative_slope
        wn = parametrizations.weight_norm
        square = (kernel[0], kernel[0])
        self.convs = nn.ModuleList([nn.Conv2d(2 * channels, filters, kernel, padding=_pad(kernel))])
        for d in dilations:
            self.convs.append(wn(nn.Conv2d(filters, filters, kernel, stride=stride, dilation=(d, 1),
                                           padding=_pad(kernel, (d, 1)))))
        self.convs.append(wn(nn.Conv2d(filters, filters, square, padding=_pad(square))))
        self.conv_post = wn(nn.Conv2d(filters, 1, square, padding=_pad(square)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        z = stft(x, self.n_fft, self.hop, self.win, normalized=True)  # [B, C, F, frames] complex
        z = torch.cat([z.real, z.imag], dim=1).transpose(2, 3)  # [B, 2C, frames, F]
        fmap = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            fmap.append(z)
        return self.conv_post(z), fmap


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several STFT discriminators at different resolutions: -> (list of logits, list of feature-map lists)."""

    def __init__(self, filters: int, channels: int, n_ffts: list[int], hop_lengths: list[int],
                 win_lengths: list[int]):
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(filters, channels, n, h, w) for n, h, w in zip(n_ffts, hop_lengths, win_lengths))

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        logits, fmaps = [], []
        for disc in self.discriminators:
            logit, fmap = disc(x)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps


def discriminator_loss(logits_fake: list[Tensor], logits_real: list[Tensor]) -> Tensor:
    """Hinge loss of the discriminator, averaged over scales: mean(relu(1 + D(fake))) + mean(relu(1 - D(real)))."""
    loss = sum(F.relu(1 + f).mean() + F.relu(1 - r).mean() for f, r in zip(logits_fake, logits_real))
    return loss / len(logits_fake)


def generator_adv_loss(logits_fake: list[Tensor]) -> Tensor:
    """Hinge loss of the generator, averaged over scales: -mean(D(fake))."""
    return sum(-f.mean() for f in logits_fake) / len(logits_fake)


def feature_matching_loss(fmaps_fake: list[list[Tensor]], fmaps_real: list[list[Tensor]]) -> Tensor:
    """Mean over scales of the mean over layers of L1(fake features, real features)."""
    total = 0.0
    for fake, real in zip(fmaps_fake, fmaps_real):
        total = total + sum(F.l1_loss(f, r.detach()) for f, r in zip(fake, real)) / len(fake)
    return total / len(fmaps_fake)
