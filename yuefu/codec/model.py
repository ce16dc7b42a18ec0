"""The EnCodec-style compression model MusicGen tokenizes audio with: SEANet encoder, residual VQ, SEANet decoder.

Waveform [B, C, T] -> latent [B, D, ceil(T / hop)] -> codes [B, K, frames] (K codebooks of ``bins`` entries)
-> latent [B, D, frames] -> waveform [B, C, frames * hop]. The model is built from a :class:`CodecConfig` alone;
``yuefu.checkpoints.codec_keys`` maps audiocraft and transformers checkpoints onto its parameter names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor, nn
from torch.nn.utils import parametrize

from yuefu.codec.quantizer import ResidualVectorQuantizer
from yuefu.codec.seanet import SEANetDecoder, SEANetEncoder, fold_weight_norm, weight_norm_fold, weight_norm_split
from yuefu.config import CodecConfig

# The three ways a convolution weight can be stored: plain, torch's old weight_norm, torch's parametrization.
_OLD_WN = ("weight_g", "weight_v")
_NEW_WN = ("parametrizations.weight.original0", "parametrizations.weight.original1")


class CodecOutput(NamedTuple):
    audio: Tensor  # [B, C, T] reconstruction, trimmed to the input length
    codes: Tensor  # [B, K, frames]
    commit_loss: Tensor  # [] (zero outside training)


class CompressionModel(nn.Module):
    """EnCodec codec: ``encode`` audio to discrete codes and ``decode`` them back."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self._config = cfg
        self.encoder = SEANetEncoder(cfg)
        self.decoder = SEANetDecoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.dimension, cfg.n_q, cfg.bins)
        self.register_load_state_dict_pre_hook(_weight_spelling_hook)

    # -- description -------------------------------------------------------------------------------------------
    @property
    def config(self) -> CodecConfig:
        return self._config

    @property
    def sample_rate(self) -> int:
        return self._config.sample_rate

    @property
    def channels(self) -> int:
        return self._config.channels

    @property
    def hop_length(self) -> int:
        return self._config.hop_length

    @property
    def frame_rate(self) -> float:
        return self._config.frame_rate

    @property
    def cardinality(self) -> int:
        """Entries per codebook."""
        return self._config.bins

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.total_codebooks

    @property
    def n_q(self) -> int:
        """Number of codebooks in use (the first ones); lowering it lowers the bitrate."""
        return self.quantizer.n_q

    @n_q.setter
    def n_q(self, n: int) -> None:
        if not 1 <= n <= self.total_codebooks:
            raise ValueError(f"n_q must lie in [1, {self.total_codebooks}], got {n}")
        self.quantizer.n_q = n

    # -- coding ------------------------------------------------------------------------------------------------
    def _check_audio(self, wav: Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"expected audio [B, {self.channels}, T], got {tuple(wav.shape)}")

    def _normalize(self, wav: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self._config.renormalize:
            return wav, None
        volume = wav.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()  # [B, 1, 1] RMS of mono
        scale = volume + 1e-8
        return wav / scale, scale.view(-1, 1)

    def encode_with_scale(self, wav: Tensor) -> tuple[Tensor, Tensor | None]:
        """Audio [B, C, T] -> (codes [B, K, ceil(T / hop)], scale [B, 1] or None).

        The scale is the input's RMS when the codec renormalizes its input (``renormalize``), else None; pass it
        back to :meth:`decode` to restore the level.
        """
        self._check_audio(wav)
        wav, scale = self._normalize(wav)
        return self.quantizer.encode(self.encoder(wav)), scale

    def encode(self, wav: Tensor) -> Tensor:
        """Audio [B, C, T] -> codes [B, K, ceil(T / hop)] with K = ``n_q``."""
        return self.encode_with_scale(wav)[0]

    def decode_latent(self, codes: Tensor) -> Tensor:
        """Codes [B, K, frames] -> quantized latent [B, D, frames] (the sum of the K codewords)."""
        return self.quantizer.decode(codes)

    def decode(self, codes: Tensor, scale: Tensor | None = None) -> Tensor:
        """Codes [B, K, frames] -> audio [B, C, frames * hop]; K may be any number up to the total codebooks."""
        wav = self.decoder(self.decode_latent(codes))
        if scale is not None:
            wav = wav * scale.view(-1, 1, 1)
        return wav

    def forward(self, wav: Tensor) -> CodecOutput:
        """Audio [B, C, T] -> reconstruction [B, C, T] through the quantizer (the training path)."""
        self._check_audio(wav)
        length = wav.shape[-1]
        x, scale = self._normalize(wav)
        quantized, codes, commit_loss = self.quantizer(self.encoder(x))
        out = self.decoder(quantized)[..., :length]
        if scale is not None:
            out = out * scale.view(-1, 1, 1)
        return CodecOutput(out, codes, commit_loss)

    # -- weights -----------------------------------------------------------------------------------------------
    def remove_weight_norm(self) -> CompressionModel:
        """Fold the weight-norm reparametrization into plain weights (same outputs, faster inference)."""
        fold_weight_norm(self)
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights in our names; each convolution weight may be stored plain, as ``weight_g``/``weight_v`` or
        as ``parametrizations.weight.original0/1``, whether or not this model has folded its weight norm (a load
        hook does the same when the codec is loaded as part of a larger module).

        With ``strict``, missing, unexpected or mis-shaped entries raise a ValueError naming them.
        """
        sd = dict(state_dict)
        _match_weight_spelling(self, sd)
        if strict:
            own = self.state_dict()
            missing = [k for k in own if k not in sd]
            unexpected = [k for k in sd if k not in own]
            shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                      if k in sd and sd[k].shape != v.shape]
            problems = [f"{what} ({len(keys)}): {keys[:5]}" for what, keys in
                        (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
            if problems:
                raise ValueError("codec state dict does not fit the model; " + "; ".join(problems))
        return super().load_state_dict(sd, strict=strict, assign=assign)


def _match_weight_spelling(model: nn.Module, sd: dict[str, Tensor], prefix: str = "") -> None:
    """Rewrite, in place, every convolution weight of ``sd`` into the spelling its module in ``model`` now uses."""
    for name, module in model.named_modules(prefix=prefix.rstrip(".")):
        if not isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            continue
        p = f"{name}."
        weight_normed = parametrize.is_parametrized(module, "weight")
        if f"{p}weight" in sd:
            if weight_normed:
                sd[p + _NEW_WN[0]], sd[p + _NEW_WN[1]] = weight_norm_split(sd.pop(f"{p}weight"))
            continue
        for spelling in (_OLD_WN, _NEW_WN):
            if all(p + s in sd for s in spelling):
                g, v = (sd.pop(p + s) for s in spelling)
                if weight_normed:
                    sd[p + _NEW_WN[0]], sd[p + _NEW_WN[1]] = g, v
                else:
                    sd[f"{p}weight"] = weight_norm_fold(g, v)
                break


def _weight_spelling_hook(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    _match_weight_spelling(module, state_dict, prefix)
