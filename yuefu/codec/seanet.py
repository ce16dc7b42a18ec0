"""SEANet encoder and decoder: the convolutional autoencoder of EnCodec.

The layer order, and so every layer index a checkpoint refers to, is the one of audiocraft's
``audiocraft/modules/seanet.py`` (transformers' ``EncodecEncoder``/``EncodecDecoder`` keep the same order):

    encoder: conv, [resblock x n_residual_layers, ELU, strided conv] per ratio (reversed), LSTM, ELU, conv
    decoder: conv, LSTM, [ELU, transposed conv, resblock x n_residual_layers] per ratio, ELU, conv

Every convolution pads its own input so that a stride-s convolution maps T samples to ceil(T / s) frames and a
stride-s transposed convolution maps T frames back to T * s samples: an input of T samples is encoded to
ceil(T / hop) frames and decoded to ceil(T / hop) * hop samples.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

from yuefu.config import CodecConfig

NORMS = ("weight_norm", "none")


def weight_norm_fold(g: Tensor, v: Tensor) -> Tensor:
    """Plain weight from a weight-norm pair (norm over all dims but 0), bit-identical to torch's parametrization."""
    return torch._weight_norm(v, g, 0)


def weight_norm_split(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(g, v) with ``weight_norm_fold(g, v) == weight``: g is the norm of each output slice, v the weight itself."""
    g = torch.linalg.vector_norm(weight, dim=tuple(range(1, weight.dim())), keepdim=True)
    return g, weight.clone()


def fold_weight_norm(module: nn.Module) -> None:
    """Replace every weight-norm parametrization below ``module`` by the plain weight it currently computes."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def pad1d(x: Tensor, left: int, right: int, mode: str) -> Tensor:
    """``F.pad`` on the last axis; reflect-padding an input shorter than the pad first zero-extends it (as EnCodec)."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode)
    extra = max(0, max(left, right) - x.shape[-1] + 1)
    if extra:
        x = F.pad(x, (0, extra))
    x = F.pad(x, (left, right), "reflect")
    return x[..., : x.shape[-1] - extra]


def _normed(conv: nn.Module, norm: str) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"unsupported codec norm {norm!r} (supported: {NORMS})")
    return parametrizations.weight_norm(conv) if norm == "weight_norm" else conv


class PaddedConv1d(nn.Module):
    """Conv1d that pads its input itself: [B, C_in, T] -> [B, C_out, ceil(T / stride)].

    The fixed padding (effective kernel - stride) is put on the left when causal, else split with the extra sample
    on the left. Then the input is right-padded up to a multiple of the stride so that the last window is complete
    (EnCodec's "extra padding"), which is what lets the decoder rebuild ceil(T / stride) * stride samples.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 *, causal: bool, pad_mode: str, norm: str):
        super().__init__()
        self.conv = _normed(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation), norm)
        self.stride = stride
        self.padding_total = (kernel_size - 1) * dilation + 1 - stride
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: Tensor) -> Tensor:
        # audiocraft's get_extra_padding_for_conv1d, simplified with kernel - padding_total == stride
        extra = -x.shape[-1] % self.stride
        if self.causal:
            left, right = self.padding_total, 0
        else:
            right = self.padding_total // 2
            left = self.padding_total - right
        if self.pad_mode == "constant" and left == right + extra:  # zero padding the convolution does itself:
            c = self.conv  # no padded copy of the input (an 82 MB buffer per 10 s at 64 channels, 32 kHz)
            return F.conv1d(x, c.weight, c.bias, c.stride, left, c.dilation, c.groups)
        return self.conv(pad1d(x, left, right + extra, self.pad_mode))


class PaddedConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed back to an exact upsampling: [B, C_in, T] -> [B, C_out, T * stride].

    Of the kernel - stride surplus samples, a causal layer removes ceil(surplus * trim_right_ratio) on the right and
    the rest on the left; a non-causal one removes surplus // 2 on the right and the rest on the left.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 *, causal: bool, norm: str, trim_right_ratio: float = 1.0):
        super().__init__()
        if not causal and trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ValueError(f"trim_right_ratio must lie in [0, 1], got {trim_right_ratio}")
        self.convtr = _normed(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride), norm)
        surplus = kernel_size - stride
        if causal:
            self.trim_right = math.ceil(surplus * trim_right_ratio)
        else:
            self.trim_right = surplus // 2
        self.trim_left = surplus - self.trim_right

    def forward(self, x: Tensor) -> Tensor:
        y = self.convtr(x)
        return y[..., self.trim_left : y.shape[-1] - self.trim_right]


class ELU(nn.ELU):
    """``nn.ELU`` that, when no gradient is recorded, overwrites its input: every place the codec uses it but the
    residual branch (whose input the shortcut still needs) passes a tensor nothing reads again. In inference this
    saves an activation-sized buffer per use (at 32 kHz, 82 MB per 10 s of audio at 64 channels)."""

    def __init__(self, alpha: float, overwrite: bool = True):
        super().__init__(alpha)
        self.overwrite = overwrite

    def forward(self, x: Tensor) -> Tensor:
        if self.overwrite and not torch.is_grad_enabled():
            return F.elu_(x, self.alpha)
        return F.elu(x, self.alpha)


class ResidualBlock(nn.Module):
    """SEANet residual unit: x + conv1x1(ELU(conv_k,dilated(ELU(x)))) with a dim // compress bottleneck.

    The shortcut is the identity (``true_skip``) or a 1x1 convolution.
    """

    def __init__(self, dim: int, dilation: int, cfg: CodecConfig):
        super().__init__()
        conv = partial(PaddedConv1d, causal=cfg.causal, pad_mode=cfg.pad_mode, norm=cfg.norm)
        hidden = dim // cfg.compress
        self.block = nn.Sequential(
            ELU(cfg.activation_alpha, overwrite=False),  # x is the shortcut's too
            conv(dim, hidden, cfg.residual_kernel_size, dilation=dilation),
            ELU(cfg.activation_alpha),
            conv(hidden, dim, 1),
        )
        self.shortcut = nn.Identity() if cfg.true_skip else conv(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:  # [B, dim, T] -> [B, dim, T]
        return self.shortcut(x) + self.block(x)


class LSTMBlock(nn.Module):
    """Multi-layer LSTM over time with a skip connection, in convolutional layout [B, C, T]."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(2, 0, 1)  # [T, B, C]
        y = self.lstm(x)[0] + x
        return y.permute(1, 2, 0)  # [B, C, T]


def _check(cfg: CodecConfig) -> None:
    if cfg.pad_mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(f"unsupported pad_mode {cfg.pad_mode!r}")


class SEANetEncoder(nn.Module):
    """Waveform [B, channels, T] -> latent [B, dimension, ceil(T / hop)]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        _check(cfg)
        conv = partial(PaddedConv1d, causal=cfg.causal, pad_mode=cfg.pad_mode, norm=cfg.norm)
        width = cfg.n_filters
        layers: list[nn.Module] = [conv(cfg.channels, width, cfg.kernel_size)]
        for ratio in reversed(cfg.ratios):
            layers += [ResidualBlock(width, cfg.dilation_base**j, cfg) for j in range(cfg.n_residual_layers)]
            layers += [ELU(cfg.activation_alpha), conv(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        if cfg.lstm:
            layers.append(LSTMBlock(width, cfg.lstm))
        layers += [ELU(cfg.activation_alpha), conv(width, cfg.dimension, cfg.last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, wav: Tensor) -> Tensor:
        return self.layers(wav)


class SEANetDecoder(nn.Module):
    """Latent [B, dimension, frames] -> waveform [B, channels, frames * hop]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        _check(cfg)
        conv = partial(PaddedConv1d, causal=cfg.causal, pad_mode=cfg.pad_mode, norm=cfg.norm)
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [conv(cfg.dimension, width, cfg.kernel_size)]
        if cfg.lstm:
            layers.append(LSTMBlock(width, cfg.lstm))
        for ratio in cfg.ratios:
            layers += [
                ELU(cfg.activation_alpha),
                PaddedConvTranspose1d(width, width // 2, 2 * ratio, ratio, causal=cfg.causal, norm=cfg.norm,
                                      trim_right_ratio=cfg.trim_right_ratio),
            ]
            width //= 2
            layers += [ResidualBlock(width, cfg.dilation_base**j, cfg) for j in range(cfg.n_residual_layers)]
        layers += [ELU(cfg.activation_alpha), conv(width, cfg.channels, cfg.last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, emb: Tensor) -> Tensor:
        return self.layers(emb)
