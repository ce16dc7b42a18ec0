"""The corpus renderer: real music21 scores through real FluidSynth.

Needs ``apt-get install fluidsynth fluid-soundfont-gm`` and ``pip install music21``; skipped without them. The
pitch and tempo checks compare the audio with the score read independently through music21 and with the tempo
the sidecar claims, measured with plain numpy (a chroma histogram, an onset autocorrelation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from yuefu.data import render
from yuefu.errors import InvalidArgumentError, YuefuError

music21 = pytest.importorskip("music21", reason="pip install music21")
try:
    render.find_fluidsynth()
    render.find_soundfont()
except YuefuError as e:
    pytest.skip(f"no FluidSynth or soundfont ({e})", allow_module_level=True)

SIDECAR_FIELDS = {"description": str, "description_zh": str, "captions": dict, "genre": str, "genre_zh": str,
                  "bpm": int, "key": str, "key_zh": str, "instruments": list, "instruments_zh": list, "moods": list,
                  "moods_zh": list, "piece": str, "title": str, "source": str, "split": str, "duration": float,
                  "sample_rate": int, "render": dict}


def _clips(folder: Path) -> list[tuple[Path, dict]]:
    return [(p.with_suffix(".wav"), json.loads(p.read_text(encoding="utf-8")))
            for p in sorted(folder.glob("*/*.json"))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    summary = render.render_corpus(out, clips=6, clip_seconds=4.0, seed=2024, workers=2, progress=False)
    assert summary.clips == 6 and not summary.skipped
    assert summary.seconds == pytest.approx(24.0)
    return out


def test_clips_are_32khz_mono_non_silent_and_of_the_asked_length(corpus: Path) -> None:
    clips = _clips(corpus)
    assert len(clips) == 6
    for wav, meta in clips:
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.frames) == (32000, 1, 4 * 32000)
        x, _ = sf.read(wav, dtype="float32")
        rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
        assert -30 < rms_db < -10, f"{wav.name}: {rms_db:.1f} dBFS"
        assert np.abs(x).max() < 1.0
        assert wav.parent.name == meta["split"]


def test_sidecars_are_complete_and_captions_state_tempo_and_key_in_both_languages(corpus: Path) -> None:
    for wav, meta in _clips(corpus):
        for name, kind in SIDECAR_FIELDS.items():
            assert isinstance(meta[name], kind), f"{wav.name}: {name}"
        assert meta["instruments"] and len(meta["instruments"]) == len(meta["instruments_zh"])
        assert len(set(meta["instruments"])) == len(meta["instruments"])  # two parts on one instrument: one tag
        assert set(meta["instruments"]) == {render.arr.INSTRUMENTS[x].en for x in meta["render"]["instruments"]}
        assert meta["moods"] and meta["split"] in ("train", "valid")
        bpm = str(meta["bpm"])
        assert bpm in meta["description"] and meta["key"] in meta["description"]
        assert bpm in meta["description_zh"] and meta["key_zh"] in meta["description_zh"]
        # The Chinese key names the same tonic and mode: "F# minor" <-> "升F小调", "Bb major" <-> "降B大调".
        tonic, mode = meta["key"].split()
        zh_tonic = tonic[0] if len(tonic) == 1 else {"#": "升", "b": "降"}[tonic[1]] + tonic[0]
        assert meta["key_zh"] == zh_tonic + {"major": "大调", "minor": "小调"}[mode]
        assert len(meta["captions"]["en"]) >= 3 and len(meta["captions"]["zh"]) >= 3
        assert meta["captions"]["en"][0] == meta["description"]
        assert all("\u4e00" <= ch <= "\u9fff" for ch in meta["description_zh"][:1])


def test_same_seed_gives_identical_files_whatever_the_worker_count(corpus: Path, tmp_path: Path) -> None:
    render.render_corpus(tmp_path, clips=6, clip_seconds=4.0, seed=2024, workers=1, progress=False)
    first = sorted(p.relative_to(corpus) for p in corpus.glob("*/*.*"))
    again = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("*/*.*"))
    assert first == again and len(first) == 12
    for rel in first:
        assert (corpus / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_a_rerun_rewrites_old_captions_and_keeps_the_audio(corpus: Path, tmp_path: Path) -> None:
    """A corpus rendered with an earlier caption version gets new sidecars, not new audio; a sidecar whose recorded
    plan is not what the seed plans is rendered again, audio and all."""
    import os
    import shutil

    out = tmp_path / "corpus"
    shutil.copytree(corpus, out)
    (old_json, old_meta), (bad_json, bad_meta) = [(p, json.loads(p.read_text(encoding="utf-8")))
                                                  for p in sorted(out.glob("*/*.json"))[:2]]
    want = {p: p.read_bytes() for p in (old_json, bad_json)}
    old_meta["render"].pop("captions")  # written before caption versions were recorded
    old_meta["description"] = old_meta["captions"]["en"][0] = "folk folk in 6/8"
    old_meta["render"]["synth"] = "FluidSynth runtime version 0.9 (elsewhere)"  # the audio's maker: kept
    old_json.write_text(json.dumps(old_meta), encoding="utf-8")
    want[old_json] = json.dumps({**json.loads(want[old_json]), "render": {
        **json.loads(want[old_json])["render"], "synth": old_meta["render"]["synth"]}}, ensure_ascii=False,
        indent=1).encode() + b"\n"
    bad_meta["render"]["captions"] = "yuefu.data.captions/1"
    bad_meta["render"]["bpm"] += 7  # not the plan this clip's seed gives
    bad_json.write_text(json.dumps(bad_meta), encoding="utf-8")
    for wav in (old_json.with_suffix(".wav"), bad_json.with_suffix(".wav")):
        os.utime(wav, (1_000_000_000, 1_000_000_000))
    summary = render.render_corpus(out, clips=6, clip_seconds=4.0, seed=2024, workers=1, progress=False)
    assert summary.clips == 6 and summary.recaptioned == 1 and not summary.skipped
    for p in (old_json, bad_json):
        assert p.read_bytes() == want[p], p.name  # the current sidecar, byte for byte
    assert old_json.with_suffix(".wav").stat().st_mtime == 1_000_000_000  # kept
    assert bad_json.with_suffix(".wav").stat().st_mtime != 1_000_000_000  # rendered again
    assert bad_json.with_suffix(".wav").read_bytes() == (corpus / bad_json.relative_to(out)).with_suffix(
        ".wav").read_bytes()
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["captions"] == render.cap.CAPTIONS


def test_split_is_by_piece() -> None:
    jobs = render.plan_corpus(3000, seed=1)
    splits: dict[str, set[str]] = {"train": set(), "valid": set()}
    for job in jobs:
        splits[job.split].add(job.ref.id)
    assert splits["train"] and splits["valid"] and not splits["train"] & splits["valid"]
    assert 0.02 < len(splits["valid"]) / len(splits["train"] | splits["valid"]) < 0.1
    # A piece's side does not depend on the seed either: another corpus never leaks it across.
    for job in render.plan_corpus(1000, seed=2):
        assert job.ref.id not in splits["valid" if job.split == "train" else "train"]


def _chroma(x: np.ndarray, sr: int) -> np.ndarray:
    """Energy per pitch class of the spectrum between 130 Hz and 2.5 kHz (a plain STFT, no librosa)."""
    n, hop = 8192, 2048
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = (freqs > 130) & (freqs < 2500)
    pcs = np.round(12 * np.log2(freqs[band] / 440) + 69).astype(int) % 12
    chroma = np.bincount(pcs, weights=power[band], minlength=12)
    return chroma / chroma.sum()


def test_solo_melody_audio_has_the_pitch_classes_of_the_score(tmp_path: Path) -> None:
    render.render_corpus(tmp_path, clips=6, clip_seconds=5.0, seed=5, workers=2, sources=["han"], styles=["solo"],
                         clips_per_piece=1, progress=False)
    checked = 0
    for wav, meta in _clips(tmp_path):
        r = meta["render"]
        # The score, read on its own: music21's corpus, the tune's X: number, repeats played out.
        file, number = meta["piece"].split("/")[1].split("#")
        part = music21.corpus.parse(f"essenFolksong/{file}", number=int(number)).parts[0].expandRepeats()
        window = (r["start"], r["start"] + meta["duration"] * r["quarter_bpm"] / 60)
        if window[1] > part.highestTime:
            continue  # the clip loops back to the start of the tune: leave it out of this check
        histogram = np.zeros(12)  # quarter notes sounding per pitch class within the clip, transposed as claimed
        for n in part.flatten().stripTies().notes:
            overlap = min(n.offset + n.quarterLength, window[1]) - max(n.offset, window[0])
            if overlap > 0:
                histogram[(n.pitch.midi + r["transpose"]) % 12] += overlap
        x, sr = sf.read(wav, dtype="float64")
        chroma = _chroma(x, sr)
        corr = [np.corrcoef(chroma, np.roll(histogram, k))[0, 1] for k in range(12)]
        assert int(np.argmax(corr)) == 0, f"{meta['piece']}: audio matches the score shifted by {np.argmax(corr)}"
        # Harmonics (a reed's strong third partial is a fifth up) blur the match, but the claimed key wins clearly.
        assert corr[0] > 0.7 and corr[0] - sorted(corr)[-2] > 0.1, f"{meta['piece']} on {r['lead']}: {corr}"
        checked += 1
    assert checked >= 2


def _tempo(x: np.ndarray, sr: int, low: float = 80.0, high: float = 160.0) -> float:
    """Beats per minute in [low, high): the strongest autocorrelation lag of the spectral-flux onset envelope."""
    n, hop = 1024, 160
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    spec = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(np.diff(spec, axis=0), 0).sum(1)
    flux -= flux.mean()
    ac = np.correlate(flux, flux, "full")[len(flux) - 1:]
    fps = sr / hop
    lags = np.arange(int(fps * 60 / high), int(fps * 60 / low) + 1)
    k = int(lags[np.argmax(ac[lags])])
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    return 60 * fps / (k + 0.5 * (a - c) / (a - 2 * b + c))  # parabolic interpolation of the peak


def test_band_arrangements_play_at_the_requested_tempo(tmp_path: Path) -> None:
    render.render_corpus(tmp_path, clips=4, clip_seconds=8.0, seed=12, workers=2, sources=["ryans", "bach"],
                         styles=["rock", "pop"], clips_per_piece=1, progress=False)
    clips = _clips(tmp_path)
    assert len(clips) >= 2
    for wav, meta in clips:
        assert meta["render"]["drums"] in ("rock", "pop") and 80 <= meta["bpm"] < 160
        x, sr = sf.read(wav, dtype="float64")
        assert _tempo(x, sr) == pytest.approx(meta["bpm"], rel=0.05), meta["piece"]


def test_missing_fluidsynth_or_soundfont_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with pytest.raises(YuefuError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        render.render_corpus(tmp_path, clips=1, progress=False)
    monkeypatch.undo()
    with pytest.raises(YuefuError, match="soundfont") as e:
        render.render_corpus(tmp_path, clips=1, soundfont=tmp_path / "none.sf2", progress=False)
    assert "\n" not in str(e.value)


def test_a_score_that_cannot_be_parsed_is_reported_and_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    real = render.load_piece
    bad = render.plan_corpus(4, seed=9, clips_per_piece=1)[1].ref.id

    def flaky(ref: render.PieceRef):
        if ref.id == bad:
            raise ValueError("unreadable ABC\nsecond line")
        return real(ref)

    monkeypatch.setattr(render, "load_piece", flaky)
    summary = render.render_corpus(tmp_path, clips=4, clip_seconds=2.0, seed=9, workers=1, clips_per_piece=1,
                                   progress=False)
    assert summary.clips == 3 and len(summary.skipped) == 1 and bad in summary.skipped[0]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if bad in ln]
    assert len(lines) == 1 and "unreadable ABC second line" in lines[0]


def test_cli_data_render(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="yuefu")
    render.add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "render", str(tmp_path), "--hours", "0.001", "--seed", "3", "--workers", "1",
                              "--seconds", "2", "--sources", "han", "--quiet"])
    assert render.cmd_data(args) == 0
    assert len(list(tmp_path.glob("*/*.wav"))) == 2  # 3.6 s of audio in 2 s clips
    assert "rendered 2 clips" in capsys.readouterr().out
    args = parser.parse_args(["data", "render", str(tmp_path), "--hours", "0"])
    with pytest.raises(InvalidArgumentError):
        render.cmd_data(args)
    args = parser.parse_args(["data", "render", str(tmp_path), "--sources", "nowhere"])
    with pytest.raises(InvalidArgumentError, match="unknown source"):
        render.cmd_data(args)


def test_plan_is_a_function_of_the_seed() -> None:
    a, b, c = (render.plan_corpus(50, seed=s) for s in (4, 4, 5))
    assert a == b and a != c
    assert [j.ref.id for j in render.plan_corpus(50, seed=4, sources=["bach", "han"])] == [
        j.ref.id for j in render.plan_corpus(50, seed=4, sources=["han", "bach"])]
