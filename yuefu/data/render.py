"""``yuefu data render``: a captioned training corpus rendered from the scores that ship with music21.

Sources are folk tunes (the Essen collection's Han Chinese songs and German songs, Ryan's Mammoth Collection,
O'Neill's 1850, a Nottingham sample) and Bach's chorales. Each clip: a piece, arranged (:mod:`yuefu.data.arrange`)
as a solo, a duet, a folk ensemble, a chorale or a rock/pop/dance/ballad band, written as a MIDI file, played by
FluidSynth with a General MIDI soundfont at 32 kHz, mixed to mono, cropped and level-normalised. Beside each
``OUT/{train,valid}/NNNNNN.wav`` a JSON sidecar holds English and Chinese captions (:mod:`yuefu.data.captions`),
the tags (genre, bpm, key, instruments, moods), the piece, its split and every rendering choice.

The corpus is a function of the seed: the plan (which piece each clip plays and the seed of its choices) is drawn
in this process, and every clip is rendered from its own seed, so the worker count and the order in which clips
finish change nothing. The train/valid split is by piece (a hash of its id): a piece's clips are all on one side.
Running it again over an existing corpus renders only what is missing, and rewrites the sidecars whose captions
come from an earlier version of the caption templates (the audio does not depend on them).

Needs the ``fluidsynth`` program and a GM soundfont (Debian: ``apt-get install fluidsynth fluid-soundfont-gm``)
and ``pip install music21``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from yuefu.data import arrange as arr
from yuefu.data import captions as cap
from yuefu.errors import InvalidArgumentError, YuefuError

SAMPLE_RATE = 32000
RENDERER = "yuefu.data.render/1"  # bump when a change to the renderer changes the audio of a given seed
TARGET_RMS_DB = -18.0  # level every clip is normalised to (then scaled down if its peak would exceed PEAK)
PEAK = 0.99
FADE_OUT_S = 0.02  # against a click where the crop cuts a note
DEBIAN_PACKAGES = "apt-get install fluidsynth fluid-soundfont-gm"
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/default.sf2",
              "/usr/share/sounds/sf2/TimGM6mb.sf2")


# ---------------------------------------------------------------------------------------------------------------
# Sources: music21's corpus folders, and how often each is drawn.


@dataclass(frozen=True)
class Source:
    culture: str  # picks melody instruments and genre words (arrange.LEADS, captions.CULTURE_GENRES)
    patterns: tuple[str, ...]  # globs under music21's corpus folder; () for Bach's chorales (music21's own list)
    weight: float  # relative share of clips
    about: str


SOURCES: dict[str, Source] = {
    "han": Source("chinese", ("essenFolksong/han*.abc",), 3.0, "Essen collection: Han Chinese folk songs"),
    "essen": Source("german", tuple(f"essenFolksong/{g}*.abc" for g in ("altdeu", "ballad", "boehme", "erk", "fink",
                                                                       "kinder")),
                    0.6, "Essen collection: German folk songs"),
    "ryans": Source("celtic", ("ryansMammoth/*.abc",), 1.2, "Ryan's Mammoth Collection (1883): fiddle tunes"),
    "oneills": Source("celtic", ("oneills1850/*.abc",), 1.0, "O'Neill's Music of Ireland (1850)"),
    "nottingham": Source("celtic", ("nottingham-dataset/*.abc",), 0.02, "Nottingham Music Database (a sample)"),
    "bach": Source("baroque", (), 1.2, "J. S. Bach: four-part chorales"),
}
DEFAULT_SOURCES = tuple(SOURCES)


@dataclass(frozen=True)
class PieceRef:
    id: str  # "han/han1#12", "ryans/AcaciaReel", "bach/bwv269"
    source: str
    path: str  # relative to music21's corpus folder ("essenFolksong/han1.abc"), or a chorale name ("bach/bwv269")
    number: int | None  # the tune's X: number in a multi-tune ABC file
    title: str


def _music21() -> Any:
    try:
        import music21
    except ImportError:
        raise YuefuError("music21 is not installed (the scores come from its corpus): pip install music21") from None
    return music21


def corpus_root() -> Path:
    return Path(str(_music21().common.getCorpusFilePath()))


_TUNE = re.compile(r"^X:\s*(\d+)", re.MULTILINE)


def _abc_tunes(text: str) -> dict[int, str]:
    """X: number -> the text of that tune (its header and body), for every tune of an ABC file."""
    starts = list(_TUNE.finditer(text))
    tunes: dict[int, str] = {}
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        tunes.setdefault(int(m.group(1)), text[m.start():end])
    return tunes


def _title(tune: str) -> str:
    m = re.search(r"^T:\s*(.+)$", tune, re.MULTILINE)
    return m.group(1).strip() if m else ""


@lru_cache(maxsize=64)
def _read_abc(path: str) -> dict[int, str]:
    return _abc_tunes((corpus_root() / path).read_text(encoding="latin-1"))


def list_pieces(source: str) -> list[PieceRef]:
    """Every piece of ``source``, in a fixed order."""
    spec = SOURCES[source]
    if not spec.patterns:
        from music21 import corpus

        return [PieceRef(name, source, name, None, name.split("/")[-1])
                for name in corpus.chorales.Iterator(returnType="filename")]
    root = corpus_root()
    refs = []
    for pattern in spec.patterns:
        for file in sorted(root.glob(pattern)):
            rel = file.relative_to(root).as_posix()
            tunes = _read_abc(rel)
            for number, tune in tunes.items():
                stem = file.stem if len(tunes) == 1 else f"{file.stem}#{number}"
                refs.append(PieceRef(f"{source}/{stem}", source, rel, number if len(tunes) > 1 else None,
                                     _title(tune)))
    return refs


def load_piece(ref: PieceRef) -> arr.Piece:
    """Parse a piece with music21 and reduce it for the arranger; ValueError when it cannot be used."""
    _music21()
    from music21 import converter, corpus

    if ref.path.endswith(".abc"):
        tunes = _read_abc(ref.path)
        text = tunes[ref.number] if ref.number is not None else next(iter(tunes.values()))
        score = converter.parse(text, format="abc")
    else:
        score = corpus.parse(ref.path)
    return arr.piece_from_score(score, ref.id, ref.title, ref.source, SOURCES[ref.source].culture)


def split_of(piece_id: str, valid_fraction: float = 0.05) -> str:
    """"train" or "valid" for a piece, from a hash of its id (independent of the seed and of the corpus size)."""
    h = int.from_bytes(hashlib.sha256(piece_id.encode()).digest()[:8], "big") / 2**64
    return "valid" if h < valid_fraction else "train"


# ---------------------------------------------------------------------------------------------------------------
# Plan: which piece each clip plays, and the seed of its choices.


@dataclass(frozen=True)
class PieceJob:
    ref: PieceRef
    split: str
    clips: tuple[tuple[int, int], ...]  # (clip index, clip seed) for each clip of this piece


def plan_corpus(n_clips: int, seed: int, sources: Sequence[str] = DEFAULT_SOURCES, clips_per_piece: int = 2,
                valid_fraction: float = 0.05) -> list[PieceJob]:
    """``n_clips`` clips, ``clips_per_piece`` consecutive clips per piece, pieces drawn by source weight."""
    names = [s for s in SOURCES if s in set(sources)]  # a fixed order, whatever order they were given in
    rng = random.Random(f"yuefu-corpus:{seed}")
    catalogue = {s: list_pieces(s) for s in names}
    names = [s for s in names if catalogue[s]]
    if not names:
        raise YuefuError(f"no pieces found in music21's corpus for sources {list(sources)}")
    order = {s: rng.sample(catalogue[s], len(catalogue[s])) for s in names}
    used = dict.fromkeys(names, 0)
    jobs, index = [], 0
    while index < n_clips:
        s = rng.choices(names, weights=[SOURCES[n].weight for n in names])[0]
        ref = order[s][used[s] % len(order[s])]
        used[s] += 1
        k = min(clips_per_piece, n_clips - index)
        clips = tuple((index + i, rng.getrandbits(32)) for i in range(k))
        jobs.append(PieceJob(ref, split_of(ref.id, valid_fraction), clips))
        index += k
    return jobs


# ---------------------------------------------------------------------------------------------------------------
# FluidSynth.


def find_fluidsynth() -> str:
    path = shutil.which("fluidsynth")
    if path is None:
        raise YuefuError(f"the fluidsynth program is not installed; on Debian/Ubuntu: {DEBIAN_PACKAGES}")
    return path


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The given soundfont, else $YUEFU_SOUNDFONT, else the first GM soundfont found in the usual places."""
    given = soundfont or os.environ.get("YUEFU_SOUNDFONT")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise YuefuError(f"soundfont {path} does not exist")
        return path
    for candidate in SOUNDFONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise YuefuError(f"no General MIDI soundfont found (looked for {SOUNDFONTS[0]} and others); on Debian/Ubuntu: "
                     f"{DEBIAN_PACKAGES}, or pass --soundfont FILE.sf2")


def fluidsynth_version(fluidsynth: str) -> str:
    out = subprocess.run([fluidsynth, "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def synthesize(midi: bytes, soundfont: Path, fluidsynth: str = "fluidsynth", sample_rate: int = SAMPLE_RATE,
               gain: float = 0.4, timeout: float = 120.0) -> np.ndarray:
    """Play a MIDI file with FluidSynth, faster than real time; returns mono float32 samples [T]."""
    with tempfile.TemporaryDirectory(prefix="yuefu-render-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        cmd = [fluidsynth, "-ni", "-q", "-g", str(gain), "-r", str(sample_rate), "-F", str(wav), "-T", "wav",
               "-O", "float", "-o", "synth.dynamic-sample-loading=1", "-o", "synth.cpu-cores=1",
               str(soundfont), str(mid)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"fluidsynth took more than {timeout:g} s") from None
        if done.returncode != 0 or not wav.exists():
            why = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"fluidsynth failed (exit {done.returncode}): {why[-1] if why else 'no output'}")
        samples, sr = sf.read(wav, dtype="float32", always_2d=True)  # [T, 2]
    if sr != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz instead of {sample_rate} Hz")
    return samples.mean(axis=1)


def finish(samples: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Crop (or pad) to ``seconds``, normalise the level to TARGET_RMS_DB without exceeding PEAK, fade the cut."""
    n = int(round(seconds * sample_rate))
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(samples))] = samples[:n]
    rms = float(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
    if rms < 1e-5:
        raise RuntimeError("the rendered clip is silent")
    out *= 10 ** (TARGET_RMS_DB / 20) / rms
    peak = float(np.abs(out).max())
    if peak > PEAK:
        out *= PEAK / peak
    fade = min(n, int(FADE_OUT_S * sample_rate))
    out[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


# ---------------------------------------------------------------------------------------------------------------
# One piece's clips (runs in a worker process).


@dataclass(frozen=True)
class RenderSettings:
    out_dir: Path
    seconds: float
    seed: int
    styles: tuple[str, ...] | None
    soundfont: Path
    fluidsynth: str
    fluidsynth_version: str


def clip_paths(out_dir: Path, split: str, index: int) -> tuple[Path, Path]:
    stem = out_dir / split / f"{index:06d}"
    return stem.with_suffix(".wav"), stem.with_suffix(".json")


def _already_rendered(json_path: Path, settings: RenderSettings, clip_seed: int) -> str | None:
    """The clip's state: "done" (audio and sidecar current), "captions" (the audio is current, the sidecar has
    captions of an earlier :data:`yuefu.data.captions.CAPTIONS`) or None (to be rendered)."""
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        r = meta["render"]
        if (r["renderer"], r["corpus_seed"], r["clip_seed"], meta["duration"]) != (
                RENDERER, settings.seed, clip_seed, settings.seconds) or not json_path.with_suffix(".wav").exists():
            return None
        return "done" if r.get("captions") == cap.CAPTIONS else "captions"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sidecar(piece: arr.Piece, plan: arr.Plan, split: str, settings: RenderSettings, clip_seed: int) -> dict[str, Any]:
    """The JSON beside a clip: captions, tags, piece, split and every rendering choice."""
    rng = random.Random(clip_seed ^ 0x5EED)
    tonic = (piece.tonic + plan.transpose) % 12
    others = [x for x in plan.instruments if x != plan.lead]
    fields = cap.CaptionFields(style=plan.style, culture=piece.culture, lead=plan.lead, others=others, bpm=plan.bpm,
                               tonic=tonic, mode=piece.mode, pentatonic=piece.pentatonic,
                               fast=plan.bpm * piece.beat >= 100 or plan.style in ("rock", "dance"))
    moods = cap.moods(fields, rng)
    en, zh = cap.captions(fields, moods, rng)
    genre_en, genre_zh = cap.genre(fields)
    return {
        "description": en[0],
        "description_zh": zh[0],
        "captions": {"en": en, "zh": zh},
        "genre": genre_en,
        "genre_zh": genre_zh,
        "bpm": plan.bpm,
        "beat": "dotted quarter" if piece.beat == 1.5 else "quarter",
        "key": cap.key_name(tonic, piece.mode),
        "key_zh": cap.key_name_zh(tonic, piece.mode),
        "instruments": [arr.INSTRUMENTS[x].en for x in cap.unique(plan.instruments)],  # two harp parts: one tag
        "instruments_zh": [arr.INSTRUMENTS[x].zh for x in cap.unique(plan.instruments)],
        "moods": [m[0] for m in moods],
        "moods_zh": [m[1] for m in moods],
        "piece": piece.id,
        "title": piece.title,
        "source": piece.source,
        "split": split,
        "duration": settings.seconds,
        "sample_rate": SAMPLE_RATE,
        "render": {
            **dataclasses.asdict(plan),
            "programs": {x: arr.INSTRUMENTS[x].program for x in plan.instruments if x not in ("drums", "percussion")},
            "meter": piece.meter,
            "quarter_bpm": plan.bpm * piece.beat,
            "score_key": cap.key_name(piece.tonic, piece.mode),
            "pentatonic": piece.pentatonic,
            "corpus_seed": settings.seed,
            "clip_seed": clip_seed,
            "soundfont": settings.soundfont.name,
            "synth": settings.fluidsynth_version,
            "renderer": RENDERER,
            "captions": cap.CAPTIONS,
        },
    }


@dataclass
class JobResult:
    seconds: float = 0.0
    clips: dict[str, int] = field(default_factory=lambda: {"train": 0, "valid": 0})
    pieces: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # one line each
    recaptioned: int = 0  # clips kept whose sidecars got the current captions

    def add(self, job: PieceJob, settings: RenderSettings) -> None:
        """Count one clip of ``job`` as there."""
        self.seconds += settings.seconds
        self.clips[job.split] += 1
        self.pieces.add(job.ref.id)


def render_job(job: PieceJob, settings: RenderSettings) -> JobResult:
    """Render (or find already rendered) every clip of one piece; problems are reported, never raised."""
    result = JobResult()
    todo = []
    for index, clip_seed in job.clips:
        wav_path, json_path = clip_paths(settings.out_dir, job.split, index)
        state = _already_rendered(json_path, settings, clip_seed)
        if state == "done":
            result.add(job, settings)
        else:
            todo.append((index, clip_seed, wav_path, json_path, state == "captions"))
    if not todo:
        return result
    try:
        piece = load_piece(job.ref)
    except Exception as e:  # music21 raises many kinds on a score it cannot read
        result.problems.append(f"skipped {job.ref.id}: cannot use the score ({_one_line(e)})")
        return result
    from yuefu import audio

    for index, clip_seed, wav_path, json_path, captions_only in todo:
        try:
            plan = arr.plan_arrangement(piece, random.Random(clip_seed), settings.styles)
            recorded = _recorded_render(json_path, plan) if captions_only else None
            if recorded is not None:  # the audio stands: new captions, same clip
                meta = sidecar(piece, plan, job.split, settings, clip_seed)
                meta["render"].update({k: recorded[k] for k in ("soundfont", "synth") if k in recorded})  # its maker
                _write_json(json_path, meta)
                result.recaptioned += 1
                result.add(job, settings)
                continue
            midi = arr.to_midi(arr.arrange(piece, plan, settings.seconds))
            samples = finish(synthesize(midi, settings.soundfont, settings.fluidsynth), settings.seconds)
            meta = sidecar(piece, plan, job.split, settings, clip_seed)
            wav_path.parent.mkdir(parents=True, exist_ok=True)
            audio.write(wav_path, samples, SAMPLE_RATE)
            _write_json(json_path, meta)
        except Exception as e:
            result.problems.append(f"skipped clip {index} of {job.ref.id}: {_one_line(e)}")
            continue
        result.add(job, settings)
    return result


def _recorded_render(json_path: Path, plan: arr.Plan) -> dict[str, Any] | None:
    """The ``render`` block of the sidecar at ``json_path`` if it records ``plan`` (the clip beside it was
    rendered from it), else None."""
    try:
        recorded = json.loads(json_path.read_text(encoding="utf-8"))["render"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    planned = json.loads(json.dumps(dataclasses.asdict(plan)))  # tuples as lists, as the sidecar has them
    same = isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in planned.items())
    return recorded if same else None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------------------------
# The corpus.


@dataclass
class RenderSummary:
    out_dir: Path
    clips: int
    seconds: float  # of audio
    train: int
    valid: int
    pieces: int
    skipped: list[str]  # one line per problem
    wall_seconds: float
    recaptioned: int = 0  # clips already rendered whose sidecars were rewritten with the current captions

    @property
    def speed(self) -> float:
        """Minutes of audio per minute of wall time."""
        return self.seconds / max(self.wall_seconds, 1e-9)


def render_corpus(out_dir: str | os.PathLike, hours: float = 1.0, seed: int = 0, workers: int = 2,
                  sources: Sequence[str] | None = None, *, clip_seconds: float = 10.0, clips: int | None = None,
                  styles: Sequence[str] | None = None, soundfont: str | os.PathLike | None = None,
                  clips_per_piece: int = 2, progress: bool = True) -> RenderSummary:
    """Render ``hours`` of audio (or exactly ``clips`` clips) of ``clip_seconds`` each into ``out_dir``.

    Clips already there from the same seed and settings are kept, so an interrupted run resumes; those whose
    sidecars hold captions of an earlier :data:`yuefu.data.captions.CAPTIONS` get new sidecars, not new audio.
    Problems with single pieces or clips are printed as one line each and skipped; a missing fluidsynth, soundfont
    or music21 raises YuefuError before anything is rendered.
    """
    sources = tuple(sources) if sources else DEFAULT_SOURCES
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise InvalidArgumentError(f"unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
    if styles is not None:
        styles = tuple(styles)
        bad = [s for s in styles if s not in arr.STYLES]
        if bad or not styles:
            raise InvalidArgumentError(f"unknown style(s) {bad}; known: {', '.join(arr.STYLES)}")
    if not (math.isfinite(clip_seconds) and 1.0 <= clip_seconds <= 120.0):
        raise InvalidArgumentError(f"clip length must be in [1, 120] seconds, got {clip_seconds:g}")
    if clips is None:
        if not (math.isfinite(hours) and hours > 0):
            raise InvalidArgumentError(f"hours must be positive, got {hours:g}")
        clips = max(1, round(hours * 3600 / clip_seconds))
    if workers < 1:
        raise InvalidArgumentError(f"workers must be at least 1, got {workers}")
    fluidsynth = find_fluidsynth()
    settings = RenderSettings(out_dir=Path(out_dir), seconds=float(clip_seconds), seed=int(seed), styles=styles,
                              soundfont=find_soundfont(soundfont), fluidsynth=fluidsynth,
                              fluidsynth_version=fluidsynth_version(fluidsynth))
    _music21()
    started = time.perf_counter()
    jobs = plan_corpus(clips, seed, sources, clips_per_piece)
    for split in ("train", "valid"):
        (settings.out_dir / split).mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    total = JobResult()
    bar = tqdm(total=clips, unit="clip", desc="rendering", disable=not progress, dynamic_ncols=True)

    def collect(r: JobResult, n: int) -> None:
        total.seconds += r.seconds
        for split, count in r.clips.items():
            total.clips[split] += count
        total.pieces |= r.pieces
        total.recaptioned += r.recaptioned
        for line in r.problems:
            total.problems.append(line)
            tqdm.write(f"yuefu: {line}", file=sys.stderr)
        bar.update(n)

    work = partial(render_job, settings=settings)
    try:
        if workers == 1:
            for job in jobs:
                collect(work(job), len(job.clips))
        else:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(work, job): len(job.clips) for job in jobs}
                try:
                    for future in as_completed(futures):
                        collect(future.result(), futures[future])
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    summary = RenderSummary(out_dir=settings.out_dir, clips=sum(total.clips.values()), seconds=total.seconds,
                            train=total.clips["train"], valid=total.clips["valid"], pieces=len(total.pieces),
                            skipped=total.problems, wall_seconds=time.perf_counter() - started,
                            recaptioned=total.recaptioned)
    _write_json(settings.out_dir / "summary.json", {
        "renderer": RENDERER, "captions": cap.CAPTIONS, "seed": seed, "clips_requested": clips,
        "clip_seconds": clip_seconds,
        "sources": list(sources), "styles": list(styles) if styles else None, "clips_per_piece": clips_per_piece,
        "clips": summary.clips, "train": summary.train, "valid": summary.valid, "pieces": summary.pieces,
        "hours": summary.seconds / 3600, "skipped": summary.skipped, "wall_seconds": round(summary.wall_seconds, 1),
        "soundfont": str(settings.soundfont), "synth": settings.fluidsynth_version,
        "music21": _music21().__version__,
    })
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Command line: ``yuefu data render OUT_DIR --hours H --seed S --workers N``.


def add_render_parser(data_sub: Any) -> argparse.ArgumentParser:
    """Add ``render`` to the subcommands of ``yuefu data``."""
    r = data_sub.add_parser("render", help="render a captioned training corpus from music21's scores (FluidSynth)",
                            description=__doc__.split("\n\n")[0])
    r.add_argument("out_dir", metavar="OUT_DIR", help="folder to write train/ and valid/ clips into")
    r.add_argument("--hours", type=float, default=1.0, help="hours of audio to render (default 1)")
    r.add_argument("--seed", type=int, default=0, help="corpus seed: same seed, same corpus (default 0)")
    r.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="parallel rendering processes (default: 2, or 1 on one core)")
    r.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10)")
    r.add_argument("--sources", default=None,
                   help=f"comma-separated sources (default all: {','.join(SOURCES)})")
    r.add_argument("--styles", default=None, help=f"comma-separated arrangement styles (default all: "
                                                  f"{','.join(arr.STYLES)})")
    r.add_argument("--soundfont", default=None, help="a General MIDI .sf2 (default: FluidR3_GM from Debian)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_render)
    return r


def add_subparsers(sub: Any) -> argparse.ArgumentParser:
    """Add ``data`` (with ``render``) to the top-level subcommands of ``yuefu``; dispatch with :func:`cmd_data`."""
    data = sub.add_parser("data", help="build training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    add_render_parser(data_sub)
    return data


def cmd_data(args: argparse.Namespace) -> int:
    return args.func(args)


def _names(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def cmd_render(args: argparse.Namespace) -> int:
    summary = render_corpus(args.out_dir, hours=args.hours, seed=args.seed, workers=args.workers,
                            sources=_names(args.sources), clip_seconds=args.seconds, styles=_names(args.styles),
                            soundfont=args.soundfont, progress=not args.quiet)
    print(f"rendered {summary.clips} clips ({summary.seconds / 3600:.2f} h; train {summary.train}, valid "
          f"{summary.valid}; {summary.pieces} pieces) into {summary.out_dir} in {summary.wall_seconds / 60:.1f} min: "
          f"{summary.speed:.1f} min of audio per min; {len(summary.skipped)} skipped")
    if summary.recaptioned:
        print(f"  {summary.recaptioned} clips were already rendered with older captions: their sidecars now have "
              f"the current ones ({cap.CAPTIONS}), the audio is unchanged")
    return 0
