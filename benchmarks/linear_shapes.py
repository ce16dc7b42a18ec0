"""Few-row products (a generation step) per weight shape, weights out of cache: which kernel streams fastest.

    python benchmarks/linear_shapes.py [--dim 1024] [--rows 2] [--threads 2]

Each kernel cycles through enough distinct weights (about 400 MB) that none is in cache, as in a real step, and
prints microseconds per call and the weight bytes read per second. The baseline is ``F.linear`` on fp32, what
``nn.Linear`` (and transformers) run; ``W @ x^T`` is what :class:`yuefu.lm.model.Linear` uses for fp32 steps.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F


def per_call_us(calls: list, reps: int = 3) -> float:
    for c in calls[:3]:
        c()
    t = time.perf_counter()
    for _ in range(reps):
        for c in calls:
            c()
    return (time.perf_counter() - t) / (reps * len(calls)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1024, help="model dimension (musicgen-small: 1024)")
    ap.add_argument("--rows", type=int, default=2, help="rows per product (CFG at batch 1: 2)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")  # quantized tensors are deprecated, still shipped
    d = a.dim
    shapes = {"attn in_proj": (3 * d, d), "attn out/q": (d, d), "ffn linear1": (4 * d, d), "ffn linear2": (d, 4 * d),
              "4 heads": (4 * 2048, d)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.rows} rows; us per call (GB/s of weights)")
    print(f"{'shape':14s} {'fp32 F.linear':>16s} {'fp32 W@x^T':>16s} {'bf16 F.linear':>16s} {'int8 dynamic':>16s}")
    for name, (out_f, in_f) in shapes.items():
        n = max(8, int(400e6 / (out_f * in_f * 4)))
        x = torch.randn(a.rows, in_f)
        ws = [torch.randn(out_f, in_f) for _ in range(n)]
        res = {"fp32 F.linear": (per_call_us([lambda w=w, x=x: F.linear(x, w) for w in ws]), 4),
               "fp32 W@x^T": (per_call_us([lambda w=w, x=x: torch.mm(w, x.t()) for w in ws]), 4)}
        xb = x.bfloat16()
        wb = [w.bfloat16() for w in ws]
        res["bf16 F.linear"] = (per_call_us([lambda w=w, xb=xb: F.linear(xb, w) for w in wb]), 2)
        packed = []
        for w in ws:
            scale = (w.abs().amax(1) / 127).clamp(min=1e-12)
            q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(out_f, dtype=torch.long), 0)
            packed.append(torch.ops.quantized.linear_prepack(qw, None))
        del ws, wb
        res["int8 dynamic"] = (per_call_us([lambda p=p, x=x: torch.ops.quantized.linear_dynamic(x, p, True)
                                            for p in packed]), 1)
        cells = [f"{us:7.0f} ({out_f * in_f * b / us / 1e3:5.1f})" for us, b in res.values()]
        print(f"{name:14s} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
