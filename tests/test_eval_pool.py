"""``yuefu eval --pool``: reports of other seeds pooled, with intervals that resample the prompts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from yuefu.errors import InvalidArgumentError
from yuefu.eval.pool import pool_reports, read_reports


def _clip(family: str, tempo: float) -> dict:
    return {"family": family, "tempo": tempo, "key": "C major"}


def _language(clips: list[dict]) -> dict:
    return {"model": {"instrument_chance": 0.5, "instrument_accuracy": 0.0, "tempo_error_median_bpm": 0.0},
            "baseline_shuffled": {"instrument_chance": 0.5, "instrument_accuracy": 0.0,
                                  "tempo_error_median_bpm": 0.0},
            "clips": clips, "fad_over_codec": 1.5}


def _report(seed: int, prompts: list[dict], clips: list[dict], derangement: list[int], model: str = "m",
            zh: list[dict] | None = None) -> dict:
    report = {"yuefu_eval": 3, "model": model, "seed": seed, "prompts": prompts, "derangement": derangement,
              "en": _language(clips)}
    if zh is not None:
        report["zh"] = _language(zh)
    return report


def test_pooled_figures_by_hand():
    """Two seeds, the prompts in another order at each (as held-out samples are): every clip counts once."""
    a = {"clip": "a", "en": "flute", "zh": "长笛", "family": "flutes", "bpm": 100.0}
    b = {"clip": "b", "en": "harp", "zh": "竖琴", "family": "plucked strings", "bpm": None}
    c = {"clip": "c", "en": "violin", "zh": "小提琴", "family": "bowed strings", "bpm": 80.0}
    r0 = _report(0, [a, b, c], [_clip("flutes", 110.0), _clip("flutes", 90.0), _clip("bowed strings", 120.0)],
                 [1, 2, 0])
    r1 = _report(1, [c, a, b], [_clip("flutes", 84.0), _clip("flutes", 99.0), _clip("plucked strings", 70.0)],
                 [2, 0, 1])
    p = pool_reports([r0, r1])
    m = p["en"]["model"]
    # hits: seed 0 a, c (b wrong); seed 1 a, b (c wrong): 4 of 6. Tempo errors: 10, 40 (seed 0), 4, 1 (seed 1).
    assert m["instrument_accuracy"] == pytest.approx(4 / 6)
    assert m["instrument_accuracy_over_chance"] == pytest.approx(2.0)  # chance: the majority family, 2 of 6
    assert m["tempo_error_median_bpm"] == pytest.approx(7.0)
    lo, hi = m["instrument_accuracy_ci95"]
    assert 0.0 <= lo <= 4 / 6 <= hi <= 1.0
    # shuffled: slot i is judged against prompt i and holds the clip of prompt derangement[i].
    # seed 0: slot a <- clip b (flutes: hit; 90 vs 100: 10), slot b <- clip c (miss), slot c <- clip a (miss; 110 vs
    # 80: 30). seed 1 (order c, a, b): slot c <- clip b (miss; 70 vs 80: 10), slot a <- clip c (flutes: hit; 84 vs
    # 100: 16), slot b <- clip a (miss).
    s = p["en"]["baseline_shuffled"]
    assert s["instrument_accuracy"] == pytest.approx(2 / 6)
    assert s["tempo_error_median_bpm"] == pytest.approx(np.median([10, 30, 10, 16]))
    assert p["en"]["fad_over_codec"] == [1.5, 1.5] and p["seeds"] == [0, 1] and p["prompts"] == 3


def test_the_interval_resamples_prompts_not_clips():
    """400 prompts, 5 reports. Each prompt always right or always wrong (seeds agree): the interval is that of 400
    outcomes, +- 1.96 sqrt(p(1-p)/400). Each clip right or wrong on its own: that of 2000, sqrt(5) narrower."""
    rng = np.random.default_rng(3)
    prompts = [{"clip": f"{i:03d}", "en": f"p{i}", "zh": "", "family": "flutes", "bpm": None} for i in range(400)]
    fixed = rng.random(400) < 0.6
    for agree, n in ((True, 400), (False, 2000)):
        reports = []
        for seed in range(5):
            right = fixed if agree else rng.random(400) < 0.6
            clips = [_clip("flutes" if r else "organ & free reeds", 0.0) for r in right]
            reports.append(_report(seed, prompts, clips, list(range(1, 400)) + [0]))
        m = pool_reports(reports)["en"]["model"]
        p = m["instrument_accuracy"]
        lo, hi = m["instrument_accuracy_ci95"]
        assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(p * (1 - p) / n), rel=0.2), (agree, lo, hi)
        assert m["tempo_error_median_ci95"] is None  # no prompt asked for a BPM


def test_languages_compared_on_the_same_prompts():
    """en - zh by hand, then the paired interval against closed forms: identical outcomes in both languages give a
    difference of exactly 0 whatever the prompts (an unpaired interval would be as wide as each language's own);
    independent outcomes give +- 1.96 sd(d) / sqrt(P) of the per-prompt differences d."""
    a = {"clip": "a", "en": "flute", "zh": "长笛", "family": "flutes", "bpm": 100.0}
    b = {"clip": "b", "en": "harp", "zh": "竖琴", "family": "plucked strings", "bpm": 120.0}
    r0 = _report(0, [a, b], [_clip("flutes", 101.0), _clip("plucked strings", 130.0)], [1, 0],
                 zh=[_clip("flutes", 110.0), _clip("flutes", 121.0)])
    r1 = _report(1, [b, a], [_clip("flutes", 120.0), _clip("flutes", 104.0)], [1, 0],
                 zh=[_clip("flutes", 150.0), _clip("bowed strings", 100.0)])
    d = pool_reports([r0, r1])["en_minus_zh"]
    # en hits a, b, a (3 of 4), zh a (1 of 4); tempo errors en 1, 10, 0, 4 (median 2.5), zh 10, 1, 30, 0 (5.5)
    assert d["instrument_accuracy"] == pytest.approx(0.5)
    assert d["tempo_error_median_bpm"] == pytest.approx(-3.0)
    assert "en_minus_zh" not in pool_reports([_report(0, [a, b], r0["en"]["clips"], [1, 0]),
                                              _report(1, [b, a], r1["en"]["clips"], [1, 0])])

    rng = np.random.default_rng(5)
    prompts = [{"clip": f"{i:03d}", "en": f"p{i}", "zh": f"z{i}", "family": "flutes", "bpm": None}
               for i in range(400)]
    same = rng.random(400) < 0.6
    right_en, right_zh = rng.random(400) < 0.7, rng.random(400) < 0.6  # each prompt right or wrong at every seed
    for en, zh, width in ((same, same, 0.0), (right_en, right_zh, None)):
        clips = [[_clip("flutes" if r else "organ & free reeds", 0.0) for r in x] for x in (en, zh)]
        reports = [_report(seed, prompts, clips[0], list(range(1, 400)) + [0], zh=clips[1]) for seed in range(3)]
        d = pool_reports(reports)["en_minus_zh"]
        lo, hi = d["instrument_accuracy_ci95"]
        diffs = en.astype(float) - zh.astype(float)  # [P]
        assert d["instrument_accuracy"] == pytest.approx(diffs.mean())
        if width == 0.0:
            assert lo == hi == 0.0
        else:
            assert (hi - lo) / 2 == pytest.approx(1.96 * diffs.std() / math.sqrt(400), rel=0.15), (lo, hi)
        assert d["tempo_error_median_ci95"] is None


def test_reports_that_do_not_pool_are_one_line_errors(tmp_path):
    a = {"clip": "a", "en": "flute", "zh": "长笛", "family": "flutes", "bpm": None}
    b = {"clip": "b", "en": "harp", "zh": "竖琴", "family": "plucked strings", "bpm": None}
    clips = [_clip("flutes", 1.0)] * 2
    r = _report(0, [a, b], clips, [1, 0])
    with pytest.raises(InvalidArgumentError, match="two reports"):
        pool_reports([r])
    with pytest.raises(InvalidArgumentError, match="same prompts"):
        pool_reports([r, _report(1, [a, {**b, "en": "harp, other words"}], clips, [1, 0])])
    with pytest.raises(InvalidArgumentError, match="different settings: model 'm' / 'other'"):
        pool_reports([r, _report(1, [a, b], clips, [1, 0], model="other")])
    drafts = {**_report(1, [a, b], clips, [1, 0]), "generation": {"tempo_drafts": 2, "seeds": "1 + batch index"}}
    with pytest.raises(InvalidArgumentError, match="tempo_drafts None / 2"):
        pool_reports([r, drafts])
    zh_only = {k: v for k, v in _report(1, [a, b], clips, [1, 0]).items() if k != "en"}
    zh_only["zh"] = r["en"]
    with pytest.raises(InvalidArgumentError, match="no prompt language"):
        pool_reports([r, zh_only])
    both = {**_report(2, [b, a], clips, [1, 0]), "zh": r["en"]}
    assert pool_reports([r, both])["left_out"] == ["zh"]
    no_perm = {k: v for k, v in r.items() if k != "derangement"}  # else the baseline would be the model
    short = {**r, "en": {**r["en"], "clips": clips[:1]}}
    for name, report in (("no_perm.json", no_perm), ("short.json", short)):
        (tmp_path / name).write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="not a complete yuefu eval report \\(derangement\\)"):
        read_reports([str(tmp_path / "no_perm.json")])
    with pytest.raises(InvalidArgumentError, match="en clips"):
        read_reports([str(tmp_path / "short.json")])
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}), encoding="utf-8")
    for name, match in (("bad.json", "not JSON"), ("other.json", "not a complete yuefu eval report"),
                        ("gone.json", "No such file")):
        with pytest.raises(InvalidArgumentError, match=match):
            read_reports([str(tmp_path / name)])


def test_cli_pool(tmp_path, capsys):
    from yuefu.eval import cli as eval_cli

    a = {"clip": "a", "en": "flute", "zh": "长笛", "family": "flutes", "bpm": 90.0}
    b = {"clip": "b", "en": "harp", "zh": "竖琴", "family": "plucked strings", "bpm": 120.0}
    paths = []
    for seed in (0, 1):
        clips = [_clip("flutes", 95.0), _clip("flutes", 100.0 + seed)]
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps(_report(seed, [a, b], clips, [1, 0])), encoding="utf-8")
        paths.append(str(path))
    out = tmp_path / "pooled.json"
    assert eval_cli.main(["--pool", *paths, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 reports (seeds 0, 1)" in printed and "en: instrument 0.500" in printed
    pooled = json.loads(out.read_text(encoding="utf-8"))
    assert pooled["en"]["model"]["tempo_error_median_bpm"] == pytest.approx(np.median([5, 20, 5, 19]))
    assert eval_cli.main(["--pool", *paths, "--corpus", str(tmp_path)]) == 2
    assert "give no MODEL" in capsys.readouterr().err
    assert eval_cli.main([]) == 2
    assert "or --pool" in capsys.readouterr().err
    assert eval_cli.main(["--pool", *paths, "--json", paths[0]]) == 2  # would overwrite a report
    assert "is one of the reports" in capsys.readouterr().err
