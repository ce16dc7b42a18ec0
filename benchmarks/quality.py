"""Quality of the speed options: teacher-forced top-1 agreement and KL of int8 / bf16 LM weights against fp32.

    python benchmarks/quality.py MODEL_DIR_OR_ID [--frames 100]
"""

import argparse

from yuefu import MusicGen
from yuefu.bench import teacher_forced_agreement

PROMPTS = ["lo-fi hip hop with a warm piano", "epic orchestral music with strings and brass",
           "a cheerful erhu melody over a rock beat", "calm ambient pads"]

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--frames", type=int, default=100)
    a = ap.parse_args()
    ref = MusicGen.from_pretrained(a.model, device="cpu")
    for name, kw in (("bf16", {"dtype": "bfloat16"}), ("int8", {"quantize": "int8"})):
        cand = MusicGen.from_pretrained(a.model, device="cpu", **kw)
        r = teacher_forced_agreement(ref, cand, PROMPTS, a.frames)
        print(f"{name}: top-1 agreement {r['top1_agreement']:.4f}, KL {r['kl']:.5f} nats")
