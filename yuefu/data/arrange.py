"""Arrangements: a folk tune or a chorale (a music21 score) -> the parts of a small band -> a standard MIDI file.

- :func:`piece_from_score` reduces a score to what an arranger needs (:class:`Piece`): the melody, the lower
  voices of a chorale, the chord symbols a tune has written over it, the meter, the key.
- :func:`plan_arrangement` draws every free choice (style, instruments, tempo, transposition, where the clip
  starts, mix) from a ``random.Random``, so that a clip is a function of (piece, seed) alone.
- :func:`arrange` turns a piece and a plan into timed notes per track, and :func:`to_midi` writes them as a
  type-1 SMF that FluidSynth plays.

Times are in quarter notes from the start of the clip unless said otherwise; pitches are MIDI note numbers.
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------------------------
# Instruments: General MIDI program (0-based), English and Chinese names, and the register a melody sits in.


@dataclass(frozen=True)
class Instrument:
    program: int  # GM program 0..127 (ignored for the drum kit, which plays on channel 10)
    en: str
    zh: str
    center: int = 72  # MIDI pitch a melody on this instrument is centred on


INSTRUMENTS: dict[str, Instrument] = {
    "piano": Instrument(0, "piano", "钢琴", 72),
    "electric_piano": Instrument(4, "electric piano", "电钢琴", 70),
    "harpsichord": Instrument(6, "harpsichord", "羽管键琴", 72),
    "celesta": Instrument(8, "celesta", "钢片琴", 79),
    "glockenspiel": Instrument(9, "glockenspiel", "钟琴", 84),
    "music_box": Instrument(10, "music box", "八音盒", 81),
    "vibraphone": Instrument(11, "vibraphone", "颤音琴", 74),
    "marimba": Instrument(12, "marimba", "马林巴", 72),
    "dulcimer": Instrument(15, "hammered dulcimer", "扬琴", 74),
    "organ": Instrument(19, "church organ", "管风琴", 67),
    "rock_organ": Instrument(18, "rock organ", "摇滚风琴", 67),
    "accordion": Instrument(21, "accordion", "手风琴", 72),
    "harmonica": Instrument(22, "harmonica", "口琴", 74),
    "nylon_guitar": Instrument(24, "nylon-string guitar", "古典吉他", 67),
    "acoustic_guitar": Instrument(25, "acoustic guitar", "木吉他", 67),
    "clean_guitar": Instrument(27, "clean electric guitar", "清音电吉他", 67),
    "overdrive_guitar": Instrument(29, "overdriven guitar", "过载电吉他", 69),
    "distortion_guitar": Instrument(30, "distorted electric guitar", "失真电吉他", 67),
    "upright_bass": Instrument(32, "upright bass", "低音提琴", 43),
    "electric_bass": Instrument(33, "electric bass", "电贝斯", 40),
    "fretless_bass": Instrument(35, "fretless bass", "无品贝斯", 40),
    "synth_bass": Instrument(38, "synth bass", "合成器贝斯", 40),
    "violin": Instrument(40, "violin", "小提琴", 76),
    "viola": Instrument(41, "viola", "中提琴", 62),
    "cello": Instrument(42, "cello", "大提琴", 55),
    "harp": Instrument(46, "harp", "竖琴", 72),
    "strings": Instrument(48, "strings", "弦乐", 67),
    "synth_strings": Instrument(50, "synth strings", "合成弦乐", 67),
    "choir": Instrument(52, "choir", "合唱", 67),
    "trumpet": Instrument(56, "trumpet", "小号", 72),
    "trombone": Instrument(57, "trombone", "长号", 55),
    "tuba": Instrument(58, "tuba", "大号", 43),
    "french_horn": Instrument(60, "French horn", "圆号", 62),
    "alto_sax": Instrument(65, "alto saxophone", "中音萨克斯", 69),
    "tenor_sax": Instrument(66, "tenor saxophone", "次中音萨克斯", 62),
    "oboe": Instrument(68, "oboe", "双簧管", 74),
    "bassoon": Instrument(70, "bassoon", "大管", 50),
    "clarinet": Instrument(71, "clarinet", "单簧管", 70),
    "flute": Instrument(73, "flute", "长笛", 79),
    "recorder": Instrument(74, "recorder", "竖笛", 79),
    "pan_flute": Instrument(75, "pan flute", "排箫", 77),
    "shakuhachi": Instrument(77, "shakuhachi", "尺八", 74),
    "whistle": Instrument(78, "tin whistle", "哨笛", 81),
    "ocarina": Instrument(79, "ocarina", "陶笛", 77),
    "square_lead": Instrument(80, "square-wave synth lead", "方波合成器", 74),
    "saw_lead": Instrument(81, "sawtooth synth lead", "锯齿波合成器", 72),
    "warm_pad": Instrument(89, "warm synth pad", "温暖的合成器铺底", 64),
    "poly_pad": Instrument(90, "synth pad", "合成器铺底", 64),
    "sitar": Instrument(104, "sitar", "西塔琴", 67),
    "banjo": Instrument(105, "banjo", "班卓琴", 72),
    "shamisen": Instrument(106, "shamisen", "三味线", 72),
    "koto": Instrument(107, "koto", "古筝", 72),
    "kalimba": Instrument(108, "kalimba", "拇指琴", 76),
    "bagpipe": Instrument(109, "bagpipes", "风笛", 72),
    "fiddle": Instrument(110, "fiddle", "民间提琴", 76),
    "shehnai": Instrument(111, "shehnai", "唢呐", 74),
    "drums": Instrument(0, "drums", "鼓"),
    "percussion": Instrument(0, "percussion", "打击乐"),
}

# Melody instruments by the culture a source comes from; the Chinese-style timbres of General MIDI first.
LEADS: dict[str, tuple[str, ...]] = {
    "chinese": ("koto", "pan_flute", "shakuhachi", "shamisen", "dulcimer", "sitar", "shehnai", "flute", "violin",
                "piano", "kalimba", "ocarina", "harp"),
    "celtic": ("fiddle", "whistle", "flute", "accordion", "violin", "bagpipe", "banjo", "harmonica", "piano",
               "harp", "recorder", "clarinet"),
    "german": ("accordion", "clarinet", "flute", "violin", "piano", "recorder", "oboe", "trumpet", "harmonica",
               "acoustic_guitar"),
    "baroque": ("organ", "harpsichord", "flute", "oboe", "violin", "trumpet", "piano", "clarinet", "choir"),
}
BAND_LEADS = ("overdrive_guitar", "distortion_guitar", "saw_lead", "square_lead", "alto_sax", "electric_piano",
              "trumpet", "violin", "flute", "clean_guitar", "rock_organ")
CHORALE_ENSEMBLES: dict[str, tuple[str, str, str, str]] = {  # soprano, alto, tenor, bass
    "organ": ("organ", "organ", "organ", "organ"),
    "string quartet": ("violin", "violin", "viola", "cello"),
    "brass": ("trumpet", "trumpet", "french_horn", "trombone"),
    "woodwinds": ("flute", "oboe", "clarinet", "bassoon"),
    "choir": ("choir", "choir", "choir", "choir"),
    "piano": ("piano", "piano", "piano", "piano"),
    "harpsichord": ("harpsichord", "harpsichord", "harpsichord", "harpsichord"),
}

# ---------------------------------------------------------------------------------------------------------------
# Styles: tempo range, the meters they fit, and what plays besides the melody.

# Meter kinds. "duple": 2/4, 4/4, 2/2 (beat = quarter); "triple": 3/4; "compound": 6/8, 12/8 (beat = dotted
# quarter); "other": anything else, or a piece whose meter changes (solo and duet arrangements only).
ANY_METER = ("duple", "triple", "compound", "other")


@dataclass(frozen=True)
class Style:
    bpm: tuple[int, int]  # beats per minute, inclusive range
    meters: tuple[str, ...]
    drums: str | None = None  # key of DRUM_PATTERNS
    bass: tuple[str, ...] = ()  # bass instruments to choose from ((): no bass)
    bass_pattern: str = "root"
    comp: tuple[str, ...] = ()  # accompaniment instruments ((): none)
    comp_pattern: tuple[str, ...] = ("block",)
    leads: tuple[str, ...] | None = None  # None: the culture's own melody instruments
    weight: float = 1.0  # how often the style is drawn among those that fit


STYLES: dict[str, Style] = {
    "solo": Style((60, 132), ANY_METER, weight=1.2),
    "duet": Style((60, 126), ANY_METER, comp=("piano", "nylon_guitar", "harp", "koto", "strings", "acoustic_guitar",
                                              "dulcimer", "harpsichord"),
                  comp_pattern=("arpeggio", "block", "pad"), weight=1.2),
    "ensemble": Style((72, 132), ("duple", "triple", "compound"), drums="folk",
                      bass=("upright_bass", "cello"), comp=("acoustic_guitar", "koto", "nylon_guitar", "dulcimer",
                                                            "harp", "accordion"),
                      comp_pattern=("strum", "arpeggio")),
    "chorale": Style((56, 92), ANY_METER, weight=2.0),  # pieces with four voices only
    "rock": Style((100, 152), ("duple",), drums="rock", bass=("electric_bass",), bass_pattern="eighths",
                  comp=("distortion_guitar", "overdrive_guitar"), comp_pattern=("power",), leads=BAND_LEADS),
    "pop": Style((84, 124), ("duple",), drums="pop", bass=("electric_bass", "fretless_bass"), bass_pattern="pop",
                 comp=("piano", "electric_piano", "acoustic_guitar", "clean_guitar"),
                 comp_pattern=("block", "strum")),
    "dance": Style((118, 130), ("duple",), drums="dance", bass=("synth_bass",), bass_pattern="offbeat",
                   comp=("poly_pad", "warm_pad", "synth_strings"), comp_pattern=("stab", "pad"),
                   leads=("saw_lead", "square_lead", "pan_flute", "koto", "electric_piano", "shamisen", "kalimba")),
    "ballad": Style((60, 84), ("duple",), drums="ballad", bass=("fretless_bass", "electric_bass", "upright_bass"),
                    bass_pattern="long", comp=("piano", "nylon_guitar", "harp", "strings", "warm_pad"),
                    comp_pattern=("arpeggio", "pad")),
    "waltz": Style((84, 150), ("triple",), drums="waltz", bass=("upright_bass", "electric_bass"),
                   bass_pattern="waltz", comp=("piano", "accordion", "acoustic_guitar", "strings"),
                   comp_pattern=("waltz",)),
    "six_eight": Style((56, 110), ("compound",), drums="six_eight", bass=("electric_bass", "upright_bass"),
                       bass_pattern="compound", comp=("acoustic_guitar", "piano", "nylon_guitar"),
                       comp_pattern=("strum", "arpeggio")),
}

# GM percussion keys (channel 10).
KICK, STICK, SNARE, CLAP, HAT, OPEN_HAT, CRASH, RIDE, TAMBOURINE = 36, 37, 38, 39, 42, 46, 49, 51, 54
LOW_TOM, MID_TOM, HIGH_TOM, CHINA, HIGH_WOOD, LOW_WOOD, SHAKER = 45, 47, 50, 52, 76, 77, 70

# name -> meter kind -> (steps per cycle of 16th notes, {key: [(step, velocity), ...]}). A cycle is 4 beats in
# duple meter (two bars of 2/4, one of 4/4) and one bar in triple and compound meter.
DrumPattern = tuple[int, dict[int, list[tuple[int, int]]]]


def _hits(steps: range | list[int], vel: int, accent: int = 0, every: int = 4) -> list[tuple[int, int]]:
    return [(s, vel + (accent if s % every == 0 else 0)) for s in steps]


DRUM_PATTERNS: dict[str, dict[str, DrumPattern]] = {
    "rock": {"duple": (16, {KICK: _hits([0, 8, 10], 110), SNARE: _hits([4, 12], 112),
                            HAT: _hits(range(0, 16, 2), 76, 18)})},
    "pop": {"duple": (16, {KICK: _hits([0, 6, 8], 104), SNARE: _hits([4, 12], 100),
                           HAT: _hits(range(0, 16, 2), 70, 16), TAMBOURINE: _hits([4, 12], 60)})},
    "dance": {"duple": (16, {KICK: _hits([0, 4, 8, 12], 118), CLAP: _hits([4, 12], 100),
                             OPEN_HAT: _hits([2, 6, 10, 14], 84), HAT: _hits(range(1, 16, 2), 50)})},
    "ballad": {"duple": (16, {KICK: _hits([0, 10], 88), STICK: _hits([4, 12], 78),
                              RIDE: _hits(range(0, 16, 2), 58, 12)})},
    "waltz": {"triple": (12, {KICK: _hits([0], 96), STICK: _hits([4, 8], 70), HAT: _hits([0, 4, 8], 62)})},
    "six_eight": {"compound": (12, {KICK: _hits([0, 10], 100), SNARE: _hits([6], 96),
                                    HAT: _hits(range(0, 12, 2), 66, 14, every=6)})},
    "folk": {  # wood blocks and a China cymbal for the Chinese ensemble; hand drums (toms) otherwise
        "duple": (16, {LOW_WOOD: _hits([0, 8], 96), HIGH_WOOD: _hits([4, 6, 12, 14], 80), SHAKER: _hits(
            range(2, 16, 4), 60)}),
        "triple": (12, {LOW_WOOD: _hits([0], 96), HIGH_WOOD: _hits([4, 8], 78), SHAKER: _hits([2, 6, 10], 56)}),
        "compound": (12, {LOW_WOOD: _hits([0, 6], 96), HIGH_WOOD: _hits([2, 4, 8, 10], 72)}),
    },
}
HAND_DRUMS = {LOW_WOOD: LOW_TOM, HIGH_WOOD: MID_TOM}  # the "folk" pattern outside the Chinese ensemble

# Bass and accompaniment rhythms: meter kind -> [(step, steps held, interval above the chord's bass)].
BASS_PATTERNS: dict[str, dict[str, list[tuple[int, int, int]]]] = {
    "root": {"duple": [(0, 7, 0), (8, 7, 7)], "triple": [(0, 4, 0), (8, 3, 7)], "compound": [(0, 5, 0), (6, 5, 7)]},
    "eighths": {"duple": [(s, 2, 0) for s in range(0, 16, 2)]},
    "pop": {"duple": [(0, 5, 0), (6, 2, 0), (8, 4, 7), (14, 2, 12)]},
    "offbeat": {"duple": [(s, 1, 0 if s % 4 == 2 else 12) for s in range(2, 16, 2)]},
    "long": {"duple": [(0, 8, 0), (8, 8, 7)]},
    "waltz": {"triple": [(0, 4, 0)]},
    "compound": {"compound": [(0, 5, 0), (6, 3, 7), (10, 2, 12)]},
}
# Chord rhythms: meter kind -> [(step, steps held)]; "pad" holds each chord, "arpeggio" runs eighth notes.
COMP_RHYTHMS: dict[str, dict[str, list[tuple[int, int]]]] = {
    "block": {"duple": [(0, 5), (6, 5), (12, 3)], "triple": [(0, 3), (4, 3), (8, 3)], "compound": [(0, 5), (6, 5)],
              "other": [(0, 4)]},
    "strum": {"duple": [(0, 4), (4, 2), (6, 2), (8, 4), (12, 2), (14, 2)], "triple": [(0, 4), (4, 4), (8, 4)],
              "compound": [(0, 4), (4, 2), (6, 4), (10, 2)]},
    "power": {"duple": [(s, 2) for s in range(0, 16, 2)]},
    "stab": {"duple": [(2, 1), (6, 1), (10, 1), (14, 1)]},
    "waltz": {"triple": [(4, 3), (8, 3)]},
}

# ---------------------------------------------------------------------------------------------------------------
# A piece, reduced from music21.


@dataclass(frozen=True)
class Note:
    start: float  # quarter notes
    dur: float  # quarter notes
    pitch: int  # MIDI note number (drums: GM percussion key)
    velocity: int = 90


@dataclass(frozen=True)
class Chord:
    start: float  # quarter notes
    dur: float
    pcs: tuple[int, ...]  # pitch classes, root first
    bass: int  # pitch class under the chord (the root, or a slash chord's bass)


@dataclass
class Piece:
    """What an arranger needs of a score. Offsets are in quarter notes from the score's start."""

    id: str  # e.g. "han/han1.abc#12"
    title: str
    source: str  # key of render.SOURCES
    culture: str  # "chinese" | "celtic" | "german" | "baroque"
    melody: list[Note]
    voices: list[list[Note]]  # lower voices of a chorale, top to bottom; [] for a tune
    chords: list[Chord]  # chord symbols written in the score; [] when it has none
    meter: str  # "4/4", "6/8", ... or "mixed"
    meter_kind: str  # "duple" | "triple" | "compound" | "other"
    bar: float  # quarter notes per bar
    anchor: float  # offset of the first full bar's downbeat (after a pickup)
    length: float  # loop period: the piece rounded up to whole bars
    tonic: int  # pitch class
    mode: str  # "major" | "minor"
    pentatonic: bool

    @property
    def beat(self) -> float:
        """Quarter notes per beat: a dotted quarter in compound meter, else a quarter."""
        return 1.5 if self.meter_kind == "compound" else 1.0


def meter_kind(ratio: str) -> str:
    return {"2/4": "duple", "4/4": "duple", "2/2": "duple", "4/2": "duple", "3/4": "triple", "6/8": "compound",
            "12/8": "compound"}.get(ratio, "other")


def _notes_of(part: Any) -> list[Note]:
    """Sounding notes of a music21 part, ties merged, grace notes dropped, a chord -> its top note."""
    from music21 import chord, harmony

    out = []
    for n in part.flatten().stripTies().notes:
        if isinstance(n, harmony.ChordSymbol) or n.duration.quarterLength <= 0:
            continue
        pitch = max(p.midi for p in n.pitches) if isinstance(n, chord.Chord) else n.pitch.midi
        out.append(Note(float(n.offset), float(n.duration.quarterLength), int(pitch)))
    return out


def _expanded(part: Any) -> Any:
    try:
        return part.expandRepeats()
    except Exception:  # malformed repeat marks: play the tune as written
        return part


def _chord_symbols(part: Any, end: float) -> list[Chord]:
    from music21 import harmony

    found = []
    for cs in part.flatten().getElementsByClass(harmony.ChordSymbol):
        if isinstance(cs, harmony.NoChord) or not cs.pitches:
            continue
        root = cs.root().pitchClass
        pcs = (root,) + tuple(sorted({p.pitchClass for p in cs.pitches} - {root}, key=lambda pc: (pc - root) % 12))
        found.append((float(cs.offset), pcs, cs.bass().pitchClass))
    return [Chord(start, (found[i + 1][0] if i + 1 < len(found) else end) - start, pcs, bass)
            for i, (start, pcs, bass) in enumerate(found) if (found[i + 1][0] if i + 1 < len(found) else end) > start]


def _key_of(score: Any, melody: list[Note], bass: list[Note]) -> tuple[int, str]:
    """Tonic pitch class and mode: the best key profile match (Krumhansl) whose tonic the tune ends on, if any."""
    key = score.analyze("key")
    final = (bass or melody)[-1].pitch % 12
    best = key.correlationCoefficient
    for k in [key, *key.alternateInterpretations[:5]]:
        if k.tonic.pitchClass == final and k.correlationCoefficient >= best - 0.15:
            return final, k.mode if k.mode in ("major", "minor") else "major"
    return key.tonic.pitchClass, key.mode if key.mode in ("major", "minor") else "major"


def _is_pentatonic(melody: list[Note]) -> bool:
    weight = [0.0] * 12
    for n in melody:
        weight[n.pitch % 12] += n.dur
    used = {pc for pc in range(12) if weight[pc] > 0.03 * sum(weight)}
    return len(used) == 5 and any(used == {(t + i) % 12 for i in (0, 2, 4, 7, 9)} for t in range(12))


def piece_from_score(score: Any, piece_id: str, title: str, source: str, culture: str) -> Piece:
    """Reduce a music21 score (a tune or a four-part chorale) to a :class:`Piece`; ValueError if unusable."""
    from music21 import meter, stream

    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    parts = [_expanded(p) for p in parts]
    melody = _notes_of(parts[0])
    if len(melody) < 8:
        raise ValueError(f"only {len(melody)} notes")
    voices = [v for v in (_notes_of(p) for p in parts[1:4]) if v] if len(parts) >= 4 else []
    signatures = parts[0].flatten().getElementsByClass(meter.TimeSignature)
    ratios = {ts.ratioString for ts in signatures} or {"4/4"}
    first = signatures[0] if len(signatures) else meter.TimeSignature("4/4")
    bar = float(first.barDuration.quarterLength)
    kind = meter_kind(first.ratioString) if len(ratios) == 1 else "other"
    measures = list(parts[0].getElementsByClass(stream.Measure))
    full = [float(m.offset) for m in measures if abs(float(m.duration.quarterLength) - bar) < 1e-6]
    anchor = (full[0] % bar) if full else 0.0
    end = max(float(parts[0].highestTime), max(n.start + n.dur for n in melody))
    length = anchor + math.ceil((end - anchor) / bar - 1e-6) * bar if kind != "other" else end
    tonic, mode = _key_of(score, melody, voices[-1] if voices else [])
    return Piece(id=piece_id, title=title, source=source, culture=culture, melody=melody, voices=voices,
                 chords=_chord_symbols(parts[0], end), meter="mixed" if len(ratios) > 1 else first.ratioString,
                 meter_kind=kind, bar=bar, anchor=anchor, length=length, tonic=tonic, mode=mode,
                 pentatonic=_is_pentatonic(melody))


# ---------------------------------------------------------------------------------------------------------------
# Harmonisation of a tune without chord symbols: one diatonic triad per bar (per half bar of 4/4).

_TRIADS = {  # degree (semitones above the tonic) -> (triad intervals, prior)
    "major": {0: ((0, 4, 7), 0.35), 2: ((0, 3, 7), 0.0), 4: ((0, 3, 7), -0.1), 5: ((0, 4, 7), 0.2),
              7: ((0, 4, 7), 0.25), 9: ((0, 3, 7), 0.05)},
    "minor": {0: ((0, 3, 7), 0.35), 3: ((0, 4, 7), 0.05), 5: ((0, 3, 7), 0.2), 7: ((0, 4, 7), 0.2),
              8: ((0, 4, 7), 0.05), 10: ((0, 4, 7), 0.05)},
}


def harmonise(piece: Piece) -> list[Chord]:
    """The triad of the key that best covers each segment's melody notes (strong-beat notes count more)."""
    seg = piece.bar / 2 if piece.meter_kind == "duple" and piece.bar >= 4 else piece.bar
    n_seg = max(1, math.ceil((piece.length - piece.anchor) / seg - 1e-6))
    starts = ([0.0] if piece.anchor > 0 else []) + [piece.anchor + i * seg for i in range(n_seg)]
    chords = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else piece.length
        best, best_score = 0, -math.inf
        for degree, (intervals, prior) in _TRIADS[piece.mode].items():
            pcs = {(piece.tonic + degree + iv) % 12 for iv in intervals}
            score = prior * (end - start)
            if i == len(starts) - 1 and degree == 0:
                score += end - start  # end on the tonic
            for n in piece.melody:
                overlap = min(end, n.start + n.dur) - max(start, n.start)
                if overlap > 0:
                    strong = 1.5 if abs(n.start - start) < 1e-6 else 1.0
                    score += overlap * strong * (1.0 if n.pitch % 12 in pcs else -0.6)
            if score > best_score:
                best, best_score = degree, score
        root = (piece.tonic + best) % 12
        intervals = _TRIADS[piece.mode][best][0]
        chords.append(Chord(start, end - start, tuple((root + iv) % 12 for iv in intervals), root))
    return chords


# ---------------------------------------------------------------------------------------------------------------
# Plan: every random choice of a clip, as plain data (it goes into the sidecar).


@dataclass
class Plan:
    style: str
    lead: str  # instrument key of the melody
    lead2: str | None  # a second melody instrument (ensemble), or None
    comp: str | None  # accompaniment instrument, or None
    comp_pattern: str | None
    bass: str | None
    drums: str | None  # drum pattern name, or None
    ensemble: str | None  # chorale ensemble name, or None
    bpm: int  # beats per minute (beat: quarter, or dotted quarter in compound meter)
    transpose: int  # semitones applied to the score's pitches (key change plus the octave that suits the lead)
    start: float  # offset in the score (quarter notes) where the clip begins: a downbeat of the first pass
    reverb: int  # CC91 send, 0..127
    chorus: int  # CC93 send
    seed: int  # for velocity humanisation
    instruments: list[str] = field(default_factory=list)  # every instrument that sounds, lead first


def styles_for(piece: Piece, allowed: tuple[str, ...] | None = None) -> list[str]:
    """The styles that fit a piece's meter (and its voices: chorale needs four parts)."""
    names = []
    for name, style in STYLES.items():
        if allowed is not None and name not in allowed:
            continue
        if name == "chorale" and not piece.voices:
            continue
        if piece.meter_kind in style.meters:
            names.append(name)
    return names


def plan_arrangement(piece: Piece, rng: random.Random, styles: tuple[str, ...] | None = None) -> Plan:
    """Draw style, instruments, tempo, key, start and mix for one clip of ``piece``; ValueError if no style fits."""
    names = styles_for(piece, styles)
    if not names:
        raise ValueError(f"no style in {list(styles or STYLES)} fits a piece in {piece.meter}")
    name = rng.choices(names, weights=[STYLES[n].weight for n in names])[0]
    style = STYLES[name]
    # Band styles have their own leads, but half of the time the tune keeps its culture's (koto over a rock beat).
    leads = style.leads if style.leads and rng.random() < 0.5 else LEADS[piece.culture]
    lead = rng.choice(leads)
    ensemble = None
    if name == "chorale":
        ensemble = rng.choice(sorted(CHORALE_ENSEMBLES))
        lead = CHORALE_ENSEMBLES[ensemble][0]
    lead2 = None
    if name == "ensemble":
        lead2 = rng.choice([x for x in LEADS[piece.culture] if x != lead])
    # Koto and dulcimer accompany Chinese tunes only; the accordion accompanies the others.
    foreign = {"koto", "dulcimer"} if piece.culture != "chinese" else {"accordion"}
    comps = [c for c in style.comp if c != lead and c not in foreign]
    comp = rng.choice(comps) if comps else None
    comp_pattern = rng.choice(style.comp_pattern) if comp else None
    if comp_pattern in COMP_RHYTHMS and piece.meter_kind not in COMP_RHYTHMS[comp_pattern]:
        comp_pattern = "pad"
    bass = rng.choice(style.bass) if style.bass else None
    if name == "duet" and piece.voices and rng.random() < 0.5:
        bass = "cello"  # a chorale's bass voice gets its own instrument half of the time
    drums = style.drums
    bpm = rng.randint(*style.bpm)
    # Key: a random shift of up to a fourth either way; then the octave that centres the melody on the lead.
    shift = rng.randint(-5, 6)
    pitches = sorted(n.pitch for n in piece.melody)
    median = pitches[len(pitches) // 2]
    octave = 12 * round((INSTRUMENTS[lead].center - (median + shift)) / 12)
    downbeats = [d for d in _downbeats(piece) if d < piece.length - 1e-6] or [0.0]
    start = downbeats[0] if rng.random() < 0.3 else rng.choice(downbeats)
    instruments = [lead]
    if ensemble:
        instruments = list(dict.fromkeys(CHORALE_ENSEMBLES[ensemble]))
    instruments += [x for x in (lead2, comp, bass) if x and x not in instruments]
    if drums:
        instruments.append("percussion" if drums == "folk" else "drums")
    return Plan(style=name, lead=lead, lead2=lead2, comp=comp, comp_pattern=comp_pattern, bass=bass, drums=drums,
                ensemble=ensemble, bpm=bpm, transpose=shift + octave, start=start,
                reverb=rng.randint(20, 90) if name not in ("rock", "dance") else rng.randint(10, 45),
                chorus=rng.randint(0, 40), seed=rng.getrandbits(31), instruments=instruments)


def _downbeats(piece: Piece) -> list[float]:
    n = max(1, math.ceil((piece.length - piece.anchor) / piece.bar - 1e-6))
    return [piece.anchor + i * piece.bar for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# Arrangement: notes per track for a window of the (looped) piece.


@dataclass
class Track:
    instrument: str  # key of INSTRUMENTS
    notes: list[Note]
    drums: bool = False
    volume: int = 100  # CC7


@dataclass
class Arrangement:
    tracks: list[Track]
    quarter_bpm: float  # MIDI tempo: quarter notes per minute
    length: float  # quarter notes the clip lasts
    reverb: int
    chorus: int


def _looped(notes: list[Note], period: float, start: float, length: float) -> list[Note]:
    """``notes`` repeated every ``period``, shifted so that ``start`` is 0, kept where they begin in [0, length)."""
    out = []
    for k in range(int((start + length) // period) + 1):
        for n in notes:
            t = n.start + k * period - start
            if -1e-6 <= t < length:
                out.append(Note(max(t, 0.0), n.dur, n.pitch, n.velocity))
    return out


def _looped_chords(chords: list[Chord], period: float, start: float, length: float) -> list[Chord]:
    out = []
    for k in range(int((start + length) // period) + 1):
        for c in chords:
            s, e = c.start + k * period - start, c.start + c.dur + k * period - start
            if e > 0 and s < length:
                out.append(Chord(max(s, 0.0), min(e, length) - max(s, 0.0), c.pcs, c.bass))
    return out


def _chord_at(chords: list[Chord], t: float) -> Chord | None:
    for c in chords:
        if c.start - 1e-6 <= t < c.start + c.dur - 1e-6:
            return c
    return chords[-1] if chords else None


def _place(pc: int, low: int) -> int:
    """The pitch of class ``pc`` in [low, low + 12)."""
    return low + (pc - low) % 12


def _voicing(chord: Chord, low: int) -> list[int]:
    return sorted(_place(pc, low) for pc in chord.pcs)


def _shift(chord: Chord, semitones: int) -> Chord:
    pcs = tuple((pc + semitones) % 12 for pc in chord.pcs)
    return Chord(chord.start, chord.dur, pcs, (chord.bass + semitones) % 12)


def arrange(piece: Piece, plan: Plan, seconds: float) -> Arrangement:
    """Notes of every track for ``seconds`` of ``piece`` played as ``plan`` says."""
    rng = random.Random(plan.seed)
    quarter_bpm = plan.bpm * piece.beat
    length = seconds * quarter_bpm / 60.0
    span = length + 0.25  # notes that begin before the cut (and a sixteenth past it)
    q16 = 0.25  # a sixteenth note in quarter notes
    tracks: list[Track] = []
    kind = piece.meter_kind

    def human(n: Note, base: int, spread: int = 8) -> Note:
        accent = 10 if abs((n.start / piece.beat) % 1.0) < 1e-6 else 0
        vel = int(min(127, max(20, base + accent + rng.randint(-spread, spread))))
        return Note(n.start, n.dur, n.pitch, vel)

    melody = [Note(n.start, n.dur, n.pitch + plan.transpose) for n in _looped(piece.melody, piece.length, plan.start,
                                                                                  span)]
    band = plan.drums is not None
    lead_vel = 100 if band else 88
    if plan.ensemble:
        names = CHORALE_ENSEMBLES[plan.ensemble]
        parts = [melody] + [[Note(n.start, n.dur, n.pitch + plan.transpose)
                             for n in _looped(v, piece.length, plan.start, span)] for v in piece.voices]
        for name, notes in zip(names, parts):
            tracks.append(Track(name, [human(n, 84 if name != names[0] else 92) for n in notes]))
    else:
        tracks.append(Track(plan.lead, [human(n, lead_vel) for n in melody]))
    if plan.lead2:
        up = INSTRUMENTS[plan.lead2].center - INSTRUMENTS[plan.lead].center
        octave = 12 * round(up / 12)
        tracks.append(Track(plan.lead2, [human(Note(n.start, n.dur, n.pitch + octave), lead_vel - 16)
                                         for n in melody], volume=90))

    # Harmony: a chorale's own lower voices, else the tune's chord symbols, else a simple harmonisation.
    if piece.voices and not plan.ensemble:
        voices = [[Note(n.start, n.dur, n.pitch + plan.transpose) for n in _looped(v, piece.length, plan.start, span)]
                  for v in piece.voices]
        if plan.comp:
            inner = [human(n, 72) for v in voices[:-1] for n in v]
            tracks.append(Track(plan.comp, inner, volume=92))
        if plan.bass:  # the bass voice, an octave down on a bass guitar
            drop = 12 if plan.bass not in ("cello", "upright_bass") else 0
            tracks.append(Track(plan.bass, [human(Note(n.start, n.dur, n.pitch - drop), 84) for n in voices[-1]]))
        elif plan.comp:
            tracks.append(Track(plan.comp, [human(n, 80) for n in voices[-1]], volume=92))
    elif plan.comp or plan.bass:
        chords = [_shift(c, plan.transpose) for c in (piece.chords or harmonise(piece))]
        chords = _looped_chords(chords, piece.length, plan.start, span)
        cycle = {"duple": 16, "triple": 12, "compound": 12}.get(kind, int(round(piece.bar / q16)))
        n_cycles = int(span / (cycle * q16)) + 1
        if plan.comp:
            tracks.append(Track(plan.comp, _comp_notes(chords, plan.comp_pattern or "pad", kind, cycle, n_cycles,
                                                       span, rng), volume=84))
        if plan.bass:
            pattern = BASS_PATTERNS[STYLES[plan.style].bass_pattern].get(kind) or BASS_PATTERNS["root"].get(kind)
            notes = []
            for i in range(n_cycles):
                for step, held, interval in pattern or [(0, cycle - 1, 0)]:
                    t = (i * cycle + step) * q16
                    chord = _chord_at(chords, t)
                    if chord is None or t >= span:
                        continue
                    low = _place(chord.bass, 28)
                    pitch = _place((chord.pcs[0] + 7) % 12, low) if interval == 7 else low + interval
                    notes.append(human(Note(t, held * q16 * 0.95, pitch), 92, 6))
            tracks.append(Track(plan.bass, notes, volume=100))

    if plan.drums:
        tracks.append(Track("drums", _drum_notes(plan, kind, span, rng, chinese=piece.culture == "chinese"),
                            drums=True, volume=100 if plan.drums != "folk" else 88))
    return Arrangement(tracks, quarter_bpm, length, plan.reverb, plan.chorus)


def _comp_notes(chords: list[Chord], pattern: str, kind: str, cycle: int, n_cycles: int, span: float,
                rng: random.Random) -> list[Note]:
    q16 = 0.25
    notes: list[Note] = []
    if pattern == "pad":
        for c in chords:
            notes += [Note(c.start, c.dur, p, 64 + rng.randint(-4, 4)) for p in _voicing(c, 55)]
        return notes
    if pattern == "arpeggio":
        for i in range(int(span / 0.5) + 1):
            t = i * 0.5
            c = _chord_at(chords, t)
            if c is None:
                continue
            root = _place(c.bass, 43)
            line = [root, root + 7, root + 12, _place(c.pcs[1 % len(c.pcs)], root + 12), root + 12, root + 7]
            notes.append(Note(t, 1.0, line[i % len(line)], 70 + rng.randint(-6, 6) + (8 if i % 2 == 0 else 0)))
        return notes
    rhythm = COMP_RHYTHMS[pattern].get(kind) or COMP_RHYTHMS["block"]["other"]
    for i in range(n_cycles):
        for step, held in rhythm:
            t = (i * cycle + step) * q16
            c = _chord_at(chords, t)
            if c is None or t >= span:
                continue
            vel = 78 + (10 if step == 0 else 0) + rng.randint(-6, 6)
            if pattern == "power":
                root = _place(c.bass if c.bass == c.pcs[0] else c.pcs[0], 40)
                notes += [Note(t, held * q16 * 0.8, p, vel) for p in (root, root + 7, root + 12)]
            elif pattern == "strum":
                for j, p in enumerate(_voicing(c, 52) + _voicing(c, 64)):
                    notes.append(Note(t + j * 0.02, held * q16 * 0.9, p, vel - j))
            else:  # block, stab, waltz
                dur = held * q16 * (0.5 if pattern == "stab" else 0.85)
                notes += [Note(t, dur, p, vel) for p in _voicing(c, 57 if pattern != "stab" else 60)]
    return notes


def _drum_notes(plan: Plan, kind: str, span: float, rng: random.Random, chinese: bool) -> list[Note]:
    steps, hits = DRUM_PATTERNS[plan.drums or "rock"][kind]
    q16 = 0.25
    notes = []
    n_cycles = int(span / (steps * q16)) + 1
    for i in range(n_cycles):
        base = i * steps * q16
        fill = plan.drums in ("rock", "pop") and i % 4 == 3
        for key, pattern in hits.items():
            if plan.drums == "folk" and not chinese:
                key = HAND_DRUMS.get(key, key)
            for step, vel in pattern:
                if fill and step >= steps - 4 and key != KICK:
                    continue
                notes.append(Note(base + step * q16, q16, key, min(127, vel + rng.randint(-6, 6))))
        if fill:  # a snare and tom run over the last beat
            for j, key in enumerate((SNARE, SNARE, HIGH_TOM, LOW_TOM)):
                notes.append(Note(base + (steps - 4 + j) * q16, q16, key, 90 + 6 * j))
        if i % 4 == 0 and plan.drums in ("rock", "pop", "dance"):
            notes.append(Note(base, 1.0, CRASH, 100))
        if i % 2 == 0 and plan.drums == "folk" and chinese:
            notes.append(Note(base, 1.0, CHINA, 84))
    return [n for n in notes if n.start < span]


# ---------------------------------------------------------------------------------------------------------------
# Standard MIDI file.

TICKS = 480  # per quarter note


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track_chunk(events: list[tuple[int, int, bytes]]) -> bytes:
    """(tick, order, message) events -> an MTrk chunk; at equal ticks lower ``order`` first (note-offs first)."""
    data, now = bytearray(), 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        data += _vlq(tick - now) + msg
        now = tick
    data += _vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


def to_midi(arrangement: Arrangement) -> bytes:
    """A type-1 standard MIDI file: a tempo track, then one track per instrument on its own channel."""
    # The file ends a sixteenth past the cut with "all sound off" on every channel: FluidSynth renders until its
    # voices have died away (a harp's take ~10 s), and nothing after the cut is kept anyway.
    end_tick = int(round((arrangement.length + 0.25) * TICKS))
    tempo = int(round(60_000_000 / arrangement.quarter_bpm))
    chunks = [_track_chunk([(0, 0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")), (end_tick, 0, b"\xff\x01\x00")])]
    melodic = iter([c for c in range(16) if c != 9])
    for track in arrangement.tracks:
        channel = 9 if track.drums else next(melodic)
        program = INSTRUMENTS[track.instrument].program
        events: list[tuple[int, int, bytes]] = [
            (0, 0, bytes([0xB0 | channel, 7, track.volume])),
            (0, 0, bytes([0xB0 | channel, 10, 64])),
            (0, 0, bytes([0xB0 | channel, 91, arrangement.reverb if not track.drums else arrangement.reverb // 2])),
            (0, 0, bytes([0xB0 | channel, 93, arrangement.chorus if not track.drums else 0])),
        ]
        if not track.drums:
            events.append((0, 1, bytes([0xC0 | channel, program])))
        events.append((end_tick, 4, bytes([0xB0 | channel, 120, 0])))  # all sound off
        # A note stops where the next note of the same pitch starts: a note-off must not cut a later note-on.
        by_pitch: dict[int, list[Note]] = {}
        for n in track.notes:
            if 0 <= n.pitch <= 127:
                by_pitch.setdefault(n.pitch, []).append(n)
        for pitch, notes in by_pitch.items():
            notes.sort(key=lambda n: n.start)
            for i, n in enumerate(notes):
                on = int(round(n.start * TICKS))
                off = int(round((n.start + n.dur) * TICKS))
                if i + 1 < len(notes):
                    off = min(off, int(round(notes[i + 1].start * TICKS)))
                off = min(max(off, on + 1), end_tick)
                if on >= end_tick or (i + 1 < len(notes) and int(round(notes[i + 1].start * TICKS)) == on):
                    continue
                events.append((on, 3, bytes([0x90 | channel, pitch, max(1, min(127, n.velocity))])))
                events.append((off, 2, bytes([0x80 | channel, pitch, 0])))
        chunks.append(_track_chunk(events))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(chunks), TICKS)
    return header + b"".join(chunks)
