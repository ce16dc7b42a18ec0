"""``yuefu eval``: a model against held-out renders of a corpus, beside baselines measured the same way.

:func:`evaluate` measures, on the valid split of a corpus that ``yuefu data render`` wrote:

- **codec**: log-mel distance (dB) and SI-SNR (dB) of the model's codec on every held-out clip, beside the same
  codec decoding its first codebook only;
- **adherence** of clips generated from held-out prompts (English ``description``, and separately the Chinese
  ``description_zh``), one clip per prompt:
  instrument family of the melody (the classifier of :mod:`yuefu.eval.classifier`, trained on the train split's
  real renders only), tempo error against the prompt's BPM (librosa), key and mode (Krumhansl-Schmuckler). The
  baseline is the same model given the prompts shuffled: slot j is judged against prompt j but holds the clip made
  from prompt ``derangement[j] != j`` (a fixed derangement; the clips are reused, so this costs no generation).
  Real clips and their codec resynthesis, judged against their own sidecars, show what the measures reach on
  audio that follows the prompt exactly;
- **FAD** (embedding space: :data:`yuefu.eval.features.FAD_EMBEDDING`) between the generated clips and all
  held-out real renders, beside the FAD of the codec's resynthesis of the prompts' own clips (as many clips, as
  long as the generated ones) against the same reference, and that of the real clips themselves (the floor that
  this few clips allow: they are part of the reference, so it is low, not zero).

With a prompt file (``--prompt-file``, :mod:`yuefu.eval.prompt_file`) the adherence rows judge free prompts of one's
own instead, against the instrument, BPM and key each line asks for; the rest is as above.

Everything is seeded: the prompt sample and the derangement come from ``random.Random(seed)``, batch b of the
generation uses seed ``seed + b`` (English and Chinese prompts the same seeds), the classifier is deterministic.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yuefu.errors import AudioFileError, InvalidArgumentError
from yuefu.eval import classifier as clf
from yuefu.eval import features as feat
from yuefu.eval.corpus import Clip, load_split, read_clip
from yuefu.eval.key import estimate_key, key_name, mirex_key_score, parse_key
from yuefu.eval.metrics import mel_distance, si_snr
from yuefu.eval.prompt_file import read_prompt_file
from yuefu.eval.tempo import estimate_tempo, octave_tempo_error, require_librosa, tempo_error

logger = logging.getLogger(__name__)

REPORT_VERSION = 3  # 2: prompt_source, reference_clips, tempo_clips, key_clips; tempo_ok null when no BPM was asked
#                    3: environment (machine, device, package versions); 95% bootstrap intervals over the prompts
BOOTSTRAP_RESAMPLES = 2000
LANGUAGES = ("en", "zh")
TARGETS = {"instrument_accuracy_over_chance": 3.0, "median_tempo_error_bpm": 8.0, "fad_over_codec": 2.0}


# --- prompts ------------------------------------------------------------------------------------------------------

def select_prompts(clips: Sequence[Clip], n: int, seed: int) -> list[Clip]:
    """``n`` clips drawn without replacement by ``random.Random(seed)`` (all of them, shuffled, if fewer)."""
    order = list(range(len(clips)))
    random.Random(seed).shuffle(order)
    return [clips[i] for i in order[:n]]


def derangement(n: int, seed: int) -> list[int]:
    """A permutation p of range(n) with p[j] != j for every j (one n-cycle through a seeded order); n >= 2."""
    if n < 2:
        raise InvalidArgumentError(f"a shuffled-prompt baseline needs at least 2 prompts, got {n}")
    order = list(range(n))
    random.Random(seed + 1).shuffle(order)
    p = [0] * n
    for k in range(n):
        p[order[k]] = order[(k + 1) % n]
    return p


# --- audio --------------------------------------------------------------------------------------------------------

def _finite(wav: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(wav.float(), nan=0.0, posinf=0.0, neginf=0.0)


def generate_clips(model: Any, prompts: Sequence[str], seed: int, batch_size: int = 8, progress: bool = True,
                   desc: str = "generating") -> tuple[list[torch.Tensor], list[str | None]]:
    """One mono clip [T] per prompt at ``model.sample_rate`` (generation parameters as set on the model), and the
    text the model's encoder saw for each (Chinese prompts are translated first)."""
    from tqdm.auto import tqdm

    wavs: list[torch.Tensor] = []
    used: list[str | None] = []
    bar = tqdm(total=len(prompts), unit="clip", desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for b, start in enumerate(range(0, len(prompts), batch_size)):
            batch = list(prompts[start:start + batch_size])
            wav = model.generate(batch, seed=seed + b)  # [B, C, T]
            wavs.extend(_finite(w.mean(0)).cpu() for w in wav)
            used.extend(getattr(model, "last_prompts_used", None) or batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return wavs, used


def codec_resynthesis(codec: torch.nn.Module, wavs: Sequence[torch.Tensor], batch_size: int = 4,
                      codebooks: Sequence[int | None] = (None, 1)) -> dict[int | None, list[torch.Tensor]]:
    """Encode and decode mono clips [T] (at the codec's rate) with their first k codebooks, for each k in
    ``codebooks`` (None: all); returns {k: clips [T], each cut to its source's length}."""
    device = next(codec.parameters()).device
    out: dict[int | None, list[torch.Tensor]] = {k: [] for k in codebooks}
    with torch.inference_mode():
        for start in range(0, len(wavs), batch_size):
            group = list(wavs[start:start + batch_size])
            length = max(w.shape[-1] for w in group)
            x = torch.stack([torch.nn.functional.pad(w, (0, length - w.shape[-1])) for w in group])[:, None]
            codes, scale = codec.encode_with_scale(x.to(device))  # [B, K, frames], [B, 1] or None
            for k in codebooks:
                y = codec.decode(codes if k is None else codes[:, :k], scale)  # [B, 1, T']
                out[k].extend(_finite(y[i, 0, : w.shape[-1]]).cpu() for i, w in enumerate(group))
    return out


# --- measures -----------------------------------------------------------------------------------------------------

def measure_clips(wavs: Sequence[torch.Tensor], sample_rate: int,
                  classifier: clf.InstrumentClassifier) -> list[dict[str, Any]]:
    """What each clip [T] sounds like: instrument family, tempo (BPM), key; plus its FAD embeddings (not in JSON)."""
    out = []
    for wav in wavs:
        logmel = feat.log_mel(wav, sample_rate)[0]  # [frames, 64]
        tonic, mode = estimate_key(wav, sample_rate)
        out.append({"family": classifier.predict([clf.window_features(logmel)])[0],
                    "tempo": round(estimate_tempo(wav, sample_rate), 2), "key": key_name(tonic, mode),
                    "_embeddings": feat.fad_embeddings(logmel)})
    return out


def _target(clip: Clip) -> dict[str, Any]:
    return {"family": clf.family_of(clip.lead), "bpm": clip.bpm, "key": clip.key}


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _bootstrap_stats(x: np.ndarray, idx: np.ndarray, statistic: str) -> np.ndarray:
    """The ``statistic`` of ``x`` [P, R] over each draw of prompts ``idx`` [B, P] -> [B] (NaN values left out)."""
    draws = x[idx].reshape(idx.shape[0], -1)  # [B, P * R]
    with warnings.catch_warnings():  # a draw of prompts that all lack the value: NaN, left out by the caller
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.nanmedian if statistic == "median" else np.nanmean)(draws, axis=1)


def _per_prompt(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x  # [P, R]


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: str = "mean",
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the ``statistic`` ("mean" or "median") of ``values``, over ``resamples``
    resamplings of the prompts with replacement: how much the figure owes to which prompts were drawn (and to each
    clip's one sampling). ``values``: one per prompt [P], or a prompt's clips at several seeds [P, R] (NaN: none),
    resampled together. None without values."""
    x = _per_prompt(values)
    if x.size == 0 or not np.isfinite(x).any():
        return None
    idx = np.random.default_rng(seed).integers(0, x.shape[0], size=(resamples, x.shape[0]))  # [B, P]
    lo, hi = np.nanpercentile(_bootstrap_stats(x, idx, statistic), [2.5, 97.5])
    return [float(lo), float(hi)]


def bootstrap_difference_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                            statistic: str = "mean", resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = 0) -> list[float] | None:
    """95% interval of ``statistic(a) - statistic(b)`` where row p of ``a`` and of ``b`` [P] or [P, R] are the same
    prompt (in two languages, say): each resampling draws the prompts once for both, so what the prompts share
    cancels and only the difference between the two sides is left to chance. None without values on both sides."""
    x, y = _per_prompt(a), _per_prompt(b)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"paired values need the same prompts: {x.shape[0]} and {y.shape[0]} rows")
    if x.size == 0 or not np.isfinite(x).any() or not np.isfinite(y).any():
        return None
    idx = np.random.default_rng(seed).integers(0, x.shape[0], size=(resamples, x.shape[0]))  # [B, P]
    lo, hi = np.nanpercentile(_bootstrap_stats(x, idx, statistic) - _bootstrap_stats(y, idx, statistic),
                              [2.5, 97.5])
    return [float(lo), float(hi)]


def adherence(measured: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]],
              num_classes: int) -> dict[str, float]:
    """Instrument, tempo and key agreement of measured clips with the targets they are judged against (same order)."""
    n = len(targets)
    hits = [m["family"] == t["family"] for m, t in zip(measured, targets)]
    timed = [(m, t) for m, t in zip(measured, targets) if t.get("bpm") is not None]  # a prompt file may omit them
    errors = [tempo_error(m["tempo"], t["bpm"]) for m, t in timed]
    octave = [octave_tempo_error(m["tempo"], t["bpm"]) for m, t in timed]
    keys = [(parse_key(m["key"]), parse_key(t["key"])) for m, t in zip(measured, targets) if t.get("key") is not None]
    return {
        "clips": n,
        "instrument_accuracy": sum(hits) / n,
        "instrument_accuracy_ci95": bootstrap_ci([float(h) for h in hits]),
        "instrument_chance": clf.chance_level([t["family"] for t in targets], num_classes),
        "tempo_clips": len(timed),
        "tempo_error_median_bpm": _median(errors),
        "tempo_error_median_ci95": bootstrap_ci(errors, "median"),
        "tempo_error_mean_bpm": _mean(errors),
        "tempo_error_octave_forgiven_median_bpm": _median(octave),
        "tempo_error_octave_forgiven_mean_bpm": _mean(octave),
        "key_clips": len(keys),
        "key_accuracy": _mean([e == r for e, r in keys]),
        "mode_accuracy": _mean([e[1] == r[1] for e, r in keys]),
        "key_mirex_score": _mean([mirex_key_score(e, r) for e, r in keys]),
    }


def _embeddings(measured: Sequence[dict[str, Any]]) -> torch.Tensor:
    return torch.cat([m["_embeddings"] for m in measured])  # [windows, 128]


def _public(measured: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if not k.startswith("_")} for m in measured]


# --- the classifier -----------------------------------------------------------------------------------------------

def fit_instrument_classifier(train: Sequence[Clip], progress: bool = True,
                              seed: int = 0) -> tuple[clf.InstrumentClassifier, float]:
    """The instrument-family classifier fitted on real renders (the corpus' train split, each clip as it is and
    with a noise floor: :func:`yuefu.eval.classifier.training_views`), and its accuracy on those clips as they are."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    views, labels, plain = [], [], []
    for c in tqdm(train, desc="classifier features (train)", unit="clip", disable=not progress, dynamic_ncols=True):
        clip_views = clf.training_views(feat.log_mel(read_clip(c, feat.SAMPLE_RATE))[0], rng)
        views += clip_views
        labels += [clf.family_of(c.lead)] * len(clip_views)
        plain.append(clip_views[0])
    model = clf.train_classifier(views, labels, seed=seed)
    return model, model.accuracy(plain, [clf.family_of(c.lead) for c in train])


def embed_clips(wavs: Sequence[torch.Tensor], sample_rate: int) -> torch.Tensor:
    """FAD embeddings of all windows of all clips [T]: [windows, 128]."""
    return torch.cat([feat.fad_embeddings(feat.log_mel(w, sample_rate)[0]) for w in wavs])


def codec_report(codec: torch.nn.Module, wavs: Sequence[torch.Tensor],
                 sample_rate: int) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Mean mel distance and SI-SNR of the codec on real clips [T] (and, as a baseline, of its first codebook
    alone); also returns the full resynthesis of every clip."""
    resynth = codec_resynthesis(codec, wavs)

    def scores(k: int | None) -> dict[str, float]:
        return {"mel_distance_db": float(np.mean([mel_distance(y, x, sample_rate) for y, x in zip(resynth[k], wavs)])),
                "si_snr_db": float(np.mean([si_snr(y, x) for y, x in zip(resynth[k], wavs)]))}

    return {"clips": len(wavs), **scores(None), "baseline_first_codebook": scores(1)}, resynth[None]


def classifier_report(classifier: clf.InstrumentClassifier, real: Sequence[torch.Tensor],
                      resynth: Sequence[torch.Tensor], labels: Sequence[str], sample_rate: int) -> dict[str, Any]:
    """The classifier's label set, chance level, and accuracy on held-out real clips [T] and their resynthesis."""

    def windows(wavs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [clf.window_features(feat.log_mel(w, sample_rate)[0]) for w in wavs]  # [W_i, 128] each

    k = len(clf.FAMILIES)
    return {
        "labels": "instrument family of the lead (render.lead)", "classes": classifier.classes, "num_classes": k,
        "families": {f: list(v) for f, v in clf.FAMILIES.items()},
        "model": f"MLP over 0.5 s windows (mean and std of 64 log-mel bands), hidden {clf.HIDDEN}, class-balanced, "
                 f"trained on each real clip as it is and with a noise floor {clf.FLOOR_DB[0]:g}-{clf.FLOOR_DB[1]:g} "
                 f"dB down; a clip's family maximises the sum of its windows' log-probabilities",
        "valid_clips": len(labels), "chance": clf.chance_level(labels, k),
        "accuracy_real_valid": classifier.accuracy(windows(real), labels),
        "accuracy_codec_resynth_valid": classifier.accuracy(windows(resynth), labels),
    }


# --- the whole evaluation -----------------------------------------------------------------------------------------

def environment(device: torch.device | str) -> dict[str, Any]:
    """What measured: machine, device and the versions of the packages the numbers depend on. Sampling is seeded,
    but the same seed on another CPU or torch build can sample other tokens, and librosa versions track beats
    differently, so reports compare like for like only within one environment."""
    import platform
    from importlib import metadata

    from yuefu.bench import machine

    packages = {}
    for name in ("yuefu", "torch", "numpy", "scipy", "librosa", "soundfile"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"machine": machine(), "device": str(device), "python": platform.python_version(), "packages": packages}


def _load_model(model: Any, device: str | None) -> Any:
    if not isinstance(model, (str, os.PathLike)):
        return model
    from yuefu import MusicGen

    return MusicGen.from_pretrained(str(model), device=device)


def evaluate(model: Any, corpus_dir: str | os.PathLike, n_prompts: int = 16, seconds: float = 10.0, seed: int = 0,
             out_json: str | os.PathLike | None = None, *, device: str | None = None, batch_size: int = 8,
             languages: Sequence[str] = LANGUAGES, top_k: int = 250, cfg_coef: float = 3.0,
             temperature: float = 1.0, tempo_drafts: int = 0, tempo_draft_seconds: float | None = None,
             progress: bool = True, log: Callable[[str], None] | None = None,
             save_audio: str | os.PathLike | None = None,
             prompt_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (a path or hub id, or a loaded :class:`yuefu.MusicGen`) on ``corpus_dir``; the report.

    ``n_prompts`` held-out prompts (at most the valid split's size) get one ``seconds``-long clip each, per
    language in ``languages`` ("en", "zh"). The report (see the module docstring) is returned, and written as JSON
    to ``out_json`` when given. ``top_k``, ``cfg_coef``, ``temperature`` (audiocraft's defaults), ``tempo_drafts``
    and ``tempo_draft_seconds`` go to ``set_generation_params``.
    ``save_audio``: a folder that gets every generated clip, as ``LANG/CLIP.wav`` (the held-out clip's name), so that
    what was judged can be heard.
    ``prompt_file``: judge the prompts of this file (:mod:`yuefu.eval.prompt_file`), all of them, instead of
    ``n_prompts`` held-out descriptions; clips are saved as ``LANG/NNN.wav`` (the line's index among the prompts).
    The corpus still trains the judge, gives the FAD reference, and gives as many held-out clips (at most all) for
    the real and codec-resynthesis rows and the codec's FAD, judged against their own sidecars.
    """
    t0 = time.time()
    say = log or (lambda _msg: None)
    languages = tuple(languages)
    if not languages or any(lang not in LANGUAGES for lang in languages):
        raise InvalidArgumentError(f"languages must be some of {', '.join(LANGUAGES)}, got {', '.join(languages)}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise InvalidArgumentError(f"seconds must be a positive number, got {seconds!r}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch size must be >= 1, got {batch_size}")
    out_path = _check_out_json(out_json)
    audio_dir = None if save_audio is None else Path(save_audio).expanduser()
    if audio_dir is not None and audio_dir.exists() and not audio_dir.is_dir():
        raise InvalidArgumentError(f"--save-audio {audio_dir}: exists and is not a folder")
    require_librosa()
    from_file = None if prompt_file is None else read_prompt_file(prompt_file, languages)
    valid, train = load_split(corpus_dir, "valid"), load_split(corpus_dir, "train")
    chosen = select_prompts(valid, n_prompts if from_file is None else len(from_file), seed)
    clip_targets = [_target(c) for c in chosen]
    if from_file is None:
        if n_prompts > len(valid):
            say(f"the valid split has {len(valid)} clips: evaluating {len(valid)} prompts, not {n_prompts}")
        targets, names = clip_targets, [c.name for c in chosen]
        texts = {lang: [c.prompt_en if lang == "en" else c.prompt_zh for c in chosen] for lang in languages}
        records = [{"clip": c.name, "en": c.prompt_en, "zh": c.prompt_zh, **t} for c, t in zip(chosen, targets)]
        source = "held-out descriptions of the corpus (description; description_zh in Chinese)"
    else:
        say(f"{len(from_file)} prompts from {prompt_file}")
        targets, names = [q.target() for q in from_file], [f"{i:03d}" for i in range(len(from_file))]
        texts = {lang: [q.texts[lang] for q in from_file] for lang in languages}
        records = [{**q.texts, "instrument": q.instrument, **q.target()} for q in from_file]
        source = f"prompt file {prompt_file}"
    perm = derangement(len(targets), seed)

    say(f"loading {model if isinstance(model, (str, os.PathLike)) else 'the model'}")
    mg = _load_model(model, device)
    sr = int(mg.sample_rate)
    mg.set_generation_params(duration=float(seconds), top_k=top_k, cfg_coef=cfg_coef, temperature=temperature,
                             tempo_drafts=tempo_drafts, tempo_draft_seconds=tempo_draft_seconds)

    say(f"instrument classifier: {len(train)} real train clips")
    classifier, train_accuracy = fit_instrument_classifier(train, progress, seed)
    k = len(clf.FAMILIES)

    say(f"codec: {len(valid)} held-out clips")
    real_full = [read_clip(c, sr) for c in valid]
    codec, resynth = codec_report(mg.compression_model, real_full, sr)
    classifier_info = classifier_report(classifier, real_full, resynth, [clf.family_of(c.lead) for c in valid], sr)
    classifier_info.update(train_clips=len(train), accuracy_train=train_accuracy)

    index = {c.name: i for i, c in enumerate(valid)}
    n_samples = int(round(seconds * sr))
    real_cut = [real_full[index[c.name]][:n_samples] for c in chosen]
    resynth_cut = [resynth[index[c.name]][:n_samples] for c in chosen]
    say("measuring real and resynthesised clips")
    reference = embed_clips(real_full, sr)
    real_m = measure_clips(real_cut, sr, classifier)
    resynth_m = measure_clips(resynth_cut, sr, classifier)
    fad_codec = feat.fad(_embeddings(resynth_m), reference)

    report: dict[str, Any] = {
        "yuefu_eval": REPORT_VERSION,
        "model": str(model) if isinstance(model, (str, os.PathLike)) else getattr(mg, "name", "model"),
        "corpus": str(Path(corpus_dir).expanduser()),
        "seed": seed, "n_prompts": len(targets), "prompt_source": source, "reference_clips": len(chosen),
        "seconds": float(seconds), "sample_rate": sr, "environment": environment(mg.device),
        # what the model was set to generate with, read back from it
        "generation": {"top_k": mg.params.top_k, "cfg_coef": mg.params.cfg_coef, "temperature": mg.params.temperature,
                       "batch_size": batch_size, "tempo_drafts": mg.tempo_drafts,
                       "tempo_draft_seconds": mg.tempo_draft_seconds,
                       "seeds": f"{seed} + batch index"},
        "tempo_reference": "sidecar bpm: beats per minute of the notated beat (quarter; dotted quarter in 6/8)",
        "fad_embedding": feat.FAD_EMBEDDING,
        "fad_reference": f"all {len(valid)} real held-out clips ({len(reference)} windows)",
        "baseline": "the same clips judged against shuffled prompts (derangement: slot j holds the clip of "
                    "prompt derangement[j])",
        "derangement": perm,
        "codec": codec, "classifier": classifier_info,
        "real": {"adherence": adherence(real_m, clip_targets, k),
                 "fad": feat.fad(_embeddings(real_m), reference)},
        "codec_resynth": {"adherence": adherence(resynth_m, clip_targets, k), "fad": fad_codec},
        "prompts": records,
    }
    for lang in languages:
        report[lang] = language_report(mg, texts[lang], targets, perm, classifier, reference, fad_codec, seed,
                                       batch_size, progress, desc=f"generating ({lang})",
                                       save_to=None if audio_dir is None else (audio_dir / lang, names))
    report["wall_seconds"] = round(time.time() - t0, 1)
    if out_path is not None:
        _write_json(out_path, report)
    return report


def language_report(model: Any, prompts: Sequence[str], targets: Sequence[dict[str, Any]], perm: Sequence[int],
                    classifier: clf.InstrumentClassifier, reference: torch.Tensor, fad_codec: float, seed: int,
                    batch_size: int, progress: bool, desc: str,
                    save_to: tuple[Path, Sequence[str]] | None = None) -> dict[str, Any]:
    """Generate one clip per prompt and judge them: adherence, the shuffled-prompt baseline, FAD, the targets.

    ``reference``: FAD embeddings [windows, 128] of the real held-out clips; ``perm``: the derangement;
    ``save_to``: (folder, one name per prompt): each clip is written there as NAME.wav.
    """
    wavs, used = generate_clips(model, prompts, seed, batch_size, progress, desc=desc)
    if any(float(w.abs().max()) == 0.0 for w in wavs):
        logger.warning("some generated clips are silent")
    sr = int(model.sample_rate)
    if save_to is not None:
        from yuefu import audio

        folder, names = save_to
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioFileError(f"cannot create {folder}: {e.strerror or e}") from None
        for name, wav in zip(names, wavs):
            audio.write(folder / f"{name}.wav", wav[None], sr, subtype="FLOAT", normalize="none")  # as judged
    measured = measure_clips(wavs, sr, classifier)
    fad_gen = feat.fad(_embeddings(measured), reference)
    k = len(clf.FAMILIES)
    out = {
        "model": adherence(measured, targets, k),
        "baseline_shuffled": adherence([measured[perm[j]] for j in range(len(targets))], targets, k),
        "fad": fad_gen, "fad_codec_resynth": fad_codec,
        "fad_over_codec": fad_gen / fad_codec if fad_codec > 0 else math.inf,
        "clips": [{"prompt_used": u, **m} for u, m in zip(used, _public(measured))],
    }
    out["targets"] = _targets(out)
    return out


def _targets(lang_report: dict[str, Any]) -> dict[str, Any]:
    """The lead's targets, met or not: accuracy >= 3x chance, median tempo error <= 8 BPM, FAD <= 2x codec's."""
    m = lang_report["model"]
    ratio = m["instrument_accuracy"] / m["instrument_chance"]
    tempo = m["tempo_error_median_bpm"]
    ci = m.get("instrument_accuracy_ci95")
    return {
        "instrument_accuracy_over_chance": ratio,
        # the prompts resampled, chance held at this set's
        "instrument_accuracy_over_chance_ci95": None if ci is None else [v / m["instrument_chance"] for v in ci],
        "instrument_ok": ratio >= TARGETS["instrument_accuracy_over_chance"],
        "median_tempo_error_bpm": tempo,
        "median_tempo_error_ci95": m.get("tempo_error_median_ci95"),
        "tempo_ok": None if math.isnan(tempo) else tempo <= TARGETS["median_tempo_error_bpm"],  # None: no BPM asked
        "fad_over_codec": lang_report["fad_over_codec"],
        "fad_ok": lang_report["fad_over_codec"] <= TARGETS["fad_over_codec"],
    }


def _check_out_json(path: str | os.PathLike | None) -> Path | None:
    """Fail before the (slow) evaluation when the report cannot be written."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise AudioFileError(f"--json {p}: is a folder, not a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise AudioFileError(f"--json {p}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise AudioFileError(f"--json {p}: the folder {parent} is not writable")
    return p


def _strict(obj: Any) -> Any:
    """The report with every NaN or infinity as None (null), so that the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically (a temporary file, then a rename), as strict JSON."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(_strict(report), ensure_ascii=False, indent=1, allow_nan=False) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AudioFileError(f"cannot write {path}: {e.strerror or e}") from None


# --- the printed table --------------------------------------------------------------------------------------------

def _met(ok: bool | None) -> str:
    return "-" if ok is None else "ok" if ok else "not met"


def _ci(ci: Sequence[float] | None, digits: int = 2) -> str:
    """An interval as the targets line shows it (95% CI 2.61-3.28; ), or "" without one."""
    return "" if ci is None else f"95% CI {_fmt(ci[0], digits)}-{_fmt(ci[1], digits)}; "


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.{digits}f}" if math.isfinite(x) else str(x)
    return str(x)


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table (what ``yuefu eval`` prints)."""
    c, k = report["codec"], report["classifier"]
    source = report.get("prompt_source", "")
    what = (f"{report['n_prompts']} prompts from {source.removeprefix('prompt file ')}"
            if source.startswith("prompt file") else f"{report['n_prompts']} held-out prompts")
    lines = [
        f"yuefu eval: {report['model']} on {report['corpus']} ({what}, {report['seconds']:g} s, seed {report['seed']})",
        "",
        f"codec on {c['clips']} held-out renders      mel distance (dB)   SI-SNR (dB)",
        f"  all codebooks                       {_fmt(c['mel_distance_db']):>17}   {_fmt(c['si_snr_db']):>11}",
        f"  first codebook only (baseline)      {_fmt(c['baseline_first_codebook']['mel_distance_db']):>17}   "
        f"{_fmt(c['baseline_first_codebook']['si_snr_db']):>11}",
        "",
        f"instrument classifier ({k['num_classes']} families, trained on {k['train_clips']} real train clips): "
        f"accuracy {_fmt(k['accuracy_real_valid'])} on {k['valid_clips']} real held-out clips "
        f"({_fmt(k['accuracy_codec_resynth_valid'])} on their codec resynthesis); chance {_fmt(k['chance'])}",
        "",
        f"{'adherence':<28}{'instr. acc':>11}{'chance':>8}{'tempo err':>11}{'(x2,/2 ok)':>12}{'key acc':>9}"
        f"{'mode acc':>10}{'FAD':>9}",
    ]

    def row(name: str, a: dict[str, Any], fad_value: float | None) -> str:
        return (f"{name:<28}{_fmt(a['instrument_accuracy']):>11}{_fmt(a['instrument_chance']):>8}"
                f"{_fmt(a['tempo_error_median_bpm'], 1):>11}{_fmt(a['tempo_error_octave_forgiven_median_bpm'], 1):>12}"
                f"{_fmt(a['key_accuracy']):>9}{_fmt(a['mode_accuracy']):>10}{_fmt(fad_value, 1):>9}")

    lines.append(row("real renders (ceiling)", report["real"]["adherence"], report["real"]["fad"]))
    lines.append(row("codec resynthesis", report["codec_resynth"]["adherence"], report["codec_resynth"]["fad"]))
    for lang in LANGUAGES:
        if lang in report:
            r = report[lang]
            lines.append(row(f"model, {lang} prompts", r["model"], r["fad"]))
            lines.append(row(f"  baseline: shuffled {lang}", r["baseline_shuffled"], None))
    lines += ["", "tempo error: median |estimate - prompt BPM|; (x2,/2 ok): the same, forgiving double/half time",
              f"FAD: {report['fad_embedding']}; reference: {report['fad_reference']}"]
    if source.startswith("prompt file"):
        lang0 = next((r for lang in LANGUAGES if (r := report.get(lang))), None)
        if lang0 is not None:
            m = lang0["model"]
            lines.append(f"prompts with a BPM: {m['tempo_clips']} of {m['clips']}; with a key: {m['key_clips']}")
        lines.append(f"real renders, codec resynthesis: {report['reference_clips']} held-out clips of the corpus, "
                     f"judged against their own captions")
    for lang in LANGUAGES:
        if lang in report:
            t = report[lang]["targets"]
            lines.append(f"targets ({lang}): instrument {_fmt(t['instrument_accuracy_over_chance'])}x chance "
                         f"({_ci(t.get('instrument_accuracy_over_chance_ci95'))}>= 3: "
                         f"{'ok' if t['instrument_ok'] else 'not met'}), median tempo error "
                         f"{_fmt(t['median_tempo_error_bpm'], 1)} BPM ({_ci(t.get('median_tempo_error_ci95'), 1)}"
                         f"<= 8: {_met(t['tempo_ok'])}),"
                         f" FAD {_fmt(t['fad_over_codec'])}x codec's (<= 2: {'ok' if t['fad_ok'] else 'not met'})")
    if any(lang in report for lang in LANGUAGES):
        lines.append("95% intervals: the prompts resampled with replacement (bootstrap); one seed's clips")
    return "\n".join(lines)


__all__ = [
    "adherence", "classifier_report", "codec_report", "codec_resynthesis", "derangement", "embed_clips", "evaluate",
    "fit_instrument_classifier", "format_report", "generate_clips", "language_report", "measure_clips",
    "select_prompts",
]
