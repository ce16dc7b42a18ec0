"""``yuefu train codec``: train the EnCodec-style codec (SEANet + residual VQ) as audiocraft's compression solver.

One step: the codec reconstructs a batch of crops (the quantizer learns its codebooks by EMA, with k-means
initialisation and dead-code replacement, inside ``CompressionModel.forward`` in training mode); the MS-STFT
discriminator takes a hinge-loss step on (reconstruction, original); then the reconstruction's losses - time-domain
L1, multi-scale mel, adversarial and feature matching - are combined by the balancer into one gradient at the
codec output, backpropagated together with the commitment loss. Validation reports SI-SNR and mel distance.

Under torchrun the codec and the discriminator are DDP-replicated; the codebooks (buffers, not parameters) are
kept identical across processes: rank 0's k-means initialisation is broadcast, and afterwards the EMA statistics
are averaged after every step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yuefu.codec import CompressionModel, ResidualVectorQuantizer
from yuefu.data.dataset import AudioDataset, GlobalBatchSampler, collate_audio
from yuefu.data.manifest import AudioEntry
from yuefu.errors import InvalidArgumentError
from yuefu.train import common, distributed, optim
from yuefu.train import state as ckpt_state
from yuefu.train.balancer import Balancer
from yuefu.train.config import CodecTrainConfig, to_dict
from yuefu.train.discriminator import (
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
)
from yuefu.train.logger import IntervalMean, TrainLogger, format_metrics
from yuefu.train.losses import MelDistance, MelSpectrogram, MultiScaleMelLoss, si_snr
from yuefu.train.models import count_parameters, load_codec, save_codec


def build_codec(cfg: CodecTrainConfig, source: str = "config") -> CompressionModel:
    """The codec to train: from ``model.codec`` (or the ``init_from`` folder's config and weights), with the
    quantizer's training settings from ``model.quantizer``."""
    q = cfg.model.quantizer
    if cfg.model.init_from is not None:
        base = load_codec(cfg.model.init_from)
        codec_cfg, weights = base.config, base.state_dict()
    else:
        codec_cfg, weights = cfg.model.codec, None
    try:
        model = CompressionModel(codec_cfg)
    except (ValueError, TypeError) as e:
        raise InvalidArgumentError(f"{source}: model.codec: {e}") from None
    model.quantizer = ResidualVectorQuantizer(codec_cfg.dimension, codec_cfg.n_q, codec_cfg.bins, decay=q.decay,
                                              kmeans_init=q.kmeans_init, kmeans_iters=q.kmeans_iters,
                                              threshold_ema_dead_code=q.threshold_ema_dead_code)
    if weights is not None:
        model.load_state_dict(weights)
    for part in cfg.model.freeze:
        getattr(model, part).requires_grad_(False)
    return model


def set_training(model: CompressionModel, frozen: list[str]) -> CompressionModel:
    """Training mode, except for the frozen parts: a frozen quantizer in eval mode keeps its codebooks (no EMA
    update, no dead-code replacement), so the codes stay the ones the original codec produced."""
    model.train()
    for part in frozen:
        getattr(model, part).eval()
    return model


def train_codec(cfg: CodecTrainConfig, resume: bool = False, source: str = "config") -> Path:
    """Run (or continue) a codec training; returns the folder of the final codec."""
    info = distributed.init(cfg.train.device)
    threads = torch.get_num_threads()
    try:
        return _train(cfg, info, resume, source)
    finally:
        torch.set_num_threads(threads)  # train.threads applies to the run only
        distributed.shutdown()


def _train(cfg: CodecTrainConfig, info: distributed.DistInfo, resume: bool, source: str) -> Path:
    if cfg.train.grad_accum != 1:
        raise InvalidArgumentError("train.grad_accum is for the LM; the codec's balancer works on whole batches")
    if info.distributed and cfg.train.distributed == "fsdp":
        raise InvalidArgumentError("train.distributed fsdp is for the LM; the codec trains with ddp")
    run_dir, resume_state = common.setup(cfg, info, resume)
    dev = info.device
    say = print if info.is_main else (lambda _m: None)
    frozen = list(cfg.model.freeze)
    model = set_training(build_codec(cfg, source).to(dev), frozen)
    d = cfg.discriminator
    disc = MultiScaleSTFTDiscriminator(d.filters, model.channels, d.n_ffts, d.hop_lengths, d.win_lengths).to(dev)
    sr = model.sample_rate

    train_entries, valid_entries = common.datasets(cfg.data, cfg.train.seed, info, say)
    if cfg.data.batch_size % info.world:
        raise InvalidArgumentError(f"data.batch_size {cfg.data.batch_size} must be divisible by the {info.world} "
                                   "processes")
    train_set = AudioDataset(train_entries, sr, model.channels, cfg.data.segment_seconds, cfg.train.seed)

    losses_cfg = cfg.losses
    msspec = MultiScaleMelLoss(sr, cfg.msspec.range_start, cfg.msspec.range_end, cfg.msspec.n_mels,
                               cfg.msspec.f_min, cfg.msspec.f_max, cfg.msspec.normalized).to(dev)
    mel_l1 = MelSpectrogram(sr, 1024, 256, n_mels=64, f_min=64.0, log=True).to(dev)
    adversarial = losses_cfg.adv > 0 or losses_cfg.feat > 0
    balancer = Balancer({"l1": losses_cfg.l1, "msspec": losses_cfg.msspec, "mel": losses_cfg.mel,
                         "adv": losses_cfg.adv, "feat": losses_cfg.feat}, cfg.balancer.balance_grads,
                        cfg.balancer.total_norm, cfg.balancer.ema_decay, cfg.balancer.per_batch_item,
                        all_reduce_mean=distributed.all_reduce_mean if info.distributed else None)
    if not balancer.weights:
        raise InvalidArgumentError(f"{source}: losses: at least one of l1, msspec, mel, adv, feat must be > 0")

    model_w = distributed.wrap(model, info, "ddp")
    disc_w = distributed.wrap(disc, info, "ddp") if adversarial else disc
    opt = optim.adamw(model.named_parameters(), cfg.optim)
    opt_d = optim.adamw(disc.named_parameters(), cfg.optim)
    sched = optim.scheduler(opt, cfg.optim, cfg.train.max_steps)
    ema = optim.WeightEMA(model, cfg.ema.decay) if cfg.ema.use else None
    start, skipped_total = 0, 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        disc.load_state_dict(resume_state["discriminator"])
        opt.load_state_dict(resume_state["optimizer"])
        opt_d.load_state_dict(resume_state["disc_optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        balancer.load_state_dict(resume_state["balancer"])
        if ema is not None and resume_state.get("ema") is not None:
            ema.load_state_dict(resume_state["ema"])
        common.restore_rng(resume_state, info, say)
        start, skipped_total = int(resume_state["step"]), int(resume_state.get("skipped", 0))
    if frozen:
        say(f"codec: {', '.join(frozen)} frozen; training {count_parameters(model):,} of "
            f"{count_parameters(model, trainable=False):,} parameters")
    say(f"codec: {count_parameters(model):,} parameters, discriminator {count_parameters(disc):,}; "
        f"{len(train_entries)} train / {len(valid_entries)} valid files; global batch {cfg.data.batch_size} on "
        f"{info.world} process(es), {dev}")

    logger = TrainLogger(run_dir, cfg.log, info.is_main, cfg.train.max_steps, start, "training codec")
    skips = common.SkipCounter(info, logger.write, skipped_total)
    stop = common.StopRequest()
    sampler = GlobalBatchSampler(len(train_set), cfg.data.batch_size, info.rank, info.world, cfg.train.seed,
                                 start_step=start, max_steps=cfg.train.max_steps)

    step = start
    last_log, last_log_step, interval = time.time(), start, IntervalMean()
    try:
        for batch in common.loader(train_set, sampler, collate_audio, cfg.data.num_workers):
            skips.add(batch["skipped"])
            x = batch["wav"].to(dev)  # [B, C, T]
            B = x.shape[0]
            fresh = [not bool(cb.inited) for cb in model.quantizer.codebooks]
            warming = step < d.warmup_steps
            if warming:  # the discriminator learns alone against the fixed codec
                metrics = {"d_loss": _discriminator_warmup_step(model, disc_w, opt_d, x)}
            else:
                out = model_w(x)
                y = out.audio  # [B, C, T]
                metrics = {}

                if adversarial and step % d.every == 0:
                    metrics["d_loss"] = _discriminator_step(disc_w, opt_d, y.detach(), x)

                losses: dict[str, Tensor] = {}
                if losses_cfg.l1 > 0:
                    losses["l1"] = F.l1_loss(y, x)
                if losses_cfg.msspec > 0:
                    losses["msspec"] = msspec(y, x)
                if losses_cfg.mel > 0:
                    losses["mel"] = F.l1_loss(mel_l1(y), mel_l1(x))
                if adversarial:
                    disc.requires_grad_(False)  # the generator's losses move the codec only
                    logits, fmaps = disc(torch.cat([y, x]))
                    disc.requires_grad_(True)
                    losses["adv"] = generator_adv_loss([lg[:B] for lg in logits])
                    losses["feat"] = feature_matching_loss([[f[:B] for f in fm] for fm in fmaps],
                                                           [[f[B:] for f in fm] for fm in fmaps])
                grad_y, g_loss = balancer.gradient(losses, y)
                opt.zero_grad(set_to_none=True)
                if losses_cfg.commit > 0 and out.commit_loss.requires_grad:
                    torch.autograd.backward([y, out.commit_loss * losses_cfg.commit], [grad_y, None])
                else:
                    y.backward(grad_y)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_norm or float("inf"))
                opt.step()
                sched.step()
                if info.distributed and "quantizer" not in frozen:
                    sync_codebooks(model, fresh)
                metrics.update({k: v.item() for k, v in losses.items()})
                metrics.update({"g_loss": g_loss.item(), "commit": out.commit_loss.item(),
                                "grad_norm": float(grad_norm), **balancer.metrics})
            step += 1
            if ema is not None and not warming and step % cfg.ema.every == 0:
                ema.update(model)

            interval.add(metrics)
            logger.advance(metrics if warming else
                           {"g_loss": metrics["g_loss"], **({"l1": metrics["l1"]} if "l1" in metrics else {})})
            if step % cfg.log.every == 0 or step == cfg.train.max_steps:
                elapsed, last_log = time.time() - last_log, time.time()
                steps_per_s, last_log_step = (step - last_log_step) / max(elapsed, 1e-9), step
                logger.scalars(step, "train", {**interval.pop(), "lr": sched.get_last_lr()[0],
                                               "skipped_files": skips.total, "steps_per_s": steps_per_s})
            if step == d.warmup_steps:
                logger.write(f"step {step}: discriminator warm-up done (d_loss {metrics['d_loss']:.4f}); "
                             "the codec trains from here")
            final = step == cfg.train.max_steps
            if valid_entries and (final or (cfg.log.valid_every and step % cfg.log.valid_every == 0)):
                vm = validate(model, valid_entries, cfg, info)
                set_training(model, frozen)
                logger.scalars(step, "valid", vm)
                logger.write(f"step {step} valid: {format_metrics(vm)}")
            every = cfg.log.samples_every
            if cfg.log.num_samples and every >= 0 and (final or (every and step % every == 0)):
                _samples(logger, step, model, valid_entries or train_entries, cfg)
                set_training(model, frozen)
            stopping = stop.check()
            if final or stopping or step % cfg.checkpoint.every == 0:
                folder = _save(run_dir, step, cfg, info, model, disc, opt, opt_d, sched, balancer, ema, skips.total)
                logger.write(f"step {step}: checkpoint {folder}")
            common.maybe_kill(step)
            if stopping:
                logger.write(f"stopped at step {step} (SIGTERM); continue with --resume")
                break
    finally:
        logger.close()
        stop.close()
    final_dir = run_dir / "model"
    if info.is_main and step == cfg.train.max_steps:
        latest = ckpt_state.latest_checkpoint(run_dir)
        import shutil

        ckpt_state.replace_folder(lambda tmp: shutil.copytree(latest / ckpt_state.MODEL_DIR, tmp), final_dir)
        say(f"done: {final_dir} (codec folder; train an LM on it with model.codec: {final_dir}); "
            f"{skips.total} file(s) skipped")
    distributed.barrier()
    return final_dir


def _discriminator_step(disc: nn.Module, opt_d: torch.optim.Optimizer, y: Tensor, x: Tensor) -> float:
    """One hinge-loss step of the discriminator on reconstructions ``y`` (detached) and originals ``x`` [B, C, T],
    in one forward (under DDP, one sync). Its loss."""
    B = x.shape[0]
    logits, _ = disc(torch.cat([y, x]))
    d_loss = discriminator_loss([lg[:B] for lg in logits], [lg[B:] for lg in logits])
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    return d_loss.item()


def _discriminator_warmup_step(model: CompressionModel, disc: nn.Module, opt_d: torch.optim.Optimizer,
                               x: Tensor) -> float:
    """One warm-up step: the codec reconstructs ``x`` [B, C, T] in eval mode, without gradients (its weights,
    codebooks and EMA statistics stay as they are); the discriminator takes its step. Its loss."""
    was_training = [m.training for m in model.modules()]
    model.eval()
    with torch.no_grad():
        y = model(x).audio  # [B, C, T]
    for m, t in zip(model.modules(), was_training):
        m.train(t)
    return _discriminator_step(disc, opt_d, y, x)


@torch.no_grad()
def sync_codebooks(model: CompressionModel, fresh: list[bool]) -> None:
    """Keep the codebooks identical on every process: a codebook that k-means just initialised takes rank 0's
    state; the others average their EMA statistics (counts, sums, codewords) over processes."""
    for codebook, was_fresh in zip(model.quantizer.codebooks, fresh):
        for buf in (codebook.embed, codebook.embed_avg, codebook.cluster_size, codebook.inited):
            if was_fresh:
                distributed.broadcast_(buf, 0)
            else:
                buf.copy_(distributed.all_reduce_mean(buf))


@torch.no_grad()
def validate(model: CompressionModel, entries: list[AudioEntry], cfg: CodecTrainConfig,
             info: distributed.DistInfo) -> dict[str, float]:
    """SI-SNR (dB, higher is better) and log-mel distance (lower is better) on fixed crops of the valid files."""
    model.eval()
    dataset = AudioDataset(entries, model.sample_rate, model.channels, cfg.data.segment_seconds, cfg.train.seed + 1)
    mel = MelDistance(model.sample_rate).to(info.device)
    totals = torch.zeros(3, device=info.device)  # si-snr sum, mel sum, items
    for batch in common.loader(dataset, common.valid_batches(len(entries), cfg.data.batch_size,
                                                              max(1, cfg.log.valid_batches), info), collate_audio, 0):
        x = batch["wav"].to(info.device)
        y = model(x).audio
        totals += torch.stack([si_snr(y, x).sum(), mel(y, x).sum(), x.new_tensor(float(x.shape[0]))])
    model.train()
    totals = distributed.all_reduce_sum(totals)
    return {"si_snr": (totals[0] / totals[2]).item(), "mel_distance": (totals[1] / totals[2]).item()}


@torch.no_grad()
def _samples(logger: TrainLogger, step: int, model: CompressionModel, entries: list[AudioEntry],
             cfg: CodecTrainConfig) -> None:
    if not logger.is_main:
        return
    model.eval()
    dataset = AudioDataset(entries, model.sample_rate, model.channels, cfg.data.segment_seconds, cfg.train.seed + 2)
    for i in range(min(cfg.log.num_samples, len(entries))):
        example = dataset[(i, i)]
        x = example.wav[None].to(next(model.parameters()).device)
        logger.audio(step, f"{i}_original", x[0], model.sample_rate)
        logger.audio(step, f"{i}_reconstruction", model(x).audio[0], model.sample_rate)
    model.train()


def _save(run_dir: Path, step: int, cfg: CodecTrainConfig, info: distributed.DistInfo, model: CompressionModel,
          disc: nn.Module, opt: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, sched: Any, balancer: Balancer,
          ema: optim.WeightEMA | None, skipped: int) -> Path:
    rngs = common.gathered_rng()
    folder = ckpt_state.checkpoint_dir(run_dir) / ckpt_state.step_name(step)
    if info.is_main:
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state = {"step": step, "data": {"samples_seen": step * cfg.data.batch_size, "world": info.world},
                 "model": weights, "discriminator": disc.state_dict(), "optimizer": opt.state_dict(),
                 "disc_optimizer": opt_d.state_dict(), "scheduler": sched.state_dict(),
                 "balancer": balancer.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                 "rng": rngs, "skipped": skipped, "config": to_dict(cfg)}
        export = dict(weights)
        if ema is not None:
            export.update({k: v.cpu() for k, v in ema.state_dict().items()})

        folder = ckpt_state.write_checkpoint_folder(run_dir, step, state, lambda tmp: save_codec(model, tmp, export),
                                                    cfg.checkpoint.keep_last)
    distributed.barrier()
    return folder
