"""int8 LM weights as a module swap (gpt-fast style): the model code does not change, its ``nn.Linear`` layers are
replaced by :class:`Int8Linear`.

Weights are stored as int8 with one scale per output channel (symmetric). On the CPU the matrix product runs in
the x86/fbgemm int8 kernel with the activations quantized on the fly per call (``quantized::linear_dynamic``):
this CPU's weight-only int8 kernel (``_weight_int8pack_mm``) measured ~10x slower, while the dynamic kernel reads
a quarter of fp32's bytes, and generation is bound by reading weights. Elsewhere (e.g. CUDA) the weights are
dequantized per call, which keeps the memory saving. Quality is measured, not assumed: see
``benchmarks/quality.py`` (teacher-forced top-1 agreement and KL against fp32).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


def _vnni() -> bool:
    """AVX512-VNNI: fbgemm then accumulates u8 x s8 products in int32, so activations may use all 8 bits."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512_vnni" in line for line in f)
    except OSError:
        return False


# Without VNNI fbgemm's AVX2 kernel sums pairs of u8 x s8 products in int16, which saturates unless activations
# are reduced to 7 bits. With full 8 bits, yuefu-mini's int8 agreement with fp32 rises from 82% to 90% of
# teacher-forced top-1 tokens (KL 0.041 -> 0.012 nats), measured with benchmarks/quality.py.
REDUCE_RANGE = not _vnni()


def _x86_int8_available() -> bool:
    return "x86" in torch.backends.quantized.supported_engines or "fbgemm" in torch.backends.quantized.supported_engines


class Int8Linear(nn.Module):
    """y = x W^T (+ b) with W int8 per output channel; x [..., in] -> [..., out]."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()  # [out, in]
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # [out]
        q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())
        self._packed = None
        if w.device.type == "cpu" and _x86_int8_available():
            with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao, still shipped
                warnings.simplefilter("ignore")
                zero = torch.zeros_like(scale, dtype=torch.long)
                qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
                self._packed = torch.ops.quantized.linear_prepack(qw, self.bias)
        # with a packed copy it is the only one kept (int8 then costs a quarter of fp32, not half)
        self.register_buffer("_int8", q if self._packed is None else None)

    @property
    def weight_int8(self) -> torch.Tensor:
        """The int8 weights [out, in] (unpacked from the CPU kernel's layout when that is where they live)."""
        if self._int8 is not None:
            return self._int8
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ops.quantized.linear_unpack(self._packed)[0].int_repr()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        if self._packed is not None and x.device.type == "cpu":
            shape = x.shape
            y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float(), self._packed, REDUCE_RANGE)
            return y.view(*shape[:-1], self.out_features).to(x.dtype)
        w = self.weight_int8.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantizes(name: str, module: nn.Module) -> bool:
    """Whether int8 applies to this child module: the linear layers used at every step (attention,
    cross-attention queries, FFN, heads). The cross-attention key/value projection runs once per generation and
    stays in full precision."""
    return isinstance(module, nn.Linear) and name != "kv_proj"


def quantize_lm_int8(lm: nn.Module) -> nn.Module:
    """Swap the linear layers that :func:`quantizes` names for :class:`Int8Linear`."""
    # parents only: a list holding the old Linear modules too would keep every fp32 weight alive to the end
    for module in [m for m in lm.modules() if not isinstance(m, nn.Linear)]:
        for child_name, child in list(module.named_children()):
            if quantizes(child_name, child):
                setattr(module, child_name, Int8Linear(child))
    lm.quantized = "int8"
    return lm
