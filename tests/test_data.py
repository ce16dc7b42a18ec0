"""Specification of training data (yuefu.data): indexing, manifests, crops, the split, batches, texts, token cache.

References are closed forms: files whose content is a known function of time (a ramp, a sine), counts and
probabilities stated up front, and the sidecar fields as written.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from yuefu.data import (
    AudioDataset,
    GlobalBatchSampler,
    MusicInfo,
    TextAugment,
    TokenCache,
    TokenDataset,
    fill_cache,
    index_folder,
    load_entries,
    read_manifest,
    split_entries,
    training_text,
)
from yuefu.data.manifest import AudioEntry
from yuefu.train.cli import main as cli_main


def _ramp(path, sr: int, seconds: float, channels: int = 1, fmt: str | None = None, subtype: str | None = None):
    """x(t) = 0.9 * t / seconds: every sample says where in the file it is."""
    t = np.arange(int(sr * seconds)) / sr
    x = (0.9 * t / seconds).astype(np.float32)
    sf.write(path, np.stack([x] * channels, axis=1), sr, format=fmt, subtype=subtype)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "music"
    (d / "sub").mkdir(parents=True)
    _ramp(d / "a.wav", 16000, 1.0, channels=2)
    (d / "a.json").write_text(json.dumps({
        "description": "a calm erhu melody", "genre": "folk", "bpm": 92, "key": "D minor",
        "instruments": ["erhu", "guzheng"], "moods": "calm, nostalgic", "title": "ignored"}))
    _ramp(d / "sub" / "b.flac", 44100, 0.5)
    _ramp(d / "c.ogg", 8000, 2.0, fmt="OGG", subtype="VORBIS")
    _ramp(d / "d.mp3", 16000, 1.0, fmt="MP3", subtype="MPEG_LAYER_III")
    (d / "garbage.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)  # not audio
    sf.write(d / "empty.wav", np.zeros((0, 1), np.float32), 8000)  # no samples
    _ramp(d / "badmeta.wav", 8000, 0.5)
    (d / "badmeta.json").write_text("{not json")
    (d / "notes.txt").write_text("not audio, not indexed")
    return d


def test_index_writes_manifest_and_reports_each_unreadable_file(folder, capsys):
    assert cli_main(["data", "index", str(folder), "--quiet"]) == 0
    out, err = capsys.readouterr()
    skipped = {line.split(":")[0].removeprefix("skipped ").rsplit("/", 1)[-1]: line for line in err.splitlines()}
    assert set(skipped) == {"garbage.wav", "empty.wav", "badmeta.wav"}
    assert "no audio samples" in skipped["empty.wav"] and "not valid JSON" in skipped["badmeta.wav"]
    assert "4 files" in out and "3 skipped" in out

    lines = [json.loads(s) for s in (folder / "manifest.jsonl").read_text().splitlines()]
    by_path = {d["path"]: d for d in lines}
    assert set(by_path) == {"a.wav", "sub/b.flac", "c.ogg", "d.mp3"}  # relative to the manifest's folder
    a = by_path["a.wav"]
    assert (a["duration"], a["sample_rate"], a["channels"]) == (1.0, 16000, 2)
    assert a["description"] == "a calm erhu melody" and a["genre"] == "folk" and a["bpm"] == 92.0
    assert a["key"] == "D minor" and a["instruments"] == ["erhu", "guzheng"] and a["moods"] == ["calm", "nostalgic"]
    assert "title" not in a
    assert (by_path["sub/b.flac"]["duration"], by_path["sub/b.flac"]["sample_rate"]) == (0.5, 44100)
    assert by_path["c.ogg"]["duration"] == 2.0 and by_path["d.mp3"]["sample_rate"] == 16000

    # the manifest reads back to the same entries, paths resolved against its folder
    entries = read_manifest(folder / "manifest.jsonl")
    assert sorted(e.path for e in entries) == sorted((folder / p).resolve() for p in by_path)
    assert next(e for e in entries if e.path.name == "a.wav").info.instruments == ["erhu", "guzheng"]


def test_manifest_errors_name_the_line(tmp_path):
    from yuefu.errors import InvalidArgumentError

    bad = tmp_path / "m.jsonl"
    bad.write_text('{"path": "a.wav", "duration": 1, "sample_rate": 8000}\n{"path": "b.wav"}\n')
    with pytest.raises(InvalidArgumentError, match="line 2"):
        read_manifest(bad)


def test_crops_are_segments_of_the_file_at_the_model_rate(folder):
    entries = index_folder(folder).entries
    ds = AudioDataset(entries, sample_rate=8000, channels=1, segment_seconds=0.25, seed=3)
    for i, entry in enumerate(entries):
        for position in range(3):
            ex = ds[(i, position)]
            assert ex.wav.shape == (1, 2000) and ex.skipped == []
            if entry.path.suffix in (".ogg", ".mp3"):
                continue  # lossy: the ramp is only approximately kept
            # a ramp resampled and cropped is still the ramp: x = 0.9 t / duration, starting at the crop offset
            x = ex.wav[0, 100:-100].double()  # away from the resampler's edges
            slope = 0.9 / entry.duration / 8000
            assert torch.allclose(x.diff(), torch.full_like(x.diff(), slope), atol=2e-4)
            offset = float(x[0] / 0.9 * entry.duration) - 100 / 8000
            assert -1e-3 <= offset <= entry.duration - 0.25 + 1e-3


def test_short_files_are_zero_padded_and_crops_are_deterministic(folder):
    entries = [e for e in index_folder(folder).entries if e.path.name == "b.flac"]  # 0.5 s
    ds = AudioDataset(entries, sample_rate=8000, channels=2, segment_seconds=1.0, seed=0)
    ex = ds[(0, 7)]
    assert ex.wav.shape == (2, 8000) and ex.length == 4000
    assert torch.equal(ex.wav[0], ex.wav[1]) and (ex.wav[:, 4000:] == 0).all()
    assert torch.equal(ds[(0, 7)].wav, ex.wav)


def test_split_is_by_file_deterministic_and_stable(tmp_path):
    entries = [AudioEntry(tmp_path / f"f{i}.wav", 1.0, 8000, 1) for i in range(200)]
    train, valid = split_entries(entries, tmp_path, 0.1, seed=0)
    assert len(train) + len(valid) == 200 and 8 <= len(valid) <= 35
    again = split_entries(list(reversed(entries)), tmp_path, 0.1, seed=0)
    assert {e.path for e in again[1]} == {e.path for e in valid}
    more = entries + [AudioEntry(tmp_path / f"g{i}.wav", 1.0, 8000, 1) for i in range(50)]
    assert {e.path for e in valid} <= {e.path for e in split_entries(more, tmp_path, 0.1, seed=0)[1]}
    # two files: still one for validation
    assert [len(s) for s in split_entries(entries[:2], tmp_path, 0.05)] == [1, 1]


def test_global_batches_are_the_same_for_any_number_of_processes():
    one = GlobalBatchSampler(10, 4, seed=5, max_steps=7)
    two = [GlobalBatchSampler(10, 4, rank=r, world=2, seed=5, max_steps=7) for r in range(2)]
    for step, batch in enumerate(one):
        assert batch == two[0].indices(step) + two[1].indices(step)
    # positions are consecutive; each epoch of 10 positions is a permutation of the files
    flat = [item for batch in GlobalBatchSampler(10, 4, seed=5, max_steps=5) for item in batch]
    assert [p for _, p in flat] == list(range(20))
    assert sorted(i for i, _ in flat[:10]) == list(range(10)) and sorted(i for i, _ in flat[10:]) == list(range(10))
    # a resumed sampler continues where the step says
    assert list(GlobalBatchSampler(10, 4, seed=5, start_step=3, max_steps=5)) == list(one)[3:5]


def test_training_texts():
    info = MusicInfo(description="a calm erhu melody", genre="folk", bpm=92.0, instruments=["erhu"], moods=["calm"])
    plain = TextAugment(merge_text_p=0, word_dropout=0, cond_dropout=0)
    assert training_text(info, random.Random(0), plain) == "a calm erhu melody"
    assert training_text(info, random.Random(0), TextAugment(cond_dropout=1.0)) is None
    merged = TextAugment(merge_text_p=1, drop_desc_p=0, drop_other_p=0, word_dropout=0, cond_dropout=0)
    text = training_text(info, random.Random(1), merged)
    assert text.startswith("a calm erhu melody. ")
    assert set(text.split(". ")[1:]) == {"genre: folk", "bpm: 92", "instruments: erhu", "moods: calm"}
    # condition dropout and word dropout happen at their rates
    aug = TextAugment(merge_text_p=0, word_dropout=0.3, cond_dropout=0.2)
    texts = [training_text(info, random.Random(i), aug) for i in range(2000)]
    assert abs(sum(t is None for t in texts) / 2000 - 0.2) < 0.03
    kept = [len(t.split()) for t in texts if t is not None]
    assert abs(sum(kept) / (4 * len(kept)) - 0.7) < 0.03
    # tags alone when there is no description
    assert training_text(MusicInfo(genre="rock"), random.Random(0), plain) == "genre: rock"


def test_a_file_that_breaks_mid_run_is_skipped_and_reported(folder):
    entries = [e for e in index_folder(folder).entries if e.path.suffix in (".wav", ".flac")]
    ds = AudioDataset(entries, sample_rate=8000, channels=1, segment_seconds=0.25)
    names = [e.path.name for e in entries]
    victim = names.index("a.wav")
    data = (folder / "a.wav").read_bytes()
    (folder / "a.wav").write_bytes(data[: len(data) // 3])  # truncated after indexing: the header still says 1 s
    ex = ds[(victim, 0)]
    assert ex.wav.shape == (1, 2000)  # the next file took its place
    assert len(ex.skipped) == 1 and ex.skipped[0][0].endswith("a.wav")
    (folder / "a.wav").write_bytes(b"garbage" * 100)
    ex = ds[(victim, 1)]
    assert ex.skipped[0][0].endswith("a.wav") and "a.wav" in ex.skipped[0][1]


def test_token_cache_encodes_once_skips_failures_and_notices_changes(folder, tmp_path):
    entries, _ = load_entries(folder)  # indexes the folder (manifest absent)
    calls = []

    def encode(entry):
        calls.append(entry.path.name)
        if entry.path.name == "c.ogg":
            raise RuntimeError("codec exploded")
        n = int(entry.duration * 50)
        return (torch.arange(4 * n).view(4, n) % 64).to(torch.long)

    cache = TokenCache(tmp_path / "cache", fingerprint="codec-1")
    report = fill_cache(entries, cache, encode)
    assert sorted(calls) == sorted(e.path.name for e in entries)
    assert [p.rsplit("/", 1)[-1] for p, _ in report.skipped] == ["c.ogg"] and "codec exploded" in report.skipped[0][1]
    assert len(report.entries) == len(entries) - 1
    calls.clear()
    assert len(fill_cache(entries, cache, encode).entries) == len(entries) - 1 and calls == []  # nothing redone
    other = TokenCache(tmp_path / "cache", fingerprint="codec-2")  # another codec: encoded afresh
    fill_cache(entries, other, encode)
    assert len(calls) == len(entries)
    a = next(e for e in entries if e.path.name == "a.wav")
    _ramp(a.path, 16000, 2.0)  # the file changed
    calls.clear()
    fill_cache(entries, cache, encode)
    assert calls == ["a.wav"]

    ds = TokenDataset(report.entries, cache, segment_frames=10, seed=0,
                      text=TextAugment(merge_text_p=0, word_dropout=0, cond_dropout=0))
    i = report.entries.index(a)
    ex = ds[(i, 0)]
    full = torch.from_numpy(np.array(cache.get(a), dtype=np.int64))
    start = int(ex.codes[0, 0])  # codes are arange: the first value says where the crop starts
    assert torch.equal(ex.codes, full[:, start:start + 10]) and ex.text == "a calm erhu melody"
    short = next(j for j, e in enumerate(report.entries) if e.path.name == "b.flac")  # 25 frames
    ex = TokenDataset(report.entries, cache, segment_frames=40)[(short, 0)]
    assert ex.length == 25 and ex.codes.shape == (4, 40) and (ex.codes[:, 25:] == 0).all()
    assert math.isclose(a.duration, 1.0)


def test_training_texts_draw_every_caption_and_translate_chinese_ones_as_prompts_are():
    """Renderer sidecars hold several phrasings per language: training sees all of them, and a Chinese caption
    arrives exactly as the normaliser turns a Chinese prompt at generation time."""
    import random

    from yuefu.conditioners.normalize import normalize_prompt
    from yuefu.data.sidecar import TextAugment, parse_info, training_text

    zh = "欢快的国风摇滚，古筝和电吉他，每分钟120拍"
    info = parse_info({"description": "upbeat rock with guzheng", "captions": {"en": ["guzheng rock, 120 bpm"],
                                                                             "zh": [zh]}})
    assert info.captions == ["guzheng rock, 120 bpm", zh]
    aug = TextAugment(merge_text_p=0.0, word_dropout=0.0, cond_dropout=0.0, caption_p=0.5)
    rng = random.Random(0)
    seen = {training_text(info, rng, aug) for _ in range(200)}
    assert seen == {"upbeat rock with guzheng", "guzheng rock, 120 bpm", normalize_prompt(zh).text_used}
    with pytest.raises(ValueError, match="captions"):
        parse_info({"captions": [1, 2]})
