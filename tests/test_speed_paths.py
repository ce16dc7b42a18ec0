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


def test_streamed_loads_equal_converting_the_fp32_model(fp32, hf_dir):
    """from_pretrained reads, casts and quantizes the LM one layer at a time; the result is exactly what converting
    the whole fp32 model afterwards gives (module swap for int8, ``.to`` for bf16)."""
    import copy

    from yuefu.lm.quantize import quantize_lm_int8

    ref8 = quantize_lm_int8(copy.deepcopy(fp32.lm))
    got8 = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu", quantize="int8").lm
    assert got8.quantized == "int8"
    names = [n for n, m in ref8.named_modules() if isinstance(m, Int8Linear)]
    assert names == [n for n, m in got8.named_modules() if isinstance(m, Int8Linear)] and names
    for n in names:
        a, b = ref8.get_submodule(n), got8.get_submodule(n)
        assert torch.equal(a.weight_int8, b.weight_int8) and torch.equal(a.scale, b.scale), n
    ref_rest, got_rest = ref8.state_dict(), got8.state_dict()
    for k in ref_rest:
        if not k.endswith(("_packed", "scale")):
            assert torch.equal(ref_rest[k], got_rest[k]), k

    ref16 = fp32.lm.state_dict()
    got16 = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu", dtype="bfloat16").lm.state_dict()
    assert ref16.keys() == got16.keys()
    for k, v in ref16.items():
        assert got16[k].dtype == torch.bfloat16 and torch.equal(got16[k], v.bfloat16()), k


MEMORY_PROBE = r"""
import gc, json, sys
import yuefu
yuefu.MusicGen.from_pretrained(sys.argv[1], device="cpu", quantize="int8")  # imports and first-use allocations
gc.collect()
before = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
m = yuefu.MusicGen.from_pretrained(sys.argv[2], device="cpu", quantize="int8")
# VmHWM, not ru_maxrss: the latter keeps the parent's size from before exec (pytest's, here)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"before": before, "peak": hwm / 1024}))
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_an_int8_load_never_holds_the_fp32_weights(hf_dir, tokenizer, tmp_path):
    """Loading an LM of 42M parameters (168 MB in fp32) in int8 raises the process's peak memory by well under its
    fp32 size: the checkpoint is never resident whole (measured: 87-106 MB, about the int8 model plus allocator
    slack; 195 MB when the file was read at once, which holds all 170 MB of it)."""
    import json
    import subprocess
    import sys

    from tiny import make_musicgen

    big = tmp_path / "big"
    make_musicgen(tokenizer, dim=512, layers=8).save_pretrained(big)
    tokenizer.save_pretrained(big)
    fp32_mb = sum(p.numel() for p in yuefu.MusicGen.from_pretrained(str(big), device="cpu").lm.parameters()) * 4 / 2**20
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(hf_dir), str(big)], capture_output=True, text=True,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    grew = r["peak"] - r["before"]
    print(f"int8 load of a {fp32_mb:.0f} MB fp32 LM: peak grew by {grew:.0f} MB")
    assert grew < 0.8 * fp32_mb, (grew, fp32_mb)  # a whole-file read cannot pass: the file alone is 1.06x


def test_fast_modes_decode_in_bf16_close_to_fp32(fp32, hf_dir):
    """dtype/quantize also run the codec decoder under bf16 autocast: close to the fp32 decode (the reference),
    not equal to it; the plain model decodes in fp32, exactly as the codec itself."""
    q = yuefu.MusicGen.from_pretrained(str(hf_dir), device="cpu", quantize="int8")
    assert fp32.codec_dtype is None and q.codec_dtype == torch.bfloat16
    torch.manual_seed(0)
    codes = torch.randint(0, 2048, (1, 4, 50))
    with torch.inference_mode():
        ref = fp32.compression_model.decode(codes)
        assert torch.equal(fp32.decode_tokens(codes), ref)
        got = q.decode_tokens(codes)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    rel = ((got - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item()
    print(f"bf16 decode: relative RMS error {rel:.2e}")
    assert 0 < rel < 0.03
