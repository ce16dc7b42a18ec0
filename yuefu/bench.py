"""``yuefu bench``: generation speed of yuefu against transformers on the same weights, in the same run.

Random weights with an official architecture (small / medium / large) are written once as a transformers
checkpoint; yuefu (fp32, bf16, int8) and transformers load that same folder. Each measurement runs in its own
process (so peak RSS is that implementation's own), implementations alternate across repetitions (the machine is
shared and noisy), and the table reports medians and ratios to transformers measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARCH = {  # official LM sizes (facts file); T5 is shrunk: text encoding is outside the per-step cost
    "small": dict(hidden_size=1024, num_attention_heads=16, num_hidden_layers=24, ffn_dim=4096),
    "medium": dict(hidden_size=1536, num_attention_heads=24, num_hidden_layers=48, ffn_dim=6144),
    "large": dict(hidden_size=2048, num_attention_heads=32, num_hidden_layers=48, ffn_dim=8192),
}
IMPLS = ("transformers", "yuefu", "yuefu-bf16", "yuefu-int8")
PROMPT = "lo-fi hip hop with a warm piano"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {dev}"


def build_model_dir(size: str, root: Path) -> Path:
    """A transformers MusicGen checkpoint with random weights of ``size``'s architecture (made once)."""
    folder = root / f"random-{size}"
    if (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists():
        return folder
    import sentencepiece as spm
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
        T5Tokenizer,
    )

    torch.manual_seed(0)
    tmp = root / f".random-{size}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    words = "lo-fi hip hop with a warm piano rock band drums bass guitar jazz ambient pads strings".split()
    (tmp / "corpus.txt").write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) * 20)
    spm.SentencePieceTrainer.train(input=str(tmp / "corpus.txt"), model_prefix=str(tmp / "sp"), vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                                   eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp / "sp.model"))
    tok = T5Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())], extra_ids=0)
    text = T5Config(vocab_size=len(tok), d_model=768, d_kv=64, d_ff=512, num_layers=2, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128,
                          upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], codebook_size=2048,
                          num_lstm_layers=2, chunk_length_s=None, overlap=None, normalize=False,
                          use_causal_conv=False, pad_mode="constant", use_conv_shortcut=False)
    dec = MusicgenDecoderConfig(vocab_size=2048, num_codebooks=4, max_position_embeddings=2048, dropout=0.0,
                                **ARCH[size])
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                                                            decoder=dec.to_dict()))
    with torch.no_grad():
        for name, buf in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn_like(buf))
    for f in ("corpus.txt", "sp.model", "sp.vocab"):
        (tmp / f).unlink()
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM (ru_maxrss would include the parent's size at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(impl: str, model_dir: str, seconds: float, batch: int, device: str) -> dict:
    """One measurement in this process: load, warm up, generate ``seconds`` of audio for ``batch`` prompts."""
    import torch

    prompts = [PROMPT] * batch
    frames = int(seconds * 50)
    steps = frames + 3
    out: dict = {"impl": impl, "seconds": seconds, "batch": batch}
    if impl == "transformers":
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration

        t0 = time.perf_counter()
        model = MusicgenForConditionalGeneration.from_pretrained(model_dir).eval().to(device)
        tok = AutoTokenizer.from_pretrained(model_dir)
        out["load_s"] = time.perf_counter() - t0
        model.generation_config.pad_token_id = model.generation_config.decoder_start_token_id = 2048
        inputs = tok(prompts, return_tensors="pt").to(device)
        caught = {}
        decode = model.audio_encoder.decode

        def spy(codes, *a, **k):
            t = time.perf_counter()
            r = decode(codes, *a, **k)
            caught["decode_s"] = time.perf_counter() - t
            return r

        model.audio_encoder.decode = spy

        def run(n: int) -> float:
            t = time.perf_counter()
            with torch.no_grad():
                model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=n + 3)
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t

        run(25)
        total = run(frames)
        out["peak_rss_mb"] = _peak_rss_mb()  # load + generation + decode, before anything else runs
        decode_s = caught["decode_s"]
    else:
        from yuefu.musicgen import MusicGen

        kw = {"yuefu": {}, "yuefu-bf16": {"dtype": "bfloat16"}, "yuefu-int8": {"quantize": "int8"}}[impl]
        t0 = time.perf_counter()
        model = MusicGen.from_pretrained(model_dir, device=device, **kw)
        out["load_s"] = time.perf_counter() - t0

        def run(n: int) -> tuple[float, float]:
            model.set_generation_params(duration=n / 50)
            t = time.perf_counter()
            with torch.inference_mode():
                conditions = model.encode_conditions(prompts)
                tokens = model.generate_tokens(conditions, batch, model.params, n / 50, generator=None)
                t_dec = time.perf_counter()
                model.decode_tokens(tokens)
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t, time.perf_counter() - t_dec

        run(25)
        total, decode_s = run(frames)
        out["peak_rss_mb"] = _peak_rss_mb()  # load + generation + decode, as for transformers
        # codec speed on 10 s of audio
        wav = torch.randn(1, 1, 320000, device=device) * 0.1
        with torch.inference_mode():
            t = time.perf_counter()
            codes = model.compression_model.encode(wav)
            out["codec_encode_xrt"] = 10 / (time.perf_counter() - t)
            t = time.perf_counter()
            model.decode_tokens(codes)  # as generation decodes (bf16 autocast in the fast modes)
            out["codec_decode_xrt"] = 10 / (time.perf_counter() - t)
        stream = getattr(model, "generate_stream", None)
        if stream is not None:
            model.set_generation_params(duration=min(seconds, 5.0))
            t = time.perf_counter()
            for _chunk in stream(prompts[:1]):
                out["first_audio_s"] = time.perf_counter() - t
                break
    out["ms_per_step"] = 1000 * (total - decode_s) / steps
    out["decode_s"] = decode_s
    out["total_s"] = total
    out["rtf"] = total / seconds
    return out


def run_benchmark(size: str, seconds: float, batches: list[int], impls: list[str], reps: int, device: str,
                  cache: Path, threads: int | None) -> list[dict]:
    model_dir = build_model_dir(size, cache)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    results: list[dict] = []
    for batch in batches:
        for rep in range(reps):
            for impl in impls:
                cmd = [sys.executable, "-m", "yuefu.bench", "--worker", impl, "--model-dir", str(model_dir),
                       "--seconds", str(seconds), "--batch", str(batch), "--device", device]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if r.returncode != 0:
                    print(f"  {impl} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                    continue
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res["rep"] = rep
                results.append(res)
                print(f"  batch {batch} rep {rep} {impl:13s} {res['ms_per_step']:7.1f} ms/step  RTF {res['rtf']:.2f}",
                      flush=True)
    return results


def summarize(results: list[dict]) -> str:
    lines = [f"{'batch':>5} {'impl':13s} {'ms/step':>8} {'RTF':>6} {'x transformers':>15} {'peak RSS MB':>12} "
             f"{'1st audio s':>11} {'codec enc/dec xRT':>18}"]
    for batch in sorted({r["batch"] for r in results}):
        rows = [r for r in results if r["batch"] == batch]
        med = {}
        for impl in IMPLS:
            rs = [r for r in rows if r["impl"] == impl]
            if rs:
                med[impl] = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], float)}
        base = med.get("transformers", {}).get("ms_per_step")
        for impl, m in med.items():
            ratio = f"{base / m['ms_per_step']:.2f}x" if base else "n/a"
            first = f"{m['first_audio_s']:.2f}" if "first_audio_s" in m else "-"
            codec = (f"{m['codec_encode_xrt']:.0f}/{m['codec_decode_xrt']:.0f}" if "codec_encode_xrt" in m else "-")
            lines.append(f"{batch:5d} {impl:13s} {m['ms_per_step']:8.1f} {m['rtf']:6.2f} {ratio:>15} "
                         f"{m['peak_rss_mb']:12.0f} {first:>11} {codec:>18}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=sorted(ARCH), default="small")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per generation (default 10)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (default 1)")
    p.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--reps", type=int, default=2, help="repetitions, alternating implementations (default 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the workers")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "yuefu" / "bench"),
                   help="where the random checkpoints are kept")
    p.add_argument("--json", default=None, help="also write every measurement to this JSON file")


def main_bench(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}" + (f"; workers use {args.threads} thread(s)" if args.threads else ""))
    print(f"model: musicgen-{args.size} architecture, random weights; {args.seconds:g} s per generation, CFG 3, "
          f"top-k 250; ms/step excludes the codec decode, RTF includes it")
    results = run_benchmark(args.size, args.seconds, args.batch, args.impl, args.reps, args.device,
                            Path(args.cache), args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    print(summarize(results))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", choices=IMPLS, default=None)
    ap.add_argument("--model-dir", default=None)
    add_arguments(ap)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.model_dir, a.seconds, a.batch[0], a.device)))
    else:
        sys.exit(main_bench(a))


def teacher_forced_agreement(reference, candidate, prompts: list[str], frames: int = 100,
                             seed: int = 0) -> dict[str, float]:
    """Compare two MusicGen instances (e.g. fp32 and int8) on the same token sequences, teacher-forced.

    The sequences are sampled from ``reference`` (top-k 250, CFG 3); both models then score every pattern step of
    them under CFG. Returns the top-1 agreement of the guided logits and the mean KL(reference || candidate) of
    their softmax distributions, over all valid cells.
    """
    import torch

    from yuefu.lm.patterns import make_pattern

    reference.set_generation_params(duration=frames / reference.frame_rate)
    with torch.inference_mode():
        _, tokens = reference.generate(prompts, return_tokens=True, seed=seed)  # [B, K, T]
        lm_cfg = reference.config.lm
        pattern = make_pattern(lm_cfg.pattern, lm_cfg.n_q, tokens.shape[-1], lm_cfg.delays)
        seq = pattern.build(tokens, lm_cfg.special_token)  # [B, K, S]
        valid = pattern.valid[:, 1:]  # the cells predicted from the steps before them

        def guided(model):
            cond = model.encode_conditions(model.prepare_prompts(prompts))
            cross = torch.cat([cond.cross, torch.zeros_like(cond.cross)])
            logits = model.lm(seq[..., :-1].repeat(2, 1, 1).to(model.device), cross_src=cross).float()
            c, u = logits.split(len(prompts))
            return (u + (c - u) * 3.0).cpu()  # [B, K, S-1, card]

        ref, cand = guided(reference), guided(candidate)
    mask = valid.unsqueeze(0).expand(len(prompts), -1, -1)
    agree = (ref.argmax(-1) == cand.argmax(-1))[mask].float().mean().item()
    logp, logq = torch.log_softmax(ref, -1), torch.log_softmax(cand, -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)[mask].mean().item()
    return {"top1_agreement": agree, "kl": kl}
