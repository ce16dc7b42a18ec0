"""Captions for rendered clips, in English and in Chinese, from the rendering metadata.

Several templates per language, with varied word order and optional fields, so that a text encoder trained on
them sees language rather than one fixed form. :func:`captions` returns a few phrasings per language; the first
of each names every field (style, instruments, tempo, key, mood) and is the clip's ``description``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from yuefu.data.arrange import INSTRUMENTS

# Bump when a change here changes the captions of a given seed (the audio stays; ``yuefu data render`` then rewrites
# the sidecars of an existing corpus without rendering again). 2: no "folk folk in 6/8", no instrument named twice
# (in the captions and the instrument tags), no "synth lead lead over".
CAPTIONS = "yuefu.data.captions/2"

# Key names: the usual spelling of each tonic (flats for flat keys), and the Chinese 升/降 form.
_MAJOR = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_MINOR = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]


def key_name(tonic: int, mode: str) -> str:
    """``"D major"``, ``"F# minor"``, ``"Bb major"``."""
    return f"{(_MAJOR if mode == 'major' else _MINOR)[tonic % 12]} {mode}"


def key_name_zh(tonic: int, mode: str) -> str:
    """``"D大调"``, ``"升F小调"``, ``"降B大调"``."""
    name = (_MAJOR if mode == "major" else _MINOR)[tonic % 12]
    if len(name) == 2:
        name = ("升" if name[1] == "#" else "降") + name[0]
    return name + ("大调" if mode == "major" else "小调")


# Moods by (mode, tempo): English word -> Chinese word.
MOODS: dict[tuple[str, str], dict[str, str]] = {
    ("major", "fast"): {"cheerful": "欢快", "lively": "活泼", "upbeat": "轻快", "joyful": "喜悦", "bright": "明快",
                        "playful": "俏皮", "energetic": "充满活力"},
    ("major", "slow"): {"calm": "平静", "peaceful": "宁静", "gentle": "温柔", "warm": "温暖", "tender": "柔和",
                        "nostalgic": "怀旧", "serene": "安详"},
    ("minor", "fast"): {"driving": "动感", "intense": "激烈", "dramatic": "富有戏剧性", "restless": "躁动",
                        "mysterious": "神秘", "energetic": "充满活力"},
    ("minor", "slow"): {"sad": "悲伤", "melancholic": "忧郁", "wistful": "惆怅", "somber": "深沉", "mournful": "哀伤",
                        "lonely": "孤独"},
}
STYLE_MOODS: dict[str, dict[str, str]] = {
    "rock": {"powerful": "有力", "energetic": "充满活力"},
    "dance": {"groovy": "律动感强", "danceable": "适合跳舞"},
    "chorale": {"solemn": "庄严", "reverent": "虔诚"},
    "ballad": {"emotional": "深情", "romantic": "浪漫"},
    "ensemble": {"festive": "喜庆", "rustic": "质朴"},
}

# Genre of a clip: the source's tradition, coloured by the arrangement.
CULTURE_GENRES = {
    "chinese": ("Chinese folk", "中国民歌"),
    "celtic": ("Celtic folk", "凯尔特民间音乐"),
    "german": ("German folk", "德国民歌"),
    "baroque": ("Baroque", "巴洛克"),
}
STYLE_GENRES = {  # style -> (English, Chinese); "{c}" is the culture's adjective
    "chorale": ("Baroque chorale", "巴洛克众赞歌"),
    "rock": ("{c} rock", "{c}摇滚"),
    "pop": ("{c} pop", "{c}流行"),
    "dance": ("{c} dance", "{c}电子舞曲"),
    "ballad": ("{c} ballad", "{c}抒情歌"),
    "waltz": ("{c} waltz", "{c}华尔兹"),
    "six_eight": ("{c} folk in 6/8", "{c}6/8拍民谣"),
}
GENRE_EXCEPTIONS = {("six_eight", "german"): ("German folk in 6/8", "德国6/8拍民谣")}  # not "folk folk in 6/8"
CULTURE_ADJECTIVES = {"chinese": ("Chinese-style", "中国风"), "celtic": ("Celtic", "凯尔特风"),
                      "german": ("folk", "民谣"), "baroque": ("classical", "古典")}
PIECE_WORDS = (("melody", "旋律"), ("tune", "曲子"), ("piece", "乐曲"), ("track", "音乐"))


@dataclass
class CaptionFields:
    """The metadata captions are written from."""

    style: str  # key of arrange.STYLES
    culture: str
    lead: str  # instrument key
    others: list[str]  # accompanying instrument keys (drums included as "drums" / "percussion")
    bpm: int
    tonic: int
    mode: str
    pentatonic: bool
    fast: bool  # picks the mood words


def genre(f: CaptionFields) -> tuple[str, str]:
    if (f.style, f.culture) in GENRE_EXCEPTIONS:
        return GENRE_EXCEPTIONS[f.style, f.culture]
    if f.style in STYLE_GENRES:
        en, zh = STYLE_GENRES[f.style]
        c_en, c_zh = CULTURE_ADJECTIVES[f.culture]
        return en.format(c=c_en).strip(), zh.format(c=c_zh)
    return CULTURE_GENRES[f.culture]


def moods(f: CaptionFields, rng: random.Random, n: int = 2) -> list[tuple[str, str]]:
    pool = dict(MOODS[(f.mode, "fast" if f.fast else "slow")])
    pool.update(STYLE_MOODS.get(f.style, {}))
    return rng.sample(sorted(pool.items()), k=min(n, len(pool)))


def _join_en(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _join_zh(words: list[str]) -> str:
    return words[0] if len(words) == 1 else "、".join(words[:-1]) + "和" + words[-1]


def unique(names: list[str]) -> list[str]:
    """Instrument keys in order, each once: two parts on one instrument are named once."""
    return list(dict.fromkeys(names))


def _a(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _arrangement(f: CaptionFields, rng: random.Random) -> tuple[str, str]:
    """How the instruments play together: "solo koto", "koto over bass and drums", ..."""
    lead_en, lead_zh = INSTRUMENTS[f.lead].en, INSTRUMENTS[f.lead].zh
    others = [x for x in unique(f.others) if x != f.lead]
    if f.style == "chorale":
        names = [f.lead, *others]
        return (f"four voices on {_join_en([INSTRUMENTS[x].en for x in names])}",
                f"{_join_zh([INSTRUMENTS[x].zh for x in names])}演奏的四声部")
    if not others:
        return rng.choice([(f"solo {lead_en}", f"{lead_zh}独奏"), (f"{lead_en} solo", f"{lead_zh}独奏")])
    rest_en = _join_en([INSTRUMENTS[x].en for x in others])
    rest_zh = _join_zh([INSTRUMENTS[x].zh for x in others])
    leads_en = lead_en if lead_en.endswith(" lead") else f"{lead_en} lead"  # "sawtooth synth lead over ..."
    return rng.choice([
        (f"{leads_en} over {rest_en}", f"{lead_zh}主奏，{rest_zh}伴奏"),
        (f"{lead_en} melody with {rest_en}", f"{lead_zh}旋律配{rest_zh}"),
        (f"{lead_en} accompanied by {rest_en}", f"{rest_zh}伴奏的{lead_zh}"),
    ])


def captions(f: CaptionFields, m: list[tuple[str, str]], rng: random.Random, n: int = 4) -> tuple[list[str], list[str]]:
    """``n`` English and ``n`` Chinese phrasings with the moods ``m`` ((English, Chinese) pairs, from
    :func:`moods`); the first of each names style, instruments, tempo, key and mood."""
    g_en, g_zh = genre(f)
    if f.pentatonic and rng.random() < 0.5:
        g_en, g_zh = f"pentatonic {g_en}", f"五声调式{g_zh}"
    m_en, m_zh = m[0]
    m2_en, m2_zh = m[-1]
    de = "的" if len(m_zh) > 2 else ""  # 欢快中国民歌, but 充满活力的中国民歌
    names = unique([f.lead, *f.others])
    inst_en = _join_en([INSTRUMENTS[x].en for x in names])
    inst_zh = _join_zh([INSTRUMENTS[x].zh for x in names])
    arr_en, arr_zh = _arrangement(f, rng)
    word_en, word_zh = rng.choice(PIECE_WORDS)
    key_en, key_zh = key_name(f.tonic, f.mode), key_name_zh(f.tonic, f.mode)
    bpm = f.bpm

    full_en = [
        f"{_a(m_en).capitalize()} {m_en} {g_en} {word_en} on {inst_en}, {bpm} BPM, in {key_en}.",
        f"{g_en[0].upper() + g_en[1:]} {word_en} in {key_en} at {bpm} BPM: {arr_en}. {m_en.capitalize()} and "
        f"{m2_en}.",
        f"{arr_en[0].upper() + arr_en[1:]}; {m_en} {g_en}, {bpm} bpm, {key_en}.",
        f"{m_en.capitalize()} {g_en} {word_en} featuring {inst_en}. Tempo: {bpm} BPM. Key: {key_en}.",
        f"{inst_en[0].upper() + inst_en[1:]} {'play' if len(names) > 1 else 'plays'} {_a(m_en)} {m_en}, {m2_en} "
        f"{g_en} {word_en} in {key_en} at {bpm} beats per minute.",
        f"{bpm} BPM {g_en} in {key_en} with {inst_en}, {m_en} and {m2_en}.",
    ]
    full_zh = [
        f"{m_zh}的{g_zh}{word_zh}，{inst_zh}，每分钟{bpm}拍，{key_zh}。",
        f"一段{m_zh}的{g_zh}，由{inst_zh}演奏，{key_zh}，速度{bpm} BPM。",
        f"{inst_zh}演奏的{m_zh}{de}{g_zh}{word_zh}，{key_zh}，每分钟{bpm}拍。",
        f"{g_zh}风格，{arr_zh}，{m_zh}，{bpm} BPM，{key_zh}。",
        f"速度每分钟{bpm}拍，{key_zh}，{arr_zh}，{m_zh}而{m2_zh}。",
        f"{key_zh}的{g_zh}{word_zh}，{arr_zh}，每分钟{bpm}拍，听起来{m_zh}。",
    ]
    short_en = [
        f"{m_en} {g_en} with {inst_en}",
        f"{g_en} {word_en} in {key_en}",
        f"{arr_en}, {bpm} BPM",
        f"{inst_en}, {m_en}, {m2_en}",
        f"{g_en}, {bpm} bpm, {m_en}",
        f"{m_en} {word_en} played on {inst_en}",
    ]
    short_zh = [
        f"{m_zh}的{g_zh}，{inst_zh}",
        f"{key_zh}的{g_zh}{word_zh}",
        f"{arr_zh}，每分钟{bpm}拍",
        f"{inst_zh}，{m_zh}，{m2_zh}",
        f"{g_zh}，{bpm} BPM，{m_zh}",
        f"{inst_zh}演奏的{m_zh}{de}{word_zh}",
    ]
    i, j = rng.randrange(len(full_en)), rng.randrange(len(full_zh))
    en = [full_en[i]] + rng.sample([s for k, s in enumerate(full_en) if k != i] + short_en, n - 1)
    zh = [full_zh[j]] + rng.sample([s for k, s in enumerate(full_zh) if k != j] + short_zh, n - 1)
    return en, zh
