"""Several ``yuefu eval`` reports of one model on one prompt set (other seeds), pooled.

Each seed's figures vary with the seed, and all of them with the prompt set. Pooled, every clip of every report
counts once (the figures of :func:`yuefu.eval.run.adherence` over all of them), and the 95% intervals of instrument
accuracy and the median tempo error resample the *prompts*, each with all of its clips (one per report): the same
prompts recur at every seed, and resampling the clips alone would take them for independent prompts and give too
narrow an interval. The shuffled baseline's clusters are its target prompts (each slot holds the clip of another
prompt, a different one at each seed), so its interval is approximate; it is there to show chance level.

With both languages, their difference on the same prompts gets a paired interval (``en_minus_zh``): the prompts
are drawn once for both, so whether one language does better is not confused with which prompts were drawn.

Only reports of the same prompts pool: a run over a whole valid split (``--prompts`` its size) or one prompt file;
``--prompts 16`` draws other prompts at each seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from yuefu.errors import InvalidArgumentError
from yuefu.eval.classifier import FAMILIES
from yuefu.eval.run import LANGUAGES, _fmt, adherence, bootstrap_ci, bootstrap_difference_ci
from yuefu.eval.tempo import tempo_error

POOL_VERSION = 2  # 2: en_minus_zh
# settings that must match for clips to pool; the seeds and the batch size may differ
_IGNORED_GENERATION = ("seeds", "batch_size")


def read_reports(paths: list[str]) -> list[dict[str, Any]]:
    """The JSON reports at ``paths``; a one-line InvalidArgumentError for a missing, unreadable or incomplete one."""
    reports = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise InvalidArgumentError(f"--pool {p}: {e.strerror or e}") from None
        except ValueError as e:
            raise InvalidArgumentError(f"--pool {p}: not JSON ({e})") from None
        problem = _incomplete(report)
        if problem:
            raise InvalidArgumentError(f"--pool {p}: not a complete yuefu eval report ({problem})")
        reports.append(report)
    return reports


def _incomplete(report: Any) -> str | None:
    """What a report lacks for pooling, or None."""
    if not isinstance(report, dict) or "yuefu_eval" not in report:
        return "no yuefu_eval field"
    prompts = report.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(r, dict) and "family" in r for r in prompts):
        return "prompts"
    perm = report.get("derangement")
    if not isinstance(perm, list) or sorted(perm) != list(range(len(prompts))):
        return "derangement"
    langs = [lang for lang in LANGUAGES if lang in report]
    if not langs:
        return "no language"
    for lang in langs:
        clips = report[lang].get("clips") if isinstance(report[lang], dict) else None
        if not isinstance(clips, list) or len(clips) != len(prompts) or not all(
                isinstance(c, dict) and {"family", "tempo", "key"} <= set(c) for c in clips):
            return f"{lang} clips"
    return None


def _key(record: dict[str, Any], index: int) -> str:
    """A prompt's identity across reports: its held-out clip (or, from a prompt file, its line) and its texts."""
    return f"{record['clip'] if 'clip' in record else index}\n{record.get('en')}\n{record.get('zh')}"


def _settings(report: dict[str, Any]) -> dict[str, Any]:
    gen = {k: v for k, v in (report.get("generation") or {}).items() if k not in _IGNORED_GENERATION}
    return {"model": report.get("model"), "seconds": report.get("seconds"), **gen}


def _check_poolable(reports: list[dict[str, Any]], keys: list[list[str]]) -> None:
    if len(reports) < 2:
        raise InvalidArgumentError("--pool needs two reports or more")
    if len(set(keys[0])) != len(keys[0]) or any(sorted(k) != sorted(keys[0]) for k in keys):
        raise InvalidArgumentError("--pool: the reports do not judge the same prompts (held-out prompts are drawn "
                                   "by --seed: pool runs over a whole valid split, or over one --prompt-file)")
    first = _settings(reports[0])
    for rep in reports[1:]:
        other = _settings(rep)
        differ = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if differ:
            raise InvalidArgumentError(
                "--pool: the reports were made with different settings: " + ", ".join(
                    f"{k} {first.get(k)!r} / {other.get(k)!r}" for k in differ))


def _clips(reports: list[dict[str, Any]], keys: list[list[str]], order: list[str], lang: str,
           shuffled: bool) -> tuple[list[dict], list[dict], np.ndarray, np.ndarray]:
    """Every clip of one side (the model, or the shuffled baseline) of one language with the prompt it is judged
    against, and per prompt (in ``order``) and report its instrument hit and tempo error: [P, R] each, the error NaN
    where the prompt states no BPM."""
    measured, targets = [], []
    hits = np.full((len(order), len(reports)), np.nan)  # [P, R]
    errors = np.full_like(hits, np.nan)  # [P, R]
    for j, (rep, ks) in enumerate(zip(reports, keys)):
        row = {k: i for i, k in enumerate(ks)}
        clips, perm = rep[lang]["clips"], rep["derangement"]
        for p, key in enumerate(order):
            i = row[key]
            target, clip = rep["prompts"][i], clips[perm[i] if shuffled else i]  # slot i holds prompt perm[i]'s clip
            measured.append(clip)
            targets.append(target)
            hits[p, j] = float(clip["family"] == target["family"])
            if target.get("bpm") is not None:
                errors[p, j] = tempo_error(clip["tempo"], target["bpm"])
    return measured, targets, hits, errors


def _side(reports: list[dict[str, Any]], keys: list[list[str]], order: list[str], lang: str,
          shuffled: bool) -> dict[str, Any]:
    """Pooled figures of one side (the model, or the shuffled baseline) of one language."""
    measured, targets, hits, errors = _clips(reports, keys, order, lang, shuffled)
    out = adherence(measured, targets, len(FAMILIES))  # the point figures over every clip
    ci = bootstrap_ci(hits)
    out["instrument_accuracy_ci95"] = ci
    out["tempo_error_median_ci95"] = bootstrap_ci(errors, "median")
    out["instrument_accuracy_over_chance"] = out["instrument_accuracy"] / out["instrument_chance"]
    out["instrument_accuracy_over_chance_ci95"] = None if ci is None else [v / out["instrument_chance"] for v in ci]
    side = "baseline_shuffled" if shuffled else "model"
    out["per_report"] = {k: [rep[lang].get(side, {}).get(k) for rep in reports]
                         for k in ("instrument_accuracy", "tempo_error_median_bpm")}
    return out


def _languages_compared(reports: list[dict[str, Any]], keys: list[list[str]], order: list[str]) -> dict[str, Any]:
    """The model's English figures minus its Chinese ones on the same prompts, with paired 95% intervals: whether
    the two languages differ by more than the draw of prompts and samples explains."""
    _, _, hits_en, errors_en = _clips(reports, keys, order, "en", shuffled=False)
    _, _, hits_zh, errors_zh = _clips(reports, keys, order, "zh", shuffled=False)
    timed = np.isfinite(errors_en).any() and np.isfinite(errors_zh).any()
    return {
        "instrument_accuracy": float(np.nanmean(hits_en) - np.nanmean(hits_zh)),
        "instrument_accuracy_ci95": bootstrap_difference_ci(hits_en, hits_zh),
        "tempo_error_median_bpm": float(np.nanmedian(errors_en) - np.nanmedian(errors_zh)) if timed else None,
        "tempo_error_median_ci95": bootstrap_difference_ci(errors_en, errors_zh, "median"),
    }


def pool_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool reports of the same prompts (in any order) made with the same settings: per language in every report,
    the model's and the shuffled baseline's figures over every clip, with prompt-resampled 95% intervals, and each
    report's own figures beside them; with both languages, ``en_minus_zh`` (paired)."""
    keys = [[_key(r, i) for i, r in enumerate(rep["prompts"])] for rep in reports]
    _check_poolable(reports, keys)
    langs = [lang for lang in LANGUAGES if all(lang in rep for rep in reports)]
    if not langs:
        raise InvalidArgumentError("--pool: no prompt language is in every report")
    order = sorted(keys[0])
    out: dict[str, Any] = {
        "yuefu_eval_pool": POOL_VERSION, "model": reports[0].get("model"), "reports": len(reports),
        "seeds": [rep.get("seed") for rep in reports], "prompts": len(order), "settings": _settings(reports[0]),
        "left_out": [lang for lang in LANGUAGES if lang not in langs and any(lang in rep for rep in reports)],
        "interval": "95%, the prompts resampled with all their clips (bootstrap)",
    }
    for lang in langs:
        out[lang] = {"model": _side(reports, keys, order, lang, shuffled=False),
                     "baseline_shuffled": _side(reports, keys, order, lang, shuffled=True),
                     "fad_over_codec": [rep[lang].get("fad_over_codec") for rep in reports]}
    if "en" in langs and "zh" in langs:
        out["en_minus_zh"] = _languages_compared(reports, keys, order)
    return out


def _interval(ci: list[float] | None, digits: int = 2) -> str:
    return "" if ci is None else f" ({_fmt(ci[0], digits)}-{_fmt(ci[1], digits)})"


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def _signed_interval(ci: list[float] | None, digits: int) -> str:
    return "" if ci is None else f" ({_signed(ci[0], digits)} to {_signed(ci[1], digits)})"


def _joined(values: list[Any], digits: int) -> str:
    return " / ".join(_fmt(float(v), digits) if isinstance(v, (int, float)) else "-" for v in values)


def format_pooled(pooled: dict[str, Any]) -> str:
    """The pooled figures as plain text (what ``yuefu eval --pool`` prints)."""
    seeds = ", ".join(str(s) for s in pooled["seeds"])
    lines = [f"yuefu eval --pool: {pooled['model']}, {pooled['reports']} reports (seeds {seeds}), "
             f"{pooled['prompts']} prompts each; in parentheses: {pooled['interval']}", ""]
    for lang in LANGUAGES:
        if lang not in pooled:
            continue
        r = pooled[lang]
        for side, name in (("model", lang), ("baseline_shuffled", f"{lang}, shuffled prompts")):
            s = r[side]
            tempo = "" if not s["tempo_clips"] else (
                f"; median tempo error {_fmt(s['tempo_error_median_bpm'], 1)} BPM"
                f"{_interval(s['tempo_error_median_ci95'], 1)}")
            lines.append(f"{name}: instrument {_fmt(s['instrument_accuracy'], 3)}"
                         f"{_interval(s['instrument_accuracy_ci95'], 3)} = "
                         f"{_fmt(s['instrument_accuracy_over_chance'])}x chance"
                         f"{_interval(s['instrument_accuracy_over_chance_ci95'])}{tempo}")
            lines.append(f"  per report: instrument {_joined(s['per_report']['instrument_accuracy'], 3)}; "
                         f"tempo {_joined(s['per_report']['tempo_error_median_bpm'], 1)} BPM")
        lines.append(f"  FAD over codec per report: {_joined(r['fad_over_codec'], 2)}")
    if "en_minus_zh" in pooled:
        d = pooled["en_minus_zh"]
        tempo = "" if d["tempo_error_median_bpm"] is None else (
            f"; median tempo error {_signed(d['tempo_error_median_bpm'], 1)} BPM"
            f"{_signed_interval(d['tempo_error_median_ci95'], 1)}")
        lines.append(f"en - zh, the same prompts paired: instrument {_signed(d['instrument_accuracy'], 3)}"
                     f"{_signed_interval(d['instrument_accuracy_ci95'], 3)}{tempo}")
    if pooled["left_out"]:
        lines.append(f"left out (not in every report): {', '.join(pooled['left_out'])}")
    return "\n".join(lines)


__all__ = ["format_pooled", "pool_reports", "read_reports"]
