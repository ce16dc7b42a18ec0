"""The corpus captions read cleanly: no word said twice in a row, no instrument named twice, no doubled genre."""

from __future__ import annotations

import random

from yuefu.data import arrange as arr
from yuefu.data import captions as cap


def _fields(rng: random.Random, style: str, culture: str, lead: str, others: list[str]) -> cap.CaptionFields:
    return cap.CaptionFields(style=style, culture=culture, lead=lead, others=others, bpm=rng.randrange(56, 180),
                             tonic=rng.randrange(12), mode=rng.choice(["major", "minor"]),
                             pentatonic=rng.random() < 0.5, fast=rng.random() < 0.5)


def _repeated_words(text: str) -> list[str]:
    """Words said twice with nothing between ("folk folk", "lead lead"); "pan flute, flute" names two instruments."""
    words = text.lower().split()
    return [a for a, b in zip(words, words[1:]) if a == b]


def test_no_word_twice_in_a_row_and_no_instrument_twice():
    """Every style and culture, each lead (the synth leads' names end in "lead"), with accompaniments that hold
    two parts on one instrument (an ensemble's harp and second harp): each name is said once."""
    rng = random.Random(0)
    styles = sorted(set(arr.STYLES) | set(cap.STYLE_GENRES))
    pool = [x for x in sorted(arr.INSTRUMENTS) if x not in ("drums", "percussion")]
    seen = 0
    for style in styles:
        for culture in sorted(cap.CULTURE_ADJECTIVES):
            for lead in ("saw_lead", "square_lead", "koto", "accordion", rng.choice(pool)):
                twice = rng.choice([x for x in pool if x != lead])
                for others in ([], [twice, twice, "upright_bass", "drums"], [twice, lead, "percussion"]):
                    f = _fields(rng, style, culture, lead, others)
                    en, zh = cap.captions(f, cap.moods(f, rng), rng, n=12)  # n=12: every template
                    for text in en:
                        assert not _repeated_words(text), text
                    for name in {lead, *others}:
                        e, z = arr.INSTRUMENTS[name].en, arr.INSTRUMENTS[name].zh
                        for text in en:
                            assert f"{e}, {e}" not in text and f"{e} and {e}" not in text, text
                        for text in zh:
                            assert f"{z}、{z}" not in text and f"{z}和{z}" not in text, text
                    seen += len(en) + len(zh)
    assert seen > 2000


def test_genre_names_its_culture_once():
    for style in sorted(cap.STYLE_GENRES):
        for culture in sorted(cap.CULTURE_ADJECTIVES):
            f = _fields(random.Random(0), style, culture, "flute", [])
            en, zh = cap.genre(f)
            assert not _repeated_words(en), en
            assert zh.count("民谣") <= 1 and zh.count("中国风") <= 1, zh
    german = _fields(random.Random(0), "six_eight", "german", "flute", [])
    assert cap.genre(german) == ("German folk in 6/8", "德国6/8拍民谣")
    celtic = _fields(random.Random(0), "six_eight", "celtic", "flute", [])
    assert cap.genre(celtic) == ("Celtic folk in 6/8", "凯尔特风6/8拍民谣")


def test_lead_over_reads_right():
    rng = random.Random(3)
    texts = []
    for lead, want in (("saw_lead", "sawtooth synth lead over"), ("fiddle", "fiddle lead over")):
        f = _fields(rng, "rock", "celtic", lead, ["overdrive_guitar", "electric_bass", "drums"])
        for _ in range(40):
            texts.append((cap._arrangement(f, rng)[0], want))
    for got, want in texts:
        if " over " in got:
            assert got.startswith(want), got
    assert any(" over " in got for got, _ in texts)
