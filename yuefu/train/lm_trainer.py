"""``yuefu train lm``: train MusicGen's language model on cached codec tokens, from scratch or from a checkpoint.

One step, as the generation loop sees it: the codes [B, K, F] of a crop are laid out by the codebook pattern into
a sequence [B, K, S] (step 0 empty), the LM reads steps 0..S-2 and predicts steps 1..S-1; the loss is the
cross-entropy of every cell that holds a real code (the pattern's ``valid`` cells, and frames before the end of a
short file), averaged per codebook and then over codebooks (audiocraft's definition). The LM forward is the same
``LMModel.forward`` (start=None) that generation uses, and texts go through the same conditioner, with condition
dropout (the null text) for classifier-free guidance and word dropout.

Each step's loss is normalised by the number of target cells in the whole global batch (and texts are padded to
the longest of it), so that with DDP/FSDP averaging gradients over N processes, and with gradients accumulated over
``train.grad_accum`` micro-batches, the update is the one a single process would make on the global batch. With
``loss.onset_seconds`` the targets of each crop's first seconds weigh ``loss.onset_weight`` times the rest (the
logged training loss is then that weighted mean; validation's is always the plain one).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yuefu.conditioners import tempo
from yuefu.config import LMConfig, MusicGenConfig
from yuefu.data.dataset import GlobalBatchSampler, read_segment
from yuefu.data.manifest import AudioEntry
from yuefu.data.sidecar import TextAugment
from yuefu.data.token_cache import TokenCache, TokenDataset, collate_tokens, fill_cache, state_fingerprint
from yuefu.errors import InvalidArgumentError
from yuefu.lm.model import LMModel
from yuefu.lm.patterns import CodebookPattern, make_pattern
from yuefu.train import common, distributed, lora, optim
from yuefu.train import state as ckpt_state
from yuefu.train.config import LMTrainConfig, from_dict, to_dict
from yuefu.train.logger import IntervalMean, TrainLogger, format_metrics
from yuefu.train.models import build_text_conditioner, count_parameters, load_codec, write_musicgen

ENCODE_CHUNK_SECONDS = 300.0  # longer files are encoded in windows of this length


class LMTrainModule(nn.Module):
    """What DDP/FSDP wrap and the optimizer updates: the LM and the text projection. The frozen text encoder is
    kept outside the module tree (not trained, sharded or saved here) and called through the conditioner."""

    def __init__(self, lm: LMModel, conditioner: nn.Module):
        super().__init__()
        self.lm = lm
        self.text_proj = conditioner.output_proj
        self.tempo_proj = conditioner.tempo_proj  # None without a tempo condition
        object.__setattr__(self, "conditioner", conditioner)

    def forward(self, sequence: Tensor, texts: list[str | None], text_length: int | None = None,
                first_frame: Tensor | None = None, frame_rate: float | None = None) -> Tensor:
        """sequence [B, K, S] -> logits [B, K, S, card], conditioned on ``texts`` (None: the null condition).

        Texts are padded to the longest of the batch and cross-attention sees the padding (zero vectors), as in
        audiocraft; they are padded to ``text_length`` (default: the longest of the *global* batch, over all
        processes), so that N processes or N micro-batches compute what one batch would. A model with a beat
        clock gets, at position ``s`` of row ``b``, the phase of frame ``first_frame[b] + s`` (default 0) at the
        BPM its text states; ``frame_rate`` (the codec's, frames per second) is then required.
        """
        cond, _ = self.conditioner(texts)  # [B, L, D], zeros for null texts and padding
        length = distributed.all_reduce_max_int(cond.shape[1]) if text_length is None else text_length
        cond = F.pad(cond, (0, 0, 0, length - cond.shape[1]))
        if not cond.requires_grad and any(p.requires_grad for p in self.text_proj.parameters()):
            # an all-null batch: keep the projection in the graph, so every process reduces the same gradients
            cond = cond + 0.0 * sum(p.sum() for p in self.text_proj.parameters())
        if self.tempo_proj is not None and any(p.requires_grad for p in self.tempo_proj.parameters()):
            cond = cond + 0.0 * sum(p.sum() for p in self.tempo_proj.parameters())  # the same for a batch with no BPM
        clock = None
        bpm = self.conditioner.clock_bpm(texts)  # [B] (NaN: none) or None
        if bpm is not None:
            if frame_rate is None:
                raise ValueError("a model with a beat clock needs the codec's frame_rate")
            steps = torch.arange(sequence.shape[-1], device=bpm.device)  # [S]
            first = torch.zeros_like(steps[:1]) if first_frame is None else first_frame.to(bpm.device)  # [B] or [1]
            frames = first.view(-1, 1) + steps.view(1, -1)  # [B, S] (or [1, S]: every row from frame 0)
            clock = self.conditioner.clock(bpm, frames.expand(len(texts), -1), frame_rate)  # [B, S, D]
        return self.lm(sequence, cross_src=cond, frame_cond=clock)


@dataclasses.dataclass
class Built:
    """The models of a run."""

    lm: LMModel
    conditioner: nn.Module
    codec: nn.Module
    config: MusicGenConfig


def build_models(cfg: LMTrainConfig, source: str = "config") -> Built:
    m = cfg.model
    if m.beat_clock and not m.tempo:
        raise InvalidArgumentError(f"{source}: model.beat_clock needs model.tempo: true (the clock reads its BPM)")
    if m.init_from is not None:
        from yuefu.musicgen import MusicGen

        mg = MusicGen.from_pretrained(m.init_from, device="cpu")
        if mg.config.melody:
            raise InvalidArgumentError(f"{source}: model.init_from {m.init_from} is a melody model; fine-tuning "
                                       "those (prepended chroma) is not supported by this version")
        mcfg = copy.deepcopy(mg.config)
        if m.max_duration is not None:
            mcfg.max_duration = m.max_duration
        lm, conditioner, codec = mg.lm.float(), mg.conditioner, mg.compression_model
        if m.tempo and conditioner.tempo_proj is None:
            conditioner.add_tempo()
            mcfg.text.tempo = True
        if m.beat_clock and conditioner.tempo_proj is not None and conditioner.tempo_proj.clock is None:
            conditioner.tempo_proj.add_clock()
            mcfg.text.beat_clock = True
    else:
        codec = load_codec(m.codec)
        interleave = m.channels == 2 and codec.channels == 1
        if codec.channels != m.channels and not interleave:
            raise InvalidArgumentError(f"{source}: model.channels {m.channels} does not fit a codec with "
                                       f"{codec.channels} channels")
        per_channel = list(range(codec.n_q))
        derived: dict[str, Any] = {"n_q": codec.n_q * (2 if interleave else 1), "card": codec.cardinality,
                                   "delays": [d for d in per_channel for _ in range(2)] if interleave else per_channel}
        if "dim" in m.lm and "ffn_dim" not in m.lm:
            derived["ffn_dim"] = 4 * int(m.lm["dim"])
        lm_cfg = from_dict(LMConfig, {**derived, **m.lm}, source, "model.lm.")
        if lm_cfg.card != codec.cardinality or lm_cfg.n_q != derived["n_q"]:
            raise InvalidArgumentError(f"{source}: model.lm card {lm_cfg.card} / n_q {lm_cfg.n_q} must match the "
                                       f"codec ({codec.cardinality} entries, {derived['n_q']} codebooks)")
        if lm_cfg.dim % lm_cfg.num_heads:
            raise InvalidArgumentError(f"{source}: model.lm.dim {lm_cfg.dim} is not divisible by num_heads")
        if not lm_cfg.cross_attention:
            raise InvalidArgumentError(f"{source}: model.lm.cross_attention false (prepended conditions) cannot be "
                                       "trained by this version")
        lm = LMModel(lm_cfg)
        lm.reset_parameters()
        conditioner = build_text_conditioner(m.text, lm_cfg.dim)
        text_cfg = dataclasses.replace(m.text, encoder_dim=conditioner.output_proj.in_features, tempo=m.tempo,
                                       beat_clock=m.beat_clock)
        if m.tempo:
            conditioner.add_tempo(beat_clock=m.beat_clock)
        mcfg = MusicGenConfig(codec=codec.config, lm=lm_cfg, text=text_cfg, channels=m.channels,
                              max_duration=m.max_duration or cfg.data.segment_seconds,
                              name=Path(cfg.run_dir).name)
    if m.lora.use:
        lora.apply_lora(lm, m.lora)
        conditioner.output_proj.requires_grad_(False)
    else:
        lm.requires_grad_(True)
        conditioner.output_proj.requires_grad_(True)
    if conditioner.tempo_proj is not None:  # new (or kept) tempo token: trained under LoRA too, it is tiny
        conditioner.tempo_proj.requires_grad_(True)
    return Built(lm, conditioner, codec.eval(), mcfg)


def encoder_for(codec: nn.Module, channels: int, device: torch.device):
    """entry -> codes [K, frames]; stereo through a mono codec interleaves [L1, R1, L2, R2, ...]."""
    hop = codec.hop_length
    chunk = int(ENCODE_CHUNK_SECONDS * codec.sample_rate) // hop * hop

    @torch.no_grad()
    def encode_mono(wav: Tensor) -> Tensor:  # [C, T] -> [K, frames]
        parts = [codec.encode(wav[None, :, i:i + chunk].to(device))[0] for i in range(0, wav.shape[-1], chunk)]
        return torch.cat(parts, dim=-1).cpu()

    def encode(entry: AudioEntry) -> Tensor:
        wav = read_segment(entry.path, 0.0, None, codec.sample_rate, channels)  # [C, T]
        if channels == codec.channels:
            return encode_mono(wav)
        left, right = encode_mono(wav[0:1]), encode_mono(wav[1:2])
        return torch.stack([left, right], dim=1).flatten(0, 1)  # [2K, frames]

    return encode


def lm_loss(logits: Tensor, sequence: Tensor, mask: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-codebook summed cross-entropy and target counts.

    logits [B, K, S-1, card] are the LM outputs for steps 0..S-2; sequence [B, K, S] the pattern sequence whose
    steps 1..S-1 are the targets; mask [B, K, S-1] the target cells that hold a real code; weight [K, S-1] (optional)
    weighs each target, and then the counts are the summed weights. -> ([K], [K]).
    """
    targets = sequence[..., 1:].masked_fill(~mask, 0)
    ce = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(), reduction="none").view_as(mask)
    w = mask.float() if weight is None else mask * weight.to(mask.device)  # [B, K, S-1]
    return (ce * w).sum(dim=(0, 2)), w.sum(dim=(0, 2))


def target_mask(pattern: CodebookPattern, lengths: Tensor) -> Tensor:
    """[B, K, S-1]: target step s+1 of codebook k holds a code of a frame the example really has."""
    frame = pattern.timestep[:, 1:].to(lengths.device)  # [K, S-1]
    return (frame >= 0) & (frame < lengths[:, None, None])


def onset_weights(pattern: CodebookPattern, onset_frames: int, onset_weight: float) -> Tensor | None:
    """[K, S-1]: ``onset_weight`` for targets in a crop's first ``onset_frames`` frames, 1 for the rest (the frame
    a target holds, not its step: the delay pattern puts codebook k's frame f at step f + k + 1). None when every
    weight would be 1."""
    if onset_frames <= 0 or onset_weight == 1.0:
        return None
    frame = pattern.timestep[:, 1:]  # [K, S-1], -1 where no frame
    weight = torch.ones(frame.shape)
    weight[(frame >= 0) & (frame < onset_frames)] = onset_weight
    return weight


def train_lm(cfg: LMTrainConfig, resume: bool = False, source: str = "config") -> Path:
    """Run (or continue) an LM training; returns the folder of the final model."""
    info = distributed.init(cfg.train.device)
    threads = torch.get_num_threads()
    try:
        return _train(cfg, info, resume, source)
    finally:
        torch.set_num_threads(threads)  # train.threads applies to the run only
        distributed.shutdown()


def _train(cfg: LMTrainConfig, info: distributed.DistInfo, resume: bool, source: str) -> Path:
    run_dir, resume_state = common.setup(cfg, info, resume)
    dev = info.device
    built = build_models(cfg, source)
    lm, conditioner, codec, mcfg = built.lm, built.conditioner, built.codec, built.config
    lm.to(dev)
    conditioner.to(dev)
    codec.to(dev)
    say = print if info.is_main else (lambda _m: None)

    # --- data: tokens cached once -----------------------------------------------------------------------------
    train_entries, valid_entries = common.datasets(cfg.data, cfg.train.seed, info, say)
    cache_dir = Path(cfg.data.token_cache).expanduser() if cfg.data.token_cache else run_dir / "token_cache"
    cache = TokenCache(cache_dir, state_fingerprint(dataclasses.asdict(codec.config), mcfg.channels,
                                                    codec.state_dict()))
    bar = _progress_bar if info.is_main and cfg.log.progress else None
    report = fill_cache(train_entries + valid_entries, cache, encoder_for(codec, mcfg.channels, dev), info.rank,
                        info.world, progress=bar, barrier=distributed.barrier)
    for path, reason in report.skipped:
        say(f"skipped {path}: {reason}")
    usable = {id(e) for e in report.entries}
    train_entries = [e for e in train_entries if id(e) in usable]
    valid_entries = [e for e in valid_entries if id(e) in usable]
    if not train_entries:
        raise InvalidArgumentError(f"data.path {cfg.data.path}: no file could be encoded")
    accum = cfg.train.grad_accum
    if cfg.data.batch_size % (info.world * accum):
        raise InvalidArgumentError(f"data.batch_size {cfg.data.batch_size} must be divisible by the {info.world} "
                                   f"process(es) x train.grad_accum {accum}")
    frames = max(1, round(cfg.data.segment_seconds * codec.frame_rate))
    d = cfg.data
    aug = TextAugment(d.merge_text_p, d.drop_desc_p, d.drop_other_p, d.word_dropout, d.cond_dropout, d.caption_p)
    train_set = TokenDataset(train_entries, cache, frames, cfg.train.seed, aug)
    pattern = make_pattern(mcfg.lm.pattern, mcfg.lm.n_q, frames, mcfg.lm.delays)
    weight = onset_weights(pattern, round(cfg.loss.onset_seconds * codec.frame_rate), cfg.loss.onset_weight)

    # --- model, optimizer, state ------------------------------------------------------------------------------
    module = LMTrainModule(lm, conditioner)
    if cfg.train.distributed == "fsdp" and info.distributed and cfg.model.lora.use:
        raise InvalidArgumentError("train.distributed fsdp with LoRA is not supported: use ddp (adapters are small)")
    model = distributed.wrap(module, info, cfg.train.distributed, blocks=list(lm.layers))
    opt = optim.adamw(module.named_parameters(), cfg.optim)
    sched = optim.scheduler(opt, cfg.optim, cfg.train.max_steps)
    amp = optim.resolve_precision(cfg.train.precision, dev)
    if (warning := optim.precision_warning(amp, dev)) is not None:
        say(warning)
    scaler = optim.grad_scaler(dev, amp)
    ema = optim.WeightEMA(module, cfg.ema.decay) if cfg.ema.use else None
    start, skipped_total = 0, 0
    if resume_state is not None:
        distributed.load_full_state_dict(model, resume_state["model"])
        distributed.load_optimizer_state(model, opt, resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        if ema is not None and resume_state.get("ema") is not None:
            _load_ema(ema, resume_state["ema"])
        common.restore_rng(resume_state, info, say)
        start, skipped_total = int(resume_state["step"]), int(resume_state.get("skipped", 0))
    say(f"LM: {count_parameters(module):,} trainable parameters; {len(train_entries)} train / {len(valid_entries)} "
        f"valid files; {frames} frames per example; global batch {cfg.data.batch_size} on {info.world} "
        f"process(es), {dev}{', autocast ' + str(amp).removeprefix('torch.') if amp else ''}")

    logger = TrainLogger(run_dir, cfg.log, info.is_main, cfg.train.max_steps, start, "training lm")
    skips = common.SkipCounter(info, logger.write, skipped_total)
    stop = common.StopRequest()
    sampler = GlobalBatchSampler(len(train_set), cfg.data.batch_size, info.rank, info.world, cfg.train.seed,
                                 start_step=start, max_steps=cfg.train.max_steps)
    params = [p for p in module.parameters() if p.requires_grad]

    def save(step: int) -> Path:
        return _save(run_dir, step, cfg, info, model, module, opt, sched, scaler, ema, skips.total, codec,
                     conditioner, mcfg)

    step = start
    last_log, last_log_step, interval = time.time(), step, IntervalMean()
    try:
        for batch in common.loader(train_set, sampler, collate_tokens, cfg.data.num_workers):
            skips.add(batch["skipped"])
            codes, lengths, texts = batch["codes"].to(dev), batch["length"].to(dev), batch["text"]
            first = batch["start"]  # [B] each crop's first frame in its file (the beat clock's phase)
            seq = pattern.build(codes, mcfg.lm.special_token)  # [B, K, S]
            mask = target_mask(pattern, lengths)  # [B, K, S-1]
            w = mask.float() if weight is None else mask * weight.to(dev)  # [B, K, S-1]
            count_all = distributed.all_reduce_sum(w.sum(dim=(0, 2)))  # [K] (weighted) targets in the global batch
            text_length = None
            if accum > 1:
                text_length = distributed.all_reduce_max_int(conditioner.output_length(texts))
            ce_sum = torch.zeros(mcfg.lm.n_q, device=dev)
            micro = seq.shape[0] // accum
            for i in range(accum):
                part = slice(i * micro, (i + 1) * micro)
                with _grad_sync(model, i == accum - 1):
                    with optim.autocast(dev, amp):
                        logits = model(seq[part, :, :-1], texts[part], text_length, first[part],
                                       codec.frame_rate)  # [b, K, S-1, card]
                    ce, _ = lm_loss(logits, seq[part], mask[part], weight)
                    # mean over the global batch's targets, per codebook; processes' gradients are averaged
                    loss = (ce / count_all.clamp(min=1)).mean() * info.world
                    scaler.scale(loss).backward()
                ce_sum += ce.detach()
            scaler.unscale_(opt)
            grad_norm = _clip(params, cfg.optim.max_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if ema is not None and step % cfg.ema.every == 0:
                ema.update(module)

            ce_all = distributed.all_reduce_sum(ce_sum.detach())
            per_k = (ce_all / count_all.clamp(min=1)).tolist()
            loss_mean = sum(per_k) / len(per_k)
            interval.add({"loss": loss_mean, **{f"ce_{k}": v for k, v in enumerate(per_k)},
                          "grad_norm": float(grad_norm)})
            logger.advance({"loss": loss_mean, "lr": sched.get_last_lr()[0]})
            if step % cfg.log.every == 0 or step == cfg.train.max_steps:
                elapsed, last_log = time.time() - last_log, time.time()
                steps_per_s, last_log_step = (step - last_log_step) / max(elapsed, 1e-9), step
                logger.scalars(step, "train", {**interval.pop(), "lr": sched.get_last_lr()[0],
                                               "skipped_files": skips.total, "steps_per_s": steps_per_s})
            final = step == cfg.train.max_steps
            if valid_entries and (final or (cfg.log.valid_every and step % cfg.log.valid_every == 0)):
                metrics = validate(model, valid_entries, cache, frames, pattern, cfg, info, mcfg, amp,
                                   codec.frame_rate)
                logger.scalars(step, "valid", metrics)
                logger.write(f"step {step} valid: {format_metrics(metrics)}")
            every = cfg.log.samples_every
            if cfg.log.num_samples and every >= 0 and (final or (every and step % every == 0)):
                _samples(logger, step, cfg, info, model, lm, conditioner, codec, mcfg, valid_entries or train_entries)
            stopping = stop.check()
            if final or stopping or step % cfg.checkpoint.every == 0:
                folder = save(step)
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
        ckpt_state.replace_folder(lambda tmp: _copy_tree(latest / ckpt_state.MODEL_DIR, tmp), final_dir)
        if cfg.model.lora.use and (latest / "adapters").exists():
            ckpt_state.replace_folder(lambda tmp: _copy_tree(latest / "adapters", tmp), run_dir / "adapters")
        say(f"done: {final_dir} (load it with yuefu.MusicGen.from_pretrained); {skips.total} file(s) skipped")
    distributed.barrier()
    return final_dir


@torch.no_grad()
def _grad_sync(model: nn.Module, sync: bool):
    """Reduce gradients over processes only on the last micro-batch of a step (DDP ``no_sync``, FSDP's switch)."""
    import contextlib

    if sync:
        return contextlib.nullcontext()
    if distributed.is_fsdp(model):
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return restore()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def _clip(params: list[nn.Parameter], max_norm: float) -> Tensor:
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.clip_grad_norm_(params, float("inf"))


@torch.no_grad()
def validate(model: nn.Module, entries: list[AudioEntry], cache: TokenCache, frames: int, pattern: CodebookPattern,
             cfg: LMTrainConfig, info: distributed.DistInfo, mcfg: MusicGenConfig,
             amp: torch.dtype | None, frame_rate: float) -> dict[str, float]:
    """Cross-entropy and perplexity per codebook on fixed crops of the valid files (plain descriptions).

    ``text_gain`` is how much the text helps: the loss with each item's description swapped for another item's
    (the batch rolled by one) minus the loss with its own. Near zero, the model ignores its prompt. Models with a
    tempo condition also get ``tempo_gain``: the same with only the stated BPM changed (x1.5 up to 120 BPM, else
    /1.5), over the items whose description states one, and, with ``loss.onset_seconds``, ``onset_tempo_gain``:
    the same over the crops' first seconds only, where the context has not yet revealed the tempo.
    """
    dataset = TokenDataset(entries, cache, frames, seed=cfg.train.seed + 1, text=None)
    global_batch = cfg.data.batch_size // cfg.train.grad_accum  # what fits, as in training
    batches = common.valid_batches(len(entries), global_batch, max(1, cfg.log.valid_batches), info)
    ce_total = torch.zeros(mcfg.lm.n_q, device=info.device)
    count_total = torch.zeros(mcfg.lm.n_q, device=info.device)
    swapped = torch.zeros(2, device=info.device)  # [summed CE with swapped texts, its count], batches of 2 or more
    own = torch.zeros(2, device=info.device)  # the same with the items' own texts, on those batches
    tempo_gain = torch.zeros(2, device=info.device)  # [summed CE difference with another BPM, its count]
    onset_gain = torch.zeros(2, device=info.device)  # the same over the onset frames
    has_tempo = mcfg.text.tempo
    onset_frames = round(cfg.loss.onset_seconds * frames / cfg.data.segment_seconds)
    frame = pattern.timestep[:, 1:].to(info.device)  # [K, S-1]
    onset = (frame >= 0) & (frame < onset_frames)  # [K, S-1]
    for batch in common.loader(dataset, batches, collate_tokens, 0):
        codes, lengths = batch["codes"].to(info.device), batch["length"].to(info.device)
        seq = pattern.build(codes, mcfg.lm.special_token)
        mask = target_mask(pattern, lengths)
        texts = batch["text"]
        first = batch["start"]
        with optim.autocast(info.device, amp):
            logits = logits_own = model(seq[..., :-1], texts, None, first, frame_rate)
        ce, count = lm_loss(logits, seq, mask)
        ce_total += ce
        count_total += count
        if len(texts) > 1:
            with optim.autocast(info.device, amp):
                logits = model(seq[..., :-1], texts[1:] + texts[:1], None, first, frame_rate)
            ce_swapped, _ = lm_loss(logits, seq, mask)
            swapped += torch.stack([ce_swapped.sum(), count.sum()])
            own += torch.stack([ce.sum(), count.sum()])
        other = [tempo.restate_bpm(t, 1.5 if (tempo.parse_bpm(t) or 0) <= 120 else 1 / 1.5) if t else None
                 for t in texts] if has_tempo else []
        rows = [i for i, t in enumerate(other) if t is not None]
        if rows:
            with optim.autocast(info.device, amp):
                logits = model(seq[rows, :, :-1], [other[i] for i in rows], None, first[rows], frame_rate)
            ce_other, count_other = lm_loss(logits, seq[rows], mask[rows])
            ce_own, _ = lm_loss(logits_own[rows], seq[rows], mask[rows])
            tempo_gain += torch.stack([ce_other.sum() - ce_own.sum(), count_other.sum()])
            if onset_frames > 0:
                m = mask[rows] & onset
                ce_other, count_other = lm_loss(logits, seq[rows], m)
                ce_own, _ = lm_loss(logits_own[rows], seq[rows], m)
                onset_gain += torch.stack([ce_other.sum() - ce_own.sum(), count_other.sum()])
    per_k = (distributed.all_reduce_sum(ce_total) / distributed.all_reduce_sum(count_total).clamp(min=1)).tolist()
    out = {"loss": sum(per_k) / len(per_k), "ppl": math.exp(sum(per_k) / len(per_k))}
    swapped, own = distributed.all_reduce_sum(swapped), distributed.all_reduce_sum(own)
    if own[1] > 0:
        out["text_gain"] = ((swapped[0] - own[0]) / own[1]).item()
    tempo_gain = distributed.all_reduce_sum(tempo_gain)
    if has_tempo and tempo_gain[1] > 0:
        out["tempo_gain"] = (tempo_gain[0] / tempo_gain[1]).item()
    onset_gain = distributed.all_reduce_sum(onset_gain)
    if has_tempo and onset_gain[1] > 0:
        out["onset_tempo_gain"] = (onset_gain[0] / onset_gain[1]).item()
    for k, v in enumerate(per_k):
        out[f"ce_{k}"] = v
        out[f"ppl_{k}"] = math.exp(v)
    return out


def _samples(logger: TrainLogger, step: int, cfg: LMTrainConfig, info: distributed.DistInfo, model: nn.Module,
             lm: LMModel, conditioner: nn.Module, codec: nn.Module, mcfg: MusicGenConfig,
             entries: list[AudioEntry]) -> None:
    """Generate a few clips from the descriptions of the first files (rank 0; not under FSDP)."""
    if not info.is_main or distributed.is_fsdp(model):
        return
    from yuefu.data.sidecar import plain_text
    from yuefu.musicgen import MusicGen

    texts = [plain_text(e.info) for e in entries[: cfg.log.num_samples]]
    mg = MusicGen(mcfg.name, codec, lm, conditioner, mcfg)
    try:
        mg.set_generation_params(duration=cfg.log.sample_seconds, extend_stride=min(18.0, mcfg.max_duration * 0.6))
        wav = mg.generate([t or "" for t in texts], seed=cfg.train.seed) if any(texts) else \
            mg.generate_unconditional(len(texts), seed=cfg.train.seed)
    except Exception as e:  # a sample must never stop training
        logger.write(f"step {step}: could not generate samples ({e.__class__.__name__}: {e})")
        return
    for i, w in enumerate(wav):
        logger.audio(step, f"sample_{i}", w, mg.sample_rate)


def _full(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu().clone()


def _load_ema(ema: optim.WeightEMA, state: dict[str, Tensor]) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    for name, value in state.items():
        shadow = ema.shadow[name]
        if isinstance(shadow, DTensor):
            value = distribute_tensor(value.to(shadow.device), shadow.device_mesh, shadow.placements)
        shadow.copy_(value)


def _save(run_dir: Path, step: int, cfg: LMTrainConfig, info: distributed.DistInfo, model: nn.Module,
          module: LMTrainModule, opt: torch.optim.Optimizer, sched: Any, scaler: Any, ema: optim.WeightEMA | None,
          skipped: int, codec: nn.Module, conditioner: nn.Module, mcfg: MusicGenConfig) -> Path:
    """Every rank takes part (FSDP gathers); rank 0 writes."""
    weights = distributed.full_state_dict(model)
    opt_state = distributed.optimizer_state(model, opt)
    ema_state = {k: _full(v) for k, v in ema.state_dict().items()} if ema is not None else None
    rngs = common.gathered_rng()
    folder = ckpt_state.checkpoint_dir(run_dir) / ckpt_state.step_name(step)
    if info.is_main:
        state = {"step": step, "data": {"samples_seen": step * cfg.data.batch_size, "world": info.world},
                 "model": weights, "optimizer": opt_state, "scheduler": sched.state_dict(),
                 "scaler": scaler.state_dict(), "ema": ema_state, "rng": rngs, "skipped": skipped,
                 "config": to_dict(cfg)}
        export = dict(weights)
        if ema_state is not None:
            export.update(ema_state)  # the exported model carries the averaged weights
        lm_sd = {k.removeprefix("lm."): v for k, v in export.items() if k.startswith("lm.")}
        if cfg.model.lora.use:
            lm_sd = lora.merged_state_dict(lm_sd, cfg.model.lora.alpha / cfg.model.lora.rank)
        proj_sd = {k.removeprefix("text_proj."): v for k, v in export.items() if k.startswith("text_proj.")}
        tempo_sd = {k.removeprefix("tempo_proj."): v for k, v in export.items() if k.startswith("tempo_proj.")}

        def write_model(tmp: Path) -> None:
            write_musicgen(tmp, copy.deepcopy(mcfg), lm_sd, proj_sd, codec, conditioner, tempo_sd or None)
            if cfg.model.lora.use:
                adapters = {k.removeprefix("lm."): v for k, v in export.items()
                            if k.startswith("lm.") and ".lora_" in k}
                _write_adapters(tmp.parent / "adapters", adapters, cfg, info)

        folder = ckpt_state.write_checkpoint_folder(run_dir, step, state, write_model, cfg.checkpoint.keep_last)
    distributed.barrier()
    return folder


def _write_adapters(folder: Path, sd: dict[str, Tensor], cfg: LMTrainConfig, info: distributed.DistInfo) -> None:
    """Adapters beside the merged model, keyed ``{module}.lora_A/B`` (the parametrization path removed)."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    clean = {k.replace(".parametrizations.weight.0", ""): v.contiguous() for k, v in sd.items()}
    lc = cfg.model.lora
    meta = {"format": "yuefu-lora", "rank": lc.rank, "alpha": lc.alpha, "targets": list(lc.targets),
            "base_model": cfg.model.init_from}
    (folder / lora.ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))
    save_file(clean, str(folder / lora.ADAPTER_WEIGHTS))


def _copy_tree(src: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(src, dest)


def _progress_bar(items: list, total: int):
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc="encoding audio to tokens", unit="file", dynamic_ncols=True)
