"""Every speed option against the plain path: exact for fp32 mechanisms, within stated agreement for reduced
precision. References: a closed form for the int8 layer, the fp32 model for the quantized LM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import yuefu
from yuefu.bench import teacher_forced_agreement
from yuefu.lm.quantize import Int8Linear

PROMPTS = ["lo-fi hip hop with a warm piano", "a cheerful erhu melody over a rock beat"]


def test_int8_linear_equals_its_dequantized_weights():
    """y = x (s * q)^T: the only further error is the on-the-fly activation quantization (8 bits per row)."""
    torch.manual_seed(0)
    lin = nn.Linear(256, 512, bias=True)
    q = Int8Linear(lin)
    w_deq = q.weight_int8.float() * q.scale[:, None]
    assert (w_deq - lin.weight).abs().max() <= q.scale.max() / 2 + 1e-7  # rounding of the weights
    x = torch.randn(3, 5, 256)
    ref = x @ w_deq.T + lin.bias
    y = q(x)
    assert y.shape == (3, 5, 512)
    assert ((y - ref).norm() / ref.norm()).item() < 0.02


@pytest.fixture(scope="module")
def fp32(hf_dir):
    return yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu")


@pytest.mark.parametrize("option,min_agree,max_kl", [({"quantize": "int8"}, 0.9, 0.05),
                                                     ({"dtype": "bfloat16"}, 0.9, 0.05)])
def test_reduced_precision_agrees_with_fp32(fp32, hf_dir, option, min_agree, max_kl):
    cand = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu", **option)
    r = teacher_forced_agreement(fp32, cand, PROMPTS, frames=60)
    print(option, r)
    assert r["top1_agreement"] >= min_agree and r["kl"] <= max_kl


def test_batched_cfg_equals_separate_rows(fp32):
    """Conditional and null rows share one batch; each row equals the model run on that row alone."""
    torch.manual_seed(1)
    codes = torch.randint(0, 2049, (1, 4, 15))
    with torch.no_grad():
        cond, _ = fp32.conditioner([PROMPTS[0]])
        both = fp32.lm(codes.repeat(2, 1, 1), cross_src=torch.cat([cond, torch.zeros_like(cond)]))
        alone = fp32.lm(codes, cross_src=cond)
        null = fp32.lm(codes, cross_src=torch.zeros_like(cond))
    assert (both[0] - alone[0]).abs().max() < 1e-5 and (both[1] - null[0]).abs().max() < 1e-5


def test_quantized_model_refuses_to_save(hf_dir, tmp_path):
    from yuefu.errors import CheckpointError

    q = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu", quantize="int8")
    with pytest.raises(CheckpointError):
        q.save_pretrained(tmp_path / "q")


@pytest.mark.parametrize("shape,bias", [((2, 64), False), ((2, 1, 64), True), ((4, 4, 64), False), ((3, 9, 64), True)])
def test_decode_linear_matches_float64(shape, bias):
    """yuefu's Linear (W @ x^T for few rows on the CPU, F.linear otherwise) against a float64 closed form."""
    from yuefu.lm.model import DECODE_ROWS, Linear

    torch.manual_seed(0)
    lin = Linear(64, 96, bias=bias)
    x = torch.randn(*shape)
    ref = x.double() @ lin.weight.double().T + (lin.bias.double() if bias else 0)
    y = lin(x)
    assert y.shape == (*shape[:-1], 96) and y.dtype == torch.float32
    assert (y.double() - ref).abs().max() < 1e-5
    assert (x.numel() // 64 <= DECODE_ROWS) == (shape != (3, 9, 64))  # both paths are exercised
    with torch.no_grad():
        assert torch.allclose(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), atol=1e-5)


def test_int8_keeps_one_copy_of_the_weights(hf_dir):
    """On the CPU the int8 kernel's packed weights are the only copy (no int8 buffer beside them)."""
    from yuefu.lm.quantize import _x86_int8_available

    q = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu", quantize="int8")
    layers = [m for m in q.lm.modules() if isinstance(m, Int8Linear)]
    assert layers
    if _x86_int8_available():
        assert all(m._packed is not None and m._int8 is None for m in layers)
        assert all(n != "_int8" for n, _ in q.lm.named_buffers())
