"""yuefu.eval: each measure against an independent reference (closed forms, synthetic signals of known content),
and ``yuefu eval`` end to end on a tiny synthetic corpus with the tiny random model."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from yuefu.errors import InvalidArgumentError
from yuefu.eval import cli as eval_cli
from yuefu.eval.classifier import (
    FAMILIES,
    WINDOW,
    chance_level,
    family_of,
    noise_floor,
    train_classifier,
    training_views,
    window_features,
)
from yuefu.eval.features import fad, fad_embeddings, frechet_distance, log_mel
from yuefu.eval.key import estimate_key, key_name, mirex_key_score, parse_key
from yuefu.eval.metrics import mel_distance, si_snr
from yuefu.eval.run import derangement, select_prompts

SR = 32000
HAVE_LIBROSA = importlib.util.find_spec("librosa") is not None
needs_librosa = pytest.mark.skipif(not HAVE_LIBROSA and not os.environ.get("CI"),
                                   reason="librosa is not installed (pip install librosa); CI must have it")


# --- a tiny additive synthesiser -------------------------------------------------------------------------------------

def tone(midi: float, seconds: float, harmonics: tuple[float, ...] = (1.0, 0.5, 0.25), sr: int = SR,
         decay: float = 3.0) -> np.ndarray:
    """A note as a sum of sines: harmonic h (1-based) at amplitude harmonics[h-1], exponential decay, 5 ms fades."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    x = sum(a * np.sin(2 * np.pi * f0 * (h + 1) * t) for h, a in enumerate(harmonics) if f0 * (h + 1) < sr / 2)
    env = np.exp(-decay * t) * np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
    return (x * env).astype(np.float64)


MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11, 12)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11, 12)  # harmonic minor


def tonal_clip(tonic: int, mode: str, beat: float = 0.4, harmonics: tuple[float, ...] = (1.0, 0.5, 0.25)) -> np.ndarray:
    """Scale up from the tonic near middle C, then the cadence I-IV-V-I (i-iv-V-i in minor) as triads."""
    root = 60 + tonic
    steps = MAJOR_STEPS if mode == "major" else MINOR_STEPS
    third = 4 if mode == "major" else 3
    notes = [[root + s] for s in steps]
    for degree, chord_third in ((0, third), (5, third), (7, 4), (0, third)):  # the dominant is major in both modes
        notes.append([root + degree, root + degree + chord_third, root + degree + 7])
    notes.append([root, root + third, root + 7, root + 12])
    return np.concatenate([sum(tone(p, beat * 2, harmonics) for p in chord) / len(chord) for chord in notes])


def click_track(bpm: float, seconds: float, sr: int = SR) -> np.ndarray:
    """A decaying 1 kHz blip (20 ms) on every beat, the downbeat of every 4 louder."""
    x = np.zeros(int(seconds * sr))
    blip = tone(83, 0.02, (1.0,), sr, decay=200.0)  # MIDI 83 ~ 988 Hz
    for i, start in enumerate(np.arange(0.0, seconds - 0.05, 60.0 / bpm)):
        s = int(start * sr)
        x[s:s + len(blip)] += blip * (1.0 if i % 4 == 0 else 0.6)
    return x


# --- Fréchet distance ----------------------------------------------------------------------------------------------

def test_frechet_distance_matches_the_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_equal_covariances_is_the_mean_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + 0.1 * np.eye(5)  # full, not diagonal
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6, abs=1e-8)
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-8)


def test_fad_of_samples_approaches_the_population_distance():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, size=(20000, 3))
    y = rng.normal(1.0, 2.0, size=(20000, 3))
    expected = 3 * 1.0 + 3 * (1 + 4 - 2 * 2)  # |mu|^2 + sum(s1 + s2 - 2 sqrt(s1 s2)) with s1 = 1, s2 = 4
    assert fad(x, y) == pytest.approx(expected, rel=0.05)


# --- SI-SNR and mel distance ---------------------------------------------------------------------------------------

def test_si_snr_of_a_known_mix():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=SR)
    ref -= ref.mean()
    noise = rng.normal(size=SR)
    noise -= noise.mean()
    noise -= (noise @ ref) / (ref @ ref) * ref  # orthogonal to the reference: the closed form is exact
    for snr_db in (-5.0, 0.0, 12.0, 30.0):
        gain = math.sqrt((ref @ ref) / (noise @ noise) / 10 ** (snr_db / 10))
        est = 0.7 * ref + 0.7 * gain * noise  # any overall scale: SI-SNR ignores it
        assert si_snr(torch.from_numpy(est), torch.from_numpy(ref)) == pytest.approx(snr_db, abs=1e-6)
    assert si_snr(torch.from_numpy(3.0 * ref), torch.from_numpy(ref)) > 100  # a scaled copy
    assert si_snr(torch.from_numpy(noise), torch.from_numpy(ref)) < -100  # orthogonal: nothing of the reference
    assert si_snr(torch.from_numpy(ref), torch.zeros(SR)) == -math.inf


def test_mel_distance_is_zero_for_a_copy_and_grows_with_noise():
    x = torch.from_numpy(tonal_clip(0, "major")).float()
    noise = torch.from_numpy(np.random.default_rng(4).normal(size=x.shape[0])).float()
    assert mel_distance(x, x) == 0.0
    assert 0 < mel_distance(x + 0.001 * noise, x) < mel_distance(x + 0.05 * noise, x)


def test_log_mel_and_embedding_shapes():
    x = torch.zeros(2, 1, SR * 2)
    m = log_mel(x)
    assert m.shape == (2, 2 * SR // 320 + 1, 64)
    assert float(m.max()) == -80.0  # silence sits on the floor
    assert window_features(m[0]).shape == (m.shape[1] // WINDOW, 128)  # the tail shorter than a window is dropped
    assert window_features(m[0, :20]).shape == (1, 128)
    assert fad_embeddings(m[0]).shape == ((m.shape[1] - 96) // 48 + 1, 128)
    assert fad_embeddings(m[0, :50]).shape == (1, 128)


# --- key -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["C major", "A minor", "Eb major", "F# minor", "G major", "Bb minor", "E major",
                                 "C# minor"])
def test_key_finder_on_synthetic_tonal_music(key):
    tonic, mode = parse_key(key)
    assert estimate_key(tonal_clip(tonic, mode), SR) == (tonic, mode)


def test_key_names_and_mirex_score():
    assert parse_key("Eb major") == (3, "major") == parse_key("D# major") == parse_key("E- major")
    assert parse_key("F# minor") == (6, "minor")
    assert key_name(8, "minor") == "G# minor" and key_name(8, "major") == "Ab major"
    c = (0, "major")
    assert mirex_key_score(c, c) == 1.0
    assert mirex_key_score((7, "major"), c) == 0.5  # a fifth
    assert mirex_key_score((9, "minor"), c) == 0.3  # relative minor
    assert mirex_key_score((0, "minor"), c) == 0.2  # parallel
    assert mirex_key_score((1, "major"), c) == 0.0
    with pytest.raises(ValueError, match="cannot read the key"):
        parse_key("H dorian")


# --- tempo ---------------------------------------------------------------------------------------------------------

@needs_librosa
@pytest.mark.parametrize("bpm", [100.0, 128.0])
def test_tempo_of_a_click_track(bpm):
    from yuefu.eval.tempo import estimate_tempo, octave_tempo_error, tempo_error

    estimate = estimate_tempo(click_track(bpm, 8.0), SR)
    assert tempo_error(estimate, bpm) <= 0.03 * bpm  # librosa's tempogram lags are ~2% apart here
    assert octave_tempo_error(estimate / 2, bpm) == pytest.approx(tempo_error(estimate, bpm))


def test_tempo_errors_and_the_missing_librosa_message(monkeypatch):
    import builtins

    from yuefu.eval.tempo import octave_tempo_error, require_librosa, tempo_error

    assert tempo_error(62.0, 120.0) == 58.0
    assert octave_tempo_error(62.0, 120.0) == 4.0  # double time: 124
    assert octave_tempo_error(250.0, 120.0) == 5.0  # half time: 125
    real_import = builtins.__import__

    def no_librosa(name, *args, **kwargs):
        if name == "librosa":
            raise ImportError("no librosa")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_librosa)
    with pytest.raises(InvalidArgumentError, match="pip install librosa"):
        require_librosa()


# --- the instrument classifier -------------------------------------------------------------------------------------

def test_window_features_and_noise_floor_closed_forms():
    x = torch.arange(2 * WINDOW * 3, dtype=torch.float32).reshape(2 * WINDOW, 3)  # two windows of 3 bands
    w = window_features(x)
    first = x[:WINDOW]
    assert torch.allclose(w[0], torch.cat([first.mean(0), first.std(0, unbiased=False)]))
    assert torch.allclose(w[1, :3], x[WINDOW:].mean(0))
    level = torch.tensor([[0.0, -100.0]])  # dB
    floored = noise_floor(level, 30.0)  # a floor at -30 dB, added in power
    assert floored[0, 0].item() == pytest.approx(10 * math.log10(1 + 10 ** -3.0), abs=1e-5)
    assert floored[0, 1].item() == pytest.approx(10 * math.log10(10 ** -10.0 + 10 ** -3.0), abs=1e-4)
    import random

    views = training_views(x - 100.0, random.Random(0))
    assert len(views) == 2 and torch.equal(views[0], w - torch.cat([torch.full((3,), 100.0), torch.zeros(3)]))
    assert views[1][:, 3:].sum() < views[0][:, 3:].sum()  # a floor narrows the spread over time


def _instrument_clips(harmonics: tuple[float, ...], n: int, seed: int) -> list[torch.Tensor]:
    """n one-second melodies of random pitches on one timbre -> their window features ([W, 128] each)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x = np.concatenate([tone(float(p), 0.25, harmonics) for p in rng.integers(55, 80, size=4)])
        x = x * rng.uniform(0.2, 0.9) + rng.normal(scale=1e-3, size=x.shape)
        rows.append(window_features(log_mel(torch.from_numpy(x).float())[0]))
    return rows


def test_classifier_separates_two_synthetic_instruments(one_thread):
    flute = (1.0, 0.1)  # almost a pure tone
    reed = (1.0, 0.0, 0.6, 0.0, 0.4, 0.0, 0.3, 0.0, 0.2)  # odd harmonics, square-ish
    x_train = _instrument_clips(flute, 16, 0) + _instrument_clips(reed, 16, 1)
    y_train = ["flute"] * 16 + ["reed"] * 16
    x_test = _instrument_clips(flute, 10, 2) + _instrument_clips(reed, 10, 3)
    y_test = ["flute"] * 10 + ["reed"] * 10
    state = torch.random.get_rng_state()
    model = train_classifier(x_train, y_train)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded on its own: the caller's stream is untouched
    assert chance_level(y_test, 2) == 0.5
    assert model.accuracy(x_test, y_test) >= 0.9
    again = train_classifier(x_train, y_train)  # deterministic
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), model.net.state_dict().values()))
    with pytest.raises(InvalidArgumentError, match="one instrument family"):
        train_classifier(x_train[:2], ["flute", "flute"])


def test_families_cover_every_lead_the_renderer_uses():
    from yuefu.data import arrange

    leads = set(arrange.BAND_LEADS) | {lead for leads in arrange.LEADS.values() for lead in leads}
    leads |= {lead for style in arrange.STYLES.values() for lead in style.leads or ()}
    leads |= {names[0] for names in arrange.CHORALE_ENSEMBLES.values()}
    assert {family_of(lead) for lead in leads} <= set(FAMILIES)
    assert chance_level(["a", "a", "a", "b"], 8) == 0.75 and chance_level(["a", "b"], 8) == 0.5


# --- prompts and the baseline ----------------------------------------------------------------------------------------

def test_derangement_and_prompt_sample_are_seeded():
    for n in (2, 3, 16, 28):
        p = derangement(n, seed=5)
        assert sorted(p) == list(range(n)) and all(p[j] != j for j in range(n))
        assert p == derangement(n, seed=5)
    assert select_prompts(list(range(10)), 4, 1) == select_prompts(list(range(10)), 4, 1)
    assert len(select_prompts(list(range(3)), 10, 0)) == 3
    with pytest.raises(ValueError):
        derangement(1, 0)


# --- end to end ----------------------------------------------------------------------------------------------------

CLIPS = [  # (lead, tonic, mode, bpm, English and Chinese prompt)
    ("flute", 0, "major", 100, "100 BPM flute melody in C major", "C大调的长笛旋律，每分钟100拍"),
    ("piano", 9, "minor", 120, "120 BPM piano piece in A minor", "A小调的钢琴曲，每分钟120拍"),
    ("flute", 7, "major", 90, "90 BPM flute tune in G major", "G大调的长笛曲，每分钟90拍"),
    ("piano", 2, "minor", 110, "110 BPM piano in D minor", "D小调的钢琴，每分钟110拍"),
]
TIMBRE = {"flute": (1.0, 0.1), "piano": (1.0, 0.6, 0.4, 0.3, 0.2)}


def write_corpus(root, seconds: float = 1.5):
    """train/ (8 clips) and valid/ (4 clips) in the render format: WAV + JSON sidecar."""
    for split, copies in (("train", 2), ("valid", 1)):
        (root / split).mkdir(parents=True)
        for i in range(copies * len(CLIPS)):
            lead, tonic, mode, bpm, en, zh = CLIPS[i % len(CLIPS)]
            x = tonal_clip(tonic, mode, beat=30.0 / bpm, harmonics=TIMBRE[lead])
            x = np.resize(x, int(seconds * SR)) * 0.5 + 0.2 * click_track(bpm, seconds)
            name = f"{split}{i:03d}"
            sf.write(root / split / f"{name}.wav", x.astype(np.float32), SR)
            sidecar = {"description": en, "description_zh": zh, "bpm": bpm, "key": key_name(tonic, mode),
                       "instruments": [lead], "render": {"lead": lead, "style": "solo", "quarter_bpm": float(bpm)}}
            (root / split / f"{name}.json").write_text(json.dumps(sidecar, ensure_ascii=False))


def _finite_numbers(obj, path=""):
    """Every number in a nested report, with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


@pytest.fixture
def one_thread():
    """torch on one thread: on a shared, busy CPU the tiny model runs ten times faster than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_librosa
def test_yuefu_eval_end_to_end(hf_dir, tmp_path, capsys, one_thread):
    write_corpus(tmp_path / "corpus")
    out = tmp_path / "report.json"
    code = eval_cli.main([str(hf_dir), "--corpus", str(tmp_path / "corpus"), "--prompts", "3", "--seconds", "1",
                          "--seed", "0", "--json", str(out), "--device", "cpu", "--quiet",
                          "--save-audio", str(tmp_path / "clips"), "--top-k", "50", "--temperature", "0.9",
                          "--cfg-coef", "2.5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "baseline: shuffled zh" in printed and "codec resynthesis" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["n_prompts"] == 3 and len(report["prompts"]) == 3
    gen = report["generation"]  # read back from the model after set_generation_params
    assert (gen["top_k"], gen["temperature"], gen["cfg_coef"], gen["tempo_drafts"]) == (50, 0.9, 2.5, 0)
    assert report["fad_embedding"].startswith("logmel-stats-128")
    import librosa

    env = report["environment"]  # what measured: same seed, other CPU or librosa, other numbers
    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["librosa"] == librosa.__version__ and env["device"] == "cpu"
    assert f"torch {torch.__version__}" in env["machine"]
    assert set(report["codec"]) == {"clips", "mel_distance_db", "si_snr_db", "baseline_first_codebook"}
    assert report["classifier"]["accuracy_real_valid"] == 1.0  # two timbres this different are easy
    for lang in ("en", "zh"):
        r = report[lang]
        for side in ("model", "baseline_shuffled"):
            assert set(r[side]) >= {"instrument_accuracy", "instrument_accuracy_ci95", "tempo_error_median_ci95",
                                    "instrument_chance", "tempo_error_median_bpm",
                                    "tempo_error_octave_forgiven_median_bpm", "key_accuracy", "mode_accuracy",
                                    "key_mirex_score"}
        assert {"fad", "fad_codec_resynth", "fad_over_codec", "targets", "clips"} <= set(r)
        assert len(r["clips"]) == 3
    for name in ("real", "codec_resynth"):
        assert report[name]["adherence"]["clips"] == 3
    assert report["real"]["adherence"]["instrument_accuracy"] == 1.0
    # --save-audio: every judged clip, named by its held-out clip; a saved clip gets the same tempo estimate.
    from yuefu.eval.tempo import estimate_tempo

    for lang in ("en", "zh"):
        saved = sorted(p.stem for p in (tmp_path / "clips" / lang).glob("*.wav"))
        assert saved == sorted(p["clip"] for p in report["prompts"])
        first = report["prompts"][0]["clip"]
        data, sr = sf.read(tmp_path / "clips" / lang / f"{first}.wav", dtype="float32")
        assert sr == report["sample_rate"] and len(data) == sr  # 1 s
        assert round(estimate_tempo(torch.from_numpy(data), sr), 2) == report[lang]["clips"][0]["tempo"]
    bad = [(p, v) for p, v in _finite_numbers(report) if not math.isfinite(v)]
    assert not bad, bad


def test_yuefu_eval_one_line_errors(tmp_path, capsys):
    assert eval_cli.main(["m", "--corpus", str(tmp_path), "--prompts", "1"]) == 2
    assert eval_cli.main(["m", "--corpus", str(tmp_path / "nope")]) == 2
    assert eval_cli.main(["m", "--corpus", str(tmp_path), "--languages", "fr"]) == 2
    assert eval_cli.main(["m", "--corpus", str(tmp_path)]) == 2  # no valid/ inside
    assert eval_cli.main(["m", "--corpus", str(tmp_path), "--temperature", "-1"]) == 2
    assert eval_cli.main(["m", "--corpus", str(tmp_path), "--top-k", "-5"]) == 2
    assert eval_cli.main(["m", "--corpus", str(tmp_path), "--cfg-coef", "nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 7 and all(line.startswith("yuefu: error: ") for line in err)
    write_corpus(tmp_path / "corpus", seconds=0.5)
    expected = 3 if HAVE_LIBROSA else 2  # without librosa the evaluation stops before loading the model
    assert eval_cli.main([str(tmp_path / "no-model"), "--corpus", str(tmp_path / "corpus"), "--quiet"]) == expected


# --- prompt files --------------------------------------------------------------------------------------------------

def _write_prompts(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def test_prompt_file_is_read_with_its_targets(tmp_path):
    from yuefu.eval.prompt_file import read_prompt_file

    path = _write_prompts(tmp_path / "p.jsonl", [
        "# a comment, then a blank line",
        "",
        {"en": " a lonely cello ", "zh": "孤独的大提琴", "instrument": "cello", "bpm": 66, "key": "D minor"},
        {"en": "chiptune", "zh": "芯片音乐", "instrument": "Synth Leads & Distorted Guitar"},  # a family, any case
        {"en": "tin whistle", "zh": "哨笛", "instrument": "Pan Flute", "bpm": 96.5},
    ])
    prompts = read_prompt_file(path)
    assert [p.texts["en"] for p in prompts] == ["a lonely cello", "chiptune", "tin whistle"]
    assert [p.target() for p in prompts] == [
        {"family": "bowed strings", "bpm": 66.0, "key": "D minor"},
        {"family": "synth leads & distorted guitar", "bpm": None, "key": None},
        {"family": "flutes", "bpm": 96.5, "key": None},  # a lead named with a space and capitals
    ]
    only_en = _write_prompts(tmp_path / "en.jsonl", [{"en": "a", "instrument": "piano"},
                                                      {"en": "b", "instrument": "organ"}])
    assert len(read_prompt_file(only_en, ("en",))) == 2


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "line 1: not JSON"),
    ([[1, 2]], "line 1: expected a JSON object"),
    ([{"en": "a", "zh": "b", "instrument": "piano", "tempo": 90}], "unknown field 'tempo'"),
    ([{"en": "a", "zh": "b", "instrument": "erhu"}], "unknown instrument 'erhu'"),
    ([{"en": "a", "zh": "b"}], "'instrument' must name"),
    ([{"en": "a", "zh": "b", "instrument": "piano", "bpm": 900}], "'bpm' must be a number from 20 to 400"),
    ([{"en": "a", "zh": "b", "instrument": "piano", "bpm": True}], "'bpm' must be"),
    (['{"en": "a", "zh": "b", "instrument": "piano", "bpm": 1' + "0" * 400 + "}"], "'bpm' must be"),  # no overflow
    ([{"en": "a", "zh": "b", "instrument": "piano", "key": "H major"}], "cannot read the key"),
    ([{"en": "a", "instrument": "piano"}], "no 'zh' prompt"),
    ([{"en": "", "zh": "b", "instrument": "piano"}], "'en' must be a non-empty string"),
    (["# only a comment", {"en": "a", "zh": "b", "instrument": "piano"}], "1 prompt(s)"),
])
def test_prompt_file_errors_name_the_line(tmp_path, lines, message):
    from yuefu.eval.prompt_file import read_prompt_file

    ok = {"en": "x", "zh": "y", "instrument": "piano"}
    padded = lines if message.endswith("prompt(s)") else [*lines, ok]  # the bad line first, a good one after
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        read_prompt_file(_write_prompts(tmp_path / "p.jsonl", padded))


def test_prompt_file_missing_or_not_text(tmp_path):
    from yuefu.eval.prompt_file import read_prompt_file

    with pytest.raises(InvalidArgumentError, match="no such file"):
        read_prompt_file(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidArgumentError, match="cannot read it as UTF-8"):
        read_prompt_file(tmp_path / "bin.jsonl")
    lines = [json.dumps({"en": "a", "zh": "b", "instrument": "piano"})] * 2
    (tmp_path / "bom.jsonl").write_bytes("\n".join(lines).encode("utf-8-sig"))  # as Windows Notepad saves it
    assert len(read_prompt_file(tmp_path / "bom.jsonl")) == 2


def test_targets_and_table_when_no_prompt_asks_for_a_tempo():
    from yuefu.eval.run import _fmt, _met, _strict, _targets

    lang = {"model": {"instrument_accuracy": 0.5, "instrument_chance": 0.125, "tempo_error_median_bpm": math.nan},
            "fad_over_codec": 1.5}
    t = _targets(lang)
    assert t["instrument_accuracy_over_chance"] == 4.0 and t["instrument_ok"] is True and t["fad_ok"] is True
    assert t["tempo_ok"] is None and _met(t["tempo_ok"]) == "-" and _fmt(t["median_tempo_error_bpm"], 1) == "-"
    assert json.loads(json.dumps(_strict(t), allow_nan=False))["median_tempo_error_bpm"] is None
    assert _targets({**lang, "model": {**lang["model"], "tempo_error_median_bpm": 8.5}})["tempo_ok"] is False


def test_bootstrap_intervals_match_the_closed_forms():
    """The mean of 400 Bernoulli(0.6) hits: p +- 1.96 sqrt(p(1-p)/n). The median of 400 draws from U(0, 20): the
    asymptotic standard error 1 / (2 f(m) sqrt(n)) = 0.5, so +- 0.98."""
    from yuefu.eval.run import bootstrap_ci

    rng = np.random.default_rng(1)
    hits = (rng.random(400) < 0.6).astype(float)
    p = hits.mean()
    lo, hi = bootstrap_ci(hits)
    half = 1.96 * math.sqrt(p * (1 - p) / 400)
    assert lo < p < hi and (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (p - lo) == pytest.approx(hi - p, abs=0.015)  # symmetric at p = 0.6
    errors = rng.uniform(0, 20, 400)
    lo, hi = bootstrap_ci(errors, "median")
    assert lo < np.median(errors) < hi and (hi - lo) / 2 == pytest.approx(0.98, rel=0.3)
    assert bootstrap_ci([]) is None and bootstrap_ci([1.0, 1.0, 1.0]) == [1.0, 1.0]
    assert bootstrap_ci(hits) == bootstrap_ci(hits)  # seeded


def test_adherence_leaves_out_prompts_without_bpm_or_key():
    from yuefu.eval.run import adherence

    measured = [{"family": "flutes", "tempo": 100.0, "key": "C major"},
                {"family": "flutes", "tempo": 50.0, "key": "A minor"},
                {"family": "bowed strings", "tempo": 130.0, "key": "G major"}]
    targets = [{"family": "flutes", "bpm": 90.0, "key": None},  # tempo error 10
               {"family": "bowed strings", "bpm": None, "key": "A minor"},  # not timed; key right
               {"family": "bowed strings", "bpm": 100.0, "key": "D major"}]  # tempo error 30; key wrong, mode right
    a = adherence(measured, targets, num_classes=8)
    assert a["instrument_accuracy"] == pytest.approx(2 / 3)
    assert (a["tempo_clips"], a["key_clips"]) == (2, 2)
    assert a["tempo_error_median_bpm"] == pytest.approx(20.0) and a["tempo_error_mean_bpm"] == pytest.approx(20.0)
    assert (a["key_accuracy"], a["mode_accuracy"]) == (0.5, 1.0)
    none = adherence(measured[:1], [{"family": "flutes", "bpm": None, "key": None}], num_classes=8)
    assert none["tempo_clips"] == 0 and math.isnan(none["tempo_error_median_bpm"]) and math.isnan(none["key_accuracy"])
    assert none["tempo_error_median_ci95"] is None and none["instrument_accuracy_ci95"] == [1.0, 1.0]
    lo, hi = a["tempo_error_median_ci95"]  # medians of resampled {10, 30}: 10, 20 or 30
    assert 10.0 <= lo <= 20.0 <= hi <= 30.0


@needs_librosa
def test_yuefu_eval_with_a_prompt_file(hf_dir, tmp_path, capsys, one_thread):
    write_corpus(tmp_path / "corpus")
    prompts = _write_prompts(tmp_path / "mine.jsonl", [
        {"en": "a slow flute", "zh": "缓慢的长笛", "instrument": "flute", "bpm": 70},
        {"en": "piano, no tempo asked", "zh": "钢琴", "instrument": "piano"},
        {"en": "flute in G major at 90 bpm", "zh": "G大调长笛，每分钟90拍", "instrument": "flutes", "bpm": 90,
         "key": "G major"},
    ])
    out = tmp_path / "report.json"
    code = eval_cli.main([str(hf_dir), "--corpus", str(tmp_path / "corpus"), "--prompt-file", str(prompts),
                          "--seconds", "1", "--json", str(out), "--device", "cpu", "--quiet", "--languages", "zh",
                          "--save-audio", str(tmp_path / "clips")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 prompts from" in printed and "prompts with a BPM: 2 of 3; with a key: 1" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["n_prompts"] == 3 and report["prompt_source"] == f"prompt file {prompts}"
    assert "en" not in report and report["reference_clips"] == 3
    assert [p["family"] for p in report["prompts"]] == ["flutes", "keyboard & mallets", "flutes"]
    assert [p["bpm"] for p in report["prompts"]] == [70.0, None, 90.0]
    zh = report["zh"]
    assert (zh["model"]["clips"], zh["model"]["tempo_clips"], zh["model"]["key_clips"]) == (3, 2, 1)
    # the tempo error is the median over the two prompts that ask for one, recomputed from the measured clips
    tempos = [c["tempo"] for c in zh["clips"]]
    assert zh["model"]["tempo_error_median_bpm"] == pytest.approx(np.median([abs(tempos[0] - 70), abs(tempos[2] - 90)]))
    assert zh["clips"][1]["prompt_used"] == "piano"  # the normaliser's English, as the encoder saw it
    assert sorted(p.name for p in (tmp_path / "clips" / "zh").iterdir()) == ["000.wav", "001.wav", "002.wav"]
    # the ceiling rows stay the corpus's held-out clips judged against their own sidecars
    assert report["real"]["adherence"]["clips"] == 3 and report["real"]["adherence"]["tempo_clips"] == 3
    # --prompts and --prompt-file together: a one-line error
    assert eval_cli.main([str(hf_dir), "--corpus", str(tmp_path / "corpus"), "--prompt-file", str(prompts),
                          "--prompts", "4"]) == 2
    assert capsys.readouterr().err.strip().startswith("yuefu: error: give --prompts or --prompt-file")


def test_the_free_prompt_set_reads_whole():
    """configs/eval/freeform-prompts.jsonl: 48 prompts, 6 per judged family, each Chinese prompt reaching the encoder
    with no character dropped by the normaliser."""
    from collections import Counter
    from pathlib import Path

    from yuefu.conditioners.normalize import normalize_prompt
    from yuefu.eval.prompt_file import read_prompt_file

    prompts = read_prompt_file(Path(__file__).parents[1] / "configs" / "eval" / "freeform-prompts.jsonl")
    assert len(prompts) == 48 and set(Counter(p.family for p in prompts).values()) == {6}
    assert len(FAMILIES) == 8 and {p.family for p in prompts} == set(FAMILIES)
    for p in prompts:
        result = normalize_prompt(p.texts["zh"])
        assert result.unknown == [], (p.texts["zh"], result)
        if p.bpm is not None:  # the tempo it asks for reaches the encoder in both languages
            assert str(int(p.bpm)) in p.texts["en"] and str(int(p.bpm)) in result.text_used
