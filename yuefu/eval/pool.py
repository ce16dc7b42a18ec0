"""Several ``yuefu eval`` reports of one model on one prompt set (other seeds), pooled.

Each seed's figures vary with the seed, and all of them with the prompt set. Pooled, instrument accuracy is the
mean over every clip of every report, and the tempo error the median over them; their 95% intervals resample the
*prompts* (each with all of its clips, one per report), since the same prompts recur at every seed: resampling the
clips alone would take the seeds for independent prompts and give too narrow an interval.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from yuefu.errors import InvalidArgumentError

LANGUAGES = ("en", "zh")
RESAMPLES = 2000


def read_reports(paths: list[str]) -> list[dict[str, Any]]:
    """The JSON reports at ``paths``; a one-line InvalidArgumentError for a missing or unreadable one."""
    reports = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise InvalidArgumentError(f"--pool {p}: {e.strerror or e}") from None
        except ValueError as e:
            raise InvalidArgumentError(f"--pool {p}: not JSON ({e})") from None
        if not isinstance(report, dict) or "yuefu_eval" not in report or "prompts" not in report:
            raise InvalidArgumentError(f"--pool {p}: not a yuefu eval report")
        reports.append(report)
    return reports


def _key(record: dict[str, Any], index: int) -> str:
    """A prompt's identity across reports: its held-out clip (or, from a prompt file, its line) and its texts."""
    return f"{record['clip'] if 'clip' in record else index}\n{record.get('en')}\n{record.get('zh')}"


def _cluster_ci(values: np.ndarray, statistic: str) -> list[float] | None:
    """values [P, R] (NaN: no value): 95% interval of the statistic over all values, the P prompts resampled."""
    if not np.isfinite(values).any():
        return None
    idx = np.random.default_rng(0).integers(0, values.shape[0], size=(RESAMPLES, values.shape[0]))
    stats = []
    for rows in idx:
        v = values[rows].ravel()
        v = v[np.isfinite(v)]
        stats.append(np.nan if v.size == 0 else np.median(v) if statistic == "median" else v.mean())
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def _stat(values: np.ndarray, statistic: str) -> float:
    v = values[np.isfinite(values)]
    return math.nan if v.size == 0 else float(np.median(v) if statistic == "median" else v.mean())


def pool_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool reports of the same prompts (any order): per language, the model's and the shuffled baseline's
    instrument accuracy and median tempo error over every clip, with prompt-resampled 95% intervals, and each
    report's own figures beside them."""
    if len(reports) < 2:
        raise InvalidArgumentError("--pool needs two reports or more")
    keys = [[_key(r, i) for i, r in enumerate(rep["prompts"])] for rep in reports]
    if any(sorted(k) != sorted(keys[0]) for k in keys) or len(set(keys[0])) != len(keys[0]):
        raise InvalidArgumentError("--pool: the reports do not judge the same prompts")
    if len({rep.get("model") for rep in reports}) > 1:
        raise InvalidArgumentError("--pool: the reports are of different models: "
                                   + ", ".join(sorted({str(rep.get('model')) for rep in reports})))
    order = sorted(keys[0])
    out: dict[str, Any] = {"model": reports[0].get("model"), "reports": len(reports),
                           "seeds": [rep.get("seed") for rep in reports], "prompts": len(order),
                           "interval": "95%, the prompts resampled with all their clips (bootstrap)"}
    for lang in LANGUAGES:
        if not all(lang in rep for rep in reports):
            continue
        lang_out: dict[str, Any] = {}
        for side in ("model", "baseline_shuffled"):
            hits = np.full((len(order), len(reports)), np.nan)  # [P, R]
            errors = np.full_like(hits, np.nan)
            for j, (rep, ks) in enumerate(zip(reports, keys)):
                row = {k: i for i, k in enumerate(ks)}
                clips = rep[lang]["clips"]
                perm = rep.get("derangement") if side == "baseline_shuffled" else None
                for p, key in enumerate(order):
                    i = row[key]
                    target = rep["prompts"][i]
                    clip = clips[perm[i]] if perm is not None else clips[i]  # slot i holds the clip of perm[i]
                    hits[p, j] = float(clip["family"] == target["family"])
                    if target.get("bpm") is not None:
                        errors[p, j] = abs(float(clip["tempo"]) - float(target["bpm"]))
            chance = reports[0][lang][side]["instrument_chance"]
            acc, acc_ci = _stat(hits, "mean"), _cluster_ci(hits, "mean")
            lang_out[side] = {
                "instrument_accuracy": acc, "instrument_accuracy_ci95": acc_ci,
                "instrument_chance": chance,
                "instrument_accuracy_over_chance": acc / chance,
                "instrument_accuracy_over_chance_ci95": None if acc_ci is None else [v / chance for v in acc_ci],
                "tempo_error_median_bpm": _stat(errors, "median"),
                "tempo_error_median_ci95": _cluster_ci(errors, "median"),
                "per_report": {
                    "instrument_accuracy": [rep[lang][side]["instrument_accuracy"] for rep in reports],
                    "tempo_error_median_bpm": [rep[lang][side]["tempo_error_median_bpm"] for rep in reports],
                },
            }
        lang_out["fad_over_codec"] = [rep[lang]["fad_over_codec"] for rep in reports]
        out[lang] = lang_out
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ci(ci: list[float] | None, digits: int = 2) -> str:
    return "" if ci is None else f" ({_f(ci[0], digits)}-{_f(ci[1], digits)})"


def format_pooled(pooled: dict[str, Any]) -> str:
    """The pooled figures as plain text (what ``yuefu eval --pool`` prints)."""
    seeds = ", ".join(str(s) for s in pooled["seeds"])
    lines = [f"yuefu eval --pool: {pooled['model']}, {pooled['reports']} reports (seeds {seeds}), "
             f"{pooled['prompts']} prompts each; in brackets: {pooled['interval']}", ""]
    for lang in LANGUAGES:
        if lang not in pooled:
            continue
        r = pooled[lang]
        for side, name in (("model", f"{lang}"), ("baseline_shuffled", f"{lang}, shuffled prompts")):
            s = r[side]
            per = s["per_report"]
            lines.append(f"{name}: instrument {_f(s['instrument_accuracy'], 3)}{_ci(s['instrument_accuracy_ci95'], 3)}"
                         f" = {_f(s['instrument_accuracy_over_chance'])}x chance"
                         f"{_ci(s['instrument_accuracy_over_chance_ci95'])}; median tempo error "
                         f"{_f(s['tempo_error_median_bpm'], 1)} BPM{_ci(s['tempo_error_median_ci95'], 1)}")
            lines.append(f"  per report: instrument {' / '.join(_f(v, 3) for v in per['instrument_accuracy'])}; "
                         f"tempo {' / '.join(_f(v, 1) for v in per['tempo_error_median_bpm'])} BPM")
        lines.append(f"  FAD over codec per report: {' / '.join(_f(v) for v in r['fad_over_codec'])}")
    return "\n".join(lines)


__all__ = ["format_pooled", "pool_reports", "read_reports"]
