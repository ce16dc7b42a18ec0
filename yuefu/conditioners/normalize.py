"""Chinese music prompts -> English, before an English-only text encoder (T5, MiniLM).

T5's and MiniLM's vocabularies have no Chinese: "国风摇滚，古筝" reaches the encoder as unknown tokens and
conditions on nothing. :func:`normalize_prompt` rewrites the music vocabulary of a prompt in English:

    "国风摇滚，古筝和电吉他，每分钟120拍" -> "Chinese traditional style rock, guzheng and electric guitar, 120 BPM"

How: NFKC (full-width letters, digits and punctuation to ASCII), then one left-to-right pass that at each position
tries, in order, structured patterns (tempo "每分钟120拍", keys "升F小调", durations "30秒", decades "80年代", with
Chinese numerals such as 一百二十), a run of ASCII (kept as written: "lo-fi 钢琴" -> "lo-fi piano"), punctuation,
and the longest word of the lexicon. A few function words reorder their phrase the English way: "用二胡演奏的旋律"
-> "melody played on erhu", "带有古筝的摇滚" -> "rock with guzheng", "在钢琴之上的小提琴" -> "violin over piano".
When the lexicon leaves characters uncovered, a second pass converts traditional script to simplified and lets
CC-CEDICT words (:mod:`yuefu.conditioners.zh_dictionary`) cover them: "恐龙主题的儿歌" -> "dinosaur theme children's
song" (the lexicon alone read 龙 as "dragon"), "國風搖滾" as "国风摇滚". Dictionary words are used only where they
leave fewer characters uncovered, so a prompt the lexicon covers whole reads the same. CJK characters that neither
covers are dropped and listed in ``unknown`` (runs of consecutive characters).

:data:`LEXICON` (Chinese -> English) is public; :data:`REVERSE_LEXICON` (English -> the first Chinese word giving
it) serves the other direction, e.g. Chinese captions. Segmentation is a small dynamic programme over the lexicon
(and the dictionary), no segmenter dependency.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from yuefu.conditioners import zh_dictionary
from yuefu.conditioners.zh_dictionary import ZhDictionary

# --- the lexicon -------------------------------------------------------------------------------------------------
# Content words, Chinese -> English. Within a group the first Chinese word for an English term is its canonical
# translation in REVERSE_LEXICON, so synonyms come after the preferred word.

_GENRES = {
    "国风": "Chinese traditional style", "中国风": "Chinese style", "古风": "ancient Chinese style",
    "民族风": "ethnic style", "民乐": "Chinese folk instrumental", "民族音乐": "ethnic music",
    "摇滚": "rock", "摇滚乐": "rock", "流行": "pop", "流行乐": "pop", "流行音乐": "pop music",
    "爵士": "jazz", "爵士乐": "jazz", "电子": "electronic", "电子乐": "electronic music",
    "电子音乐": "electronic music", "电音": "EDM", "电子舞曲": "EDM", "古典": "classical", "古典乐": "classical music",
    "古典音乐": "classical music", "民谣": "folk", "民歌": "folk song", "说唱": "rap", "嘻哈": "hip hop",
    "蓝调": "blues", "布鲁斯": "blues", "金属": "metal", "重金属": "heavy metal", "朋克": "punk",
    "乡村": "country", "乡村音乐": "country music", "雷鬼": "reggae", "放克": "funk", "灵魂乐": "soul",
    "灵魂": "soul", "节奏布鲁斯": "R&B", "氛围": "ambient", "氛围音乐": "ambient music", "环境音乐": "ambient music",
    "轻音乐": "easy listening", "交响": "symphonic", "交响乐": "symphony", "史诗": "epic",
    "电影配乐": "film score", "配乐": "score", "原声带": "soundtrack", "低保真": "lo-fi", "舞曲": "dance music",
    "迪斯科": "disco", "迪斯可": "disco", "的士高": "disco", "浩室": "house", "浩室音乐": "house music",
    "深浩室": "deep house", "科技舞曲": "techno", "铁克诺": "techno", "陷阱": "trap", "陷阱音乐": "trap music",
    "蒸汽波": "vaporwave", "合成器波": "synthwave", "合成波": "synthwave", "城市流行": "city pop",
    "新世纪音乐": "new age music", "新世纪": "new age", "后摇": "post-rock", "后摇滚": "post-rock",
    "独立": "indie", "独立流行": "indie pop", "独立摇滚": "indie rock", "另类": "alternative",
    "另类摇滚": "alternative rock", "硬摇滚": "hard rock", "软摇滚": "soft rock", "迷幻": "psychedelic",
    "迷幻摇滚": "psychedelic rock", "前卫": "progressive", "前卫摇滚": "progressive rock",
    "前卫金属": "progressive metal", "英伦摇滚": "Britpop", "朋克摇滚": "punk rock", "流行朋克": "pop punk",
    "死亡金属": "death metal", "黑金属": "black metal", "工业": "industrial", "工业摇滚": "industrial rock",
    "哥特": "gothic", "噪音": "noise", "实验": "experimental", "实验电子": "experimental electronic",
    "极简主义": "minimalist", "极简": "minimal", "鼓打贝斯": "drum and bass", "回响贝斯": "dubstep",
    "碎拍": "breakbeat", "未来贝斯": "future bass", "出神": "trance", "出神音乐": "trance music",
    "迷幻舞曲": "psytrance", "弛放": "chillout", "慢摇": "downtempo", "律动": "groove", "福音": "gospel",
    "拉丁": "Latin", "波萨诺瓦": "bossa nova", "巴萨诺瓦": "bossa nova", "桑巴": "samba", "探戈": "tango",
    "萨尔萨": "salsa", "弗拉门戈": "flamenco", "雷鬼顿": "reggaeton", "非洲节拍": "Afrobeat",
    "凯尔特": "Celtic", "华尔兹": "waltz", "圆舞曲": "waltz", "进行曲": "march", "小夜曲": "serenade",
    "摇篮曲": "lullaby", "催眠曲": "lullaby", "奏鸣曲": "sonata", "协奏曲": "concerto", "练习曲": "etude",
    "夜曲": "nocturne", "赋格": "fugue", "序曲": "overture", "组曲": "suite", "咏叹调": "aria", "歌剧": "opera",
    "音乐剧": "musical theatre", "巴洛克": "baroque", "浪漫主义": "Romantic-era", "印象派": "impressionist",
    "室内乐": "chamber music", "管弦乐": "orchestral", "大乐队": "big band", "摇摆乐": "swing",
    "比波普": "bebop", "融合爵士": "jazz fusion", "冷爵士": "cool jazz", "拉格泰姆": "ragtime",
    "蓝草": "bluegrass", "芯片音乐": "chiptune", "合唱音乐": "choral music", "军乐": "military music",
    "军乐队": "military band", "山歌": "mountain folk song", "戏曲": "Chinese opera", "京剧": "Peking opera",
    "昆曲": "Kunqu opera", "粤剧": "Cantonese opera", "越剧": "Yue opera", "黄梅戏": "Huangmei opera",
    "丝竹": "silk-and-bamboo ensemble", "江南丝竹": "Jiangnan silk-and-bamboo ensemble",
    "广东音乐": "Cantonese music", "粤语流行": "Cantopop", "华语流行": "Mandopop", "港乐": "Cantopop",
    "韩流": "K-pop", "日系": "Japanese", "动漫": "anime", "二次元": "anime", "治愈系": "healing",
    "纯音乐": "instrumental music", "器乐": "instrumental", "纯器乐": "purely instrumental",
    "背景音乐": "background music", "主题曲": "theme song", "片头曲": "opening theme", "片尾曲": "ending theme",
    "插曲": "insert song", "原声": "acoustic", "不插电": "unplugged", "弹唱": "singer-songwriter",
    "抒情歌": "ballad", "情歌": "love song", "儿歌": "children's song", "童谣": "nursery rhyme",
    "战歌": "battle song", "颂歌": "hymn", "圣歌": "hymn", "赞美诗": "hymn", "葬礼进行曲": "funeral march",
    "婚礼进行曲": "wedding march", "阿卡贝拉": "a cappella", "无伴奏": "a cappella", "白噪音": "white noise",
    "故障音效": "glitch effects", "故障": "glitch",
    "众赞歌": "chorale", "圣咏": "chorale", "吉格": "jig", "吉格舞曲": "jig", "里尔舞曲": "reel",
    "克莱兹默": "klezmer", "号曲": "fanfare", "民间小调": "folk tune", "民间音乐": "folk music", "民间": "folk",
    "五声调式": "pentatonic", "五声": "pentatonic",
}

_INSTRUMENTS = {
    "古筝": "guzheng", "筝": "zheng", "二胡": "erhu", "琵琶": "pipa", "笛子": "dizi", "竹笛": "bamboo flute",
    "笛": "flute", "箫": "xiao", "洞箫": "xiao", "古琴": "guqin", "钢琴": "piano", "电钢琴": "electric piano",
    "电钢": "electric piano", "三角钢琴": "grand piano", "吉他": "guitar", "电吉他": "electric guitar",
    "木吉他": "acoustic guitar", "原声吉他": "acoustic guitar", "民谣吉他": "acoustic guitar",
    "古典吉他": "classical guitar", "尼龙弦吉他": "nylon-string guitar", "失真吉他": "distorted guitar",
    "贝斯": "bass", "电贝斯": "electric bass", "贝斯线": "bassline", "低音提琴": "double bass",
    "倍大提琴": "double bass", "鼓": "drums", "架子鼓": "drum kit", "爵士鼓": "drum kit", "鼓点": "drum beat",
    "鼓组": "drums", "军鼓": "snare drum", "小军鼓": "snare drum", "底鼓": "kick drum", "双踩底鼓": "double kick drum",
    "大鼓": "bass drum", "定音鼓": "timpani", "手鼓": "hand drum", "非洲鼓": "djembe", "邦戈鼓": "bongos",
    "康加鼓": "congas", "太鼓": "taiko drums", "堂鼓": "Chinese drum", "战鼓": "war drums", "锣鼓": "gongs and drums",
    "鼓机": "drum machine", "电子鼓": "electronic drums", "踩镲": "hi-hat", "镲": "cymbals", "镲片": "cymbals",
    "小提琴": "violin", "大提琴": "cello", "中提琴": "viola", "提琴": "fiddle", "弦乐": "strings",
    "弦乐四重奏": "string quartet", "弦乐团": "string orchestra", "铜管": "brass", "铜管乐": "brass",
    "木管": "woodwinds", "木管乐器": "woodwinds", "小号": "trumpet", "长号": "trombone", "圆号": "French horn",
    "法国号": "French horn", "大号": "tuba", "萨克斯": "saxophone", "萨克斯风": "saxophone",
    "次中音萨克斯": "tenor saxophone", "中音萨克斯": "alto saxophone", "长笛": "flute", "短笛": "piccolo",
    "单簧管": "clarinet", "黑管": "clarinet", "双簧管": "oboe", "巴松": "bassoon", "大管": "bassoon",
    "竖琴": "harp", "管风琴": "pipe organ", "风琴": "organ", "电风琴": "electric organ",
    "哈蒙德风琴": "Hammond organ", "大键琴": "harpsichord", "羽管键琴": "harpsichord", "合成器": "synthesizer",
    "模拟合成器": "analog synthesizer", "合成器主音": "synth lead", "合成器铺底": "synth pad", "铺底": "pad",
    "琶音": "arpeggio", "琶音器": "arpeggiator", "马林巴": "marimba", "木琴": "xylophone", "钟琴": "glockenspiel",
    "颤音琴": "vibraphone", "钢片琴": "celesta", "八音盒": "music box", "音乐盒": "music box", "扬琴": "yangqin",
    "唢呐": "suona", "笙": "sheng", "编钟": "bianzhong bells", "锣": "gong", "钹": "cymbals", "木鱼": "wood block",
    "梆子": "clapper", "手风琴": "accordion", "口琴": "harmonica", "布鲁斯口琴": "blues harp", "尺八": "shakuhachi",
    "三味线": "shamisen", "西塔琴": "sitar", "塔布拉鼓": "tabla", "班卓琴": "banjo", "曼陀林": "mandolin",
    "尤克里里": "ukulele", "乌克丽丽": "ukulele", "风笛": "bagpipes", "陶笛": "ocarina", "埙": "xun",
    "葫芦丝": "hulusi", "柳琴": "liuqin", "中阮": "zhongruan", "阮": "ruan", "月琴": "yueqin", "三弦": "sanxian",
    "马头琴": "morin khuur", "冬不拉": "dombra", "乌德琴": "oud", "卡林巴": "kalimba", "拇指琴": "kalimba",
    "钢鼓": "steel drums", "手碟": "handpan", "颂钵": "singing bowls", "铃鼓": "tambourine", "沙锤": "maracas",
    "三角铁": "triangle", "风铃": "wind chimes", "铃铛": "bells", "钟声": "bells", "钟": "bell", "口哨": "whistling",
    "人声": "vocals", "男声": "male vocals", "女声": "female vocals", "童声": "children's voices",
    "合唱": "choir", "合唱团": "choir", "唱诗班": "church choir", "男声合唱": "male choir",
    "儿童合唱": "children's choir", "哼唱": "humming", "吟唱": "chanting", "嘶吼": "screaming vocals",
    "和声": "harmony", "伴奏": "accompaniment", "独奏": "solo", "重奏": "ensemble", "二重奏": "duet",
    "三重奏": "trio", "四重奏": "quartet", "合奏": "ensemble", "齐奏": "unison", "乐器": "instruments",
    "民族乐器": "traditional Chinese instruments", "打击乐": "percussion", "打击乐器": "percussion",
    "管弦乐团": "orchestra", "交响乐团": "symphony orchestra", "乐团": "orchestra", "乐队": "band",
    "采样": "samples", "黑胶": "vinyl", "黑胶唱片": "vinyl record", "噼啪声": "crackle", "底噪": "hiss",
    "磁带": "tape", "拍手": "claps", "拍手声": "hand claps", "响指": "finger snaps", "808低音": "808 bass",
    "低音": "bass", "重低音": "heavy bass", "强力和弦": "power chords", "和弦": "chords",
    "和弦进行": "chord progression", "主旋律": "main melody", "副旋律": "countermelody", "音色": "timbre",
    "音效": "sound effects", "分解和弦": "arpeggiated chords", "扫弦": "strumming", "拨弦": "pizzicato",
    "弹拨": "plucked", "滑音": "slides", "颤音": "vibrato", "泛音": "harmonics", "连奏": "legato",
    "断奏": "staccato", "混响": "reverb", "回声": "echo", "延迟": "delay", "失真": "distortion",
    "延迟吉他": "delay-drenched guitar", "吉他切分": "syncopated guitar", "主音": "lead",
    "主奏": "lead", "锯齿波合成器": "sawtooth synth lead", "锯齿波": "sawtooth", "方波合成器": "square-wave synth lead",
    "方波": "square wave", "合成器贝斯": "synth bass", "合成贝斯": "synth bass", "合成弦乐": "synth strings",
    "合成器弦乐": "synth strings", "合成": "synth", "无品贝斯": "fretless bass", "无品": "fretless",
    "清音电吉他": "clean electric guitar", "清音吉他": "clean guitar", "清音": "clean",
    "过载电吉他": "overdriven guitar", "过载吉他": "overdriven guitar", "过载": "overdrive",
    "失真电吉他": "distorted electric guitar", "竖笛": "recorder", "排箫": "pan flute", "哨笛": "tin whistle",
    "锡笛": "tin whistle", "民间提琴": "fiddle", "温暖的合成器铺底": "warm synth pad",
    "温暖合成器铺底": "warm synth pad", "四声部": "four voices", "声部": "voices",
}

_MOODS = {
    "欢快": "upbeat", "悲伤": "sad", "忧伤": "melancholic", "伤感": "sentimental", "忧郁": "melancholy",
    "平静": "calm", "宁静": "serene", "安静": "quiet", "静谧": "tranquil", "激昂": "rousing", "激情": "passionate",
    "热情": "passionate", "浪漫": "romantic", "神秘": "mysterious", "紧张": "tense", "温暖": "warm",
    "温柔": "gentle", "柔和": "soft", "轻柔": "soft", "梦幻": "dreamy", "史诗般": "epic", "史诗感": "epic",
    "怀旧": "nostalgic", "轻松": "relaxed", "愉快": "cheerful", "轻松愉快": "light and cheerful", "快乐": "happy",
    "开心": "happy", "欢乐": "joyful", "喜庆": "festive", "黑暗": "dark", "阴暗": "gloomy", "阴郁": "gloomy",
    "阴森": "eerie", "恐怖": "horror", "诡异": "eerie", "惊悚": "thriller", "悬疑": "suspense", "壮丽": "majestic",
    "宏大": "grand", "大气": "grand", "磅礴": "majestic", "雄壮": "powerful", "英雄": "heroic", "豪迈": "bold",
    "悠扬": "melodious", "悠闲": "leisurely", "慵懒": "lazy", "治愈": "healing", "舒缓": "soothing",
    "放松": "relaxing", "空灵": "ethereal", "清新": "fresh", "明亮": "bright", "阳光": "sunny", "活泼": "lively",
    "动感": "dynamic", "有力": "powerful", "强劲": "punchy", "力量": "power", "狂野": "wild", "愤怒": "angry",
    "躁动": "restless", "孤独": "lonely", "寂寞": "lonely", "思念": "longing", "感动": "moving", "深情": "heartfelt",
    "甜美": "sweet", "可爱": "cute", "俏皮": "playful", "幽默": "humorous", "滑稽": "comical", "优雅": "elegant",
    "高雅": "refined", "庄严": "solemn", "肃穆": "solemn", "神圣": "sacred", "希望": "hope", "充满希望": "hopeful",
    "励志": "inspirational", "振奋": "uplifting", "振奋人心": "uplifting", "鼓舞人心": "inspiring",
    "积极向上": "positive and uplifting", "积极": "positive", "热血": "hot-blooded", "酷": "cool", "炫酷": "cool",
    "性感": "sexy", "迷人": "charming", "深沉": "deep", "沉重": "heavy", "沉思": "contemplative", "冰冷": "icy",
    "温馨": "cozy", "舒适": "comfortable", "惬意": "cozy", "闲适": "laid-back", "辽阔": "vast", "广阔": "expansive",
    "苍凉": "desolate", "凄美": "poignant", "哀伤": "mournful", "悲壮": "tragic and heroic", "悲凉": "sorrowful",
    "惆怅": "wistful", "迷茫": "lost", "朦胧": "hazy", "缥缈": "ethereal", "奇幻": "fantasy", "魔幻": "magical",
    "童话": "fairy-tale", "科幻": "sci-fi", "未来感": "futuristic", "未来": "futuristic", "赛博朋克": "cyberpunk",
    "紧迫": "urgent", "急促": "hurried", "激烈": "intense", "紧张激烈": "tense and intense",
    "紧张刺激": "thrilling", "刺激": "exciting", "热烈": "fiery", "澎湃": "surging", "高亢": "soaring",
    "低沉": "deep", "厚重": "heavy", "轻快": "light and upbeat", "明快": "bright and lively", "热闹": "lively",
    "优美": "beautiful", "美丽": "beautiful", "动听": "pleasant", "抒情": "lyrical", "古朴": "rustic",
    "典雅": "elegant", "禅意": "Zen", "恬静": "peaceful", "安详": "peaceful", "和平": "peaceful",
    "复古": "retro", "老派": "old-school", "经典": "classic", "现代": "modern", "简约": "minimalist",
    "丰富": "rich", "饱满": "full", "干净": "clean", "清脆": "crisp", "浑厚": "rich", "粗糙": "gritty",
    "沙哑": "raspy", "空间感": "spacious", "氛围感": "atmospheric", "电影感": "cinematic", "画面感": "cinematic",
    "律动感": "groovy", "律动感强": "strongly groovy", "节奏感强": "strongly rhythmic", "速度感": "sense of speed",
    "太空感": "spacey", "工业感": "industrial", "充满能量": "energetic", "能量": "energy", "专注": "focus",
    "复杂": "complex", "重复": "repetitive", "上升": "rising", "极快": "extremely fast", "极慢": "extremely slow",
    "不协和": "dissonant", "和谐": "harmonious", "即兴": "improvised", "欢腾": "jubilant", "强烈": "strong",
    "喜悦": "joyful", "充满活力": "energetic", "富有活力": "energetic", "活力": "energy", "富有戏剧性": "dramatic",
    "戏剧性": "dramatic", "虔诚": "reverent", "质朴": "rustic", "寂静": "quiet", "凯旋": "triumphant",
    "轰鸣": "roaring", "天使般": "angelic", "气声": "breathy", "冥想般": "meditative", "空气": "air",
}

_TEMPO_AND_FORM = {
    "快": "fast", "慢": "slow", "中速": "medium tempo", "快节奏": "fast tempo", "慢节奏": "slow tempo",
    "快速": "fast", "慢速": "slow", "慢板": "adagio", "快板": "allegro", "行板": "andante", "中板": "moderato",
    "急板": "presto", "渐快": "accelerando", "渐慢": "ritardando", "渐强": "crescendo", "缓慢渐强": "slow build",
    "渐弱": "fading", "淡入": "fade in", "淡出": "fade out", "节拍": "beat", "速度": "tempo", "切分": "syncopated",
    "四四拍": "4/4 time", "三拍子": "3/4 time", "四拍子": "4/4 time", "六八拍": "6/8 time", "七八拍": "7/8 time",
    "大调": "major key", "小调": "minor key", "江南小调": "Jiangnan folk tune", "音阶": "scale",
    "五声音阶": "pentatonic scale", "调式": "mode", "前奏": "intro", "开场": "intro", "尾奏": "outro",
    "结尾": "ending", "高潮": "climax", "副歌": "chorus", "主歌": "verse", "桥段": "bridge", "间奏": "interlude",
    "循环": "loop", "过渡": "transition", "改编": "arrangement", "编曲": "arrangement", "混音": "mix",
    "重混": "remix", "翻唱": "cover", "现场": "live", "录音": "recording", "立体声": "stereo",
    "高品质": "high quality", "高音质": "high fidelity", "半分钟": "30 seconds", "一分半": "90 seconds",
    "片头": "intro", "片尾": "end credits", "元素": "elements", "节奏型": "rhythm pattern",
}

_SCENES = {
    "雨夜": "rainy night", "下雨天": "rainy day", "雨天": "rainy day", "雨声": "rain sounds", "雨": "rain",
    "下雨": "rain", "咖啡馆": "cafe", "咖啡厅": "cafe", "咖啡": "coffee", "电影": "film", "游戏": "video game",
    "电子游戏": "video game", "婚礼": "wedding", "夏天": "summer", "夏日": "summer", "春天": "spring",
    "秋天": "autumn", "冬天": "winter", "冬日": "winter", "雪": "snow", "雪夜": "snowy night", "夜晚": "night",
    "夜": "night", "深夜": "late night", "午夜": "midnight", "清晨": "early morning", "早晨": "morning",
    "午后": "afternoon", "黄昏": "dusk", "日落": "sunset", "日出": "sunrise", "傍晚": "evening",
    "月光": "moonlight", "月亮": "moon", "星空": "starry sky", "星星": "stars", "海边": "seaside",
    "海滩": "beach", "大海": "ocean", "海浪": "waves", "海浪声": "sound of waves", "海底世界": "underwater world",
    "海底": "underwater", "森林": "forest", "梦幻森林": "enchanted forest", "山": "mountain", "高山": "high mountains",
    "山水": "landscape", "河流": "river", "小溪": "brook", "湖": "lake", "竹林": "bamboo forest",
    "古镇": "ancient town", "水乡": "water town", "江南": "Jiangnan", "江南水乡": "Jiangnan water town",
    "城市": "city", "都市": "urban", "城市夜景": "city lights at night", "夜景": "night view", "街头": "street",
    "夜店": "nightclub", "酒吧": "bar", "俱乐部": "club", "派对": "party", "舞会": "dance party",
    "健身房": "gym", "健身": "workout", "运动": "sports", "跑步": "running", "学习": "studying", "工作": "working",
    "睡眠": "sleep", "睡觉": "sleep", "冥想": "meditation", "瑜伽": "yoga", "旅行": "travel",
    "公路旅行": "road trip", "驾驶": "driving", "开车": "driving", "夜晚驾驶": "night driving",
    "火车": "train", "广告": "commercial", "广告配乐": "commercial music", "短视频": "short video",
    "视频": "video", "纪录片": "documentary", "预告片": "trailer", "电影预告片": "movie trailer",
    "动画": "animation", "卡通": "cartoon", "儿童": "children", "孩子": "kids", "儿童歌曲": "children's song",
    "生日": "birthday", "生日快乐": "happy birthday", "圣诞": "Christmas", "圣诞节": "Christmas",
    "圣诞歌曲": "Christmas song", "新年": "New Year", "春节": "Chinese New Year", "中秋": "Mid-Autumn Festival",
    "中秋夜": "Mid-Autumn night", "节日": "festive", "庆典": "celebration", "战斗": "battle",
    "战斗音乐": "battle music", "战争": "war", "战争电影": "war film", "战场": "battlefield", "追逐": "chase",
    "冒险": "adventure", "探险": "exploration", "胜利": "victory", "宫殿": "palace", "宫廷": "imperial court",
    "古代": "ancient", "当代": "contemporary", "末日": "apocalyptic", "霓虹": "neon", "霓虹灯": "neon lights",
    "校园": "campus", "青春": "youth", "爱情": "love", "恋爱": "romance", "失恋": "heartbreak", "分手": "breakup",
    "回忆": "memories", "童年回忆": "childhood memories", "童年": "childhood", "梦": "dream", "梦境": "dreamscape",
    "故乡": "hometown", "家乡": "hometown", "思乡": "homesick", "离别": "farewell", "告别": "farewell",
    "黎明": "dawn", "天空": "sky", "云": "clouds", "风声": "wind", "微风": "breeze", "花": "flowers",
    "花园": "garden", "樱花": "cherry blossoms", "荷花": "lotus", "田园": "pastoral", "田园风光": "pastoral scenery",
    "风光": "scenery", "风情": "flavour", "草原": "grassland", "草原风情": "grassland flavour", "旷野": "wilderness",
    "沙漠": "desert", "沙漠商队": "desert caravan", "商队": "caravan", "丝绸之路": "Silk Road", "寺庙": "temple",
    "教堂": "church", "茶馆": "teahouse", "图书馆": "library", "周末": "weekend", "假期": "holiday",
    "热带": "tropical", "太空": "space", "宇宙": "cosmic", "外星": "alien", "机器人": "robot", "魔法": "magic",
    "龙": "dragon", "仙境": "wonderland", "天堂": "heaven", "万圣节": "Halloween", "恐怖电影": "horror film",
    "科幻电影": "sci-fi film", "武侠": "wuxia", "仙侠": "xianxia fantasy", "江湖": "martial arts world",
    "电视剧": "TV drama", "综艺": "variety show", "直播": "livestream", "播客": "podcast", "电台": "radio",
    "深夜电台": "late-night radio", "自然": "nature", "自然声音": "nature sounds", "鸟鸣": "birdsong",
    "体育场": "stadium", "葬礼": "funeral", "毕业季": "graduation season", "毕业": "graduation",
    "月光下": "under the moonlight", "星空下": "under the stars", "雨中": "in the rain", "梦中": "in a dream",
    "夜里": "at night", "角色扮演游戏": "RPG", "角色扮演": "role-playing", "赛车游戏": "racing game",
    "赛车": "racing", "像素": "pixel", "像素风": "pixel-art", "像素风游戏": "pixel-art game", "城镇": "town",
    "城镇音乐": "town music", "主题": "theme", "战歌": "battle song", "维京": "Viking", "古埃及": "ancient Egyptian",
    "埃及": "Egyptian", "中国": "Chinese", "日本": "Japanese", "日式": "Japanese-style", "和风": "Japanese style",
    "韩国": "Korean", "印度": "Indian", "中东": "Middle Eastern", "非洲": "African", "爱尔兰": "Irish",
    "西班牙": "Spanish", "法国": "French", "法式": "French", "美国": "American", "美式": "American",
    "英国": "British", "德国": "German", "意大利": "Italian", "俄罗斯": "Russian", "苏格兰": "Scottish",
    "英伦": "British", "巴西": "Brazilian", "拉美": "Latin American", "新疆": "Xinjiang",
    "西藏": "Tibetan", "藏族": "Tibetan", "蒙古": "Mongolian", "呼麦": "throat singing", "粤语": "Cantonese",
    "台湾": "Taiwanese", "香港": "Hong Kong", "港风": "Hong Kong style", "宫崎骏": "Ghibli", "久石让": "Joe Hisaishi",
    "人": "people", "角色": "character", "英雄主题": "heroic theme",
}

# Words that are not music terms but fill real prompts: nature, places, times, stories, games, feelings, actions.
_GENERAL = {
    "萤火虫": "fireflies", "夏夜": "summer night", "春夜": "spring night", "秋夜": "autumn night",
    "冬夜": "winter night", "入场": "entrance", "播放": "playing", "燃": "fired-up", "下雪": "snowing",
    "下雪天": "snowy day", "壁炉": "fireplace", "刷子鼓": "brushed drums", "刷子": "brushes", "美食": "food",
    "美食视频": "food video", "低吟": "murmured", "吟": "chant", "环境音": "ambient sounds", "环境": "environment",
    "低频": "low frequencies", "嗡嗡声": "drone", "嗡嗡": "buzzing", "偶尔": "occasional", "单音": "single notes",
    "晨跑": "morning run", "大合唱": "big chorus", "古典舞": "classical dance", "舞": "dance", "舞蹈": "dance",
    "跳舞": "dancing", "轮指": "tremolo", "刮奏": "glissando", "蒸汽朋克": "steampunk", "齿轮": "gears",
    "交织": "interweaving", "沉浸式": "immersive", "沉浸": "immersive", "拍打": "crashing", "礁石": "rocks",
    "远处": "distant", "远方": "far away", "海鸥": "seagulls", "仙气": "ethereal", "飘飘": "floating",
    "仙气飘飘": "ethereal and floating", "笛箫": "dizi and xiao", "直播间": "livestream", "青涩": "innocent",
    "纯真": "innocent", "西部": "Wild West", "牛仔": "cowboy", "故事": "story", "滑棒吉他": "slide guitar",
    "探索": "exploration", "演进": "evolving", "联欢晚会": "gala", "晚会": "gala", "春晚": "Spring Festival Gala",
    "雨后": "after the rain", "初晴": "clearing skies", "小品": "miniature", "高音": "treble", "漫步": "stroll",
    "散步": "walk", "侦探": "detective", "侦探片": "detective film", "弱音器": "mute", "弱音小号": "muted trumpet",
    "玩耍": "playing", "国歌": "national anthem", "梦核": "dreamcore", "感伤": "sentimental",
    "千军万马": "vast armies", "擂": "pounding", "周五": "Friday", "晚上": "evening", "上海": "Shanghai",
    "老上海": "old Shanghai", "北京": "Beijing", "留声机": "gramophone", "音质": "sound quality", "人群": "crowd",
    "欢呼": "cheering", "掌声": "applause", "心跳": "heartbeat", "脚步声": "footsteps", "鸟叫": "birdsong",
    "虫鸣": "insects", "蝉鸣": "cicadas", "溪水": "stream", "流水": "flowing water", "篝火": "campfire",
    "露营": "camping", "烟花": "fireworks", "白天": "daytime", "中午": "noon", "下午": "afternoon",
    "凌晨": "small hours", "下班": "after work", "通勤": "commute", "地铁": "subway", "街道": "street",
    "小巷": "alley", "胡同": "hutong", "屋顶": "rooftop", "天台": "rooftop", "窗边": "by the window",
    "窗外": "outside the window", "房间": "room", "卧室": "bedroom", "阳台": "balcony", "庭院": "courtyard",
    "公园": "park", "游乐园": "amusement park", "旋转木马": "carousel", "海洋": "ocean", "岛屿": "island",
    "海岛": "island", "港口": "harbour", "灯塔": "lighthouse", "船": "boat", "帆船": "sailboat", "飞机": "airplane",
    "车站": "station", "雨林": "rainforest", "丛林": "jungle", "雪山": "snowy mountains", "冰川": "glacier",
    "极光": "aurora", "火山": "volcano", "峡谷": "canyon", "瀑布": "waterfall", "溪流": "stream",
    "湖畔": "lakeside", "江边": "riverside", "河": "river", "江": "river", "桥": "bridge", "城堡": "castle",
    "王国": "kingdom", "骑士": "knight", "公主": "princess", "王子": "prince", "国王": "king", "女王": "queen",
    "巫师": "wizard", "精灵": "elves", "怪物": "monster", "僵尸": "zombie", "吸血鬼": "vampire", "幽灵": "ghost",
    "鬼": "ghost", "鬼屋": "haunted house", "墓地": "graveyard", "地下城": "dungeon", "迷宫": "labyrinth",
    "副本": "dungeon", "关卡": "level", "主菜单": "main menu", "菜单": "menu", "失败": "defeat",
    "游戏结束": "game over", "商店": "shop", "村庄": "village", "小镇": "small town", "乡下": "countryside",
    "农村": "countryside", "田野": "fields", "麦田": "wheat field", "稻田": "rice paddies", "牧场": "ranch",
    "马": "horse", "骑马": "horseback riding", "奔跑": "running", "飞翔": "soaring", "漂浮": "floating",
    "坠落": "falling", "旋转": "spinning", "摇摆": "swaying", "心情": "mood", "好心情": "good mood",
    "元气": "energetic", "元气满满": "full of energy", "少女": "young girl", "少年": "youth", "老人": "elderly",
    "母亲": "mother", "妈妈": "mom", "父亲": "father", "家人": "family", "朋友": "friends", "友情": "friendship",
    "亲情": "family love", "团聚": "reunion", "重逢": "reunion", "怀念": "reminiscing", "纪念": "commemoration",
    "感恩": "gratitude", "祝福": "blessing", "祈祷": "prayer", "信仰": "faith", "灵性": "spiritual",
    "疗愈": "healing", "放空": "zoning out", "发呆": "daydreaming", "独处": "solitude", "失眠": "insomnia",
    "助眠": "sleep aid", "催眠": "hypnotic", "午睡": "nap", "水疗": "spa", "专注力": "focus",
    "效率": "productivity", "编程": "coding", "写作": "writing", "阅读": "reading", "读书": "reading",
    "思考": "thinking", "灵感": "inspiration", "创意": "creative", "科技": "technology", "商务": "business",
    "企业": "corporate", "宣传片": "promotional video", "产品": "product", "发布会": "launch event",
    "开幕式": "opening ceremony", "颁奖典礼": "award ceremony", "典礼": "ceremony", "仪式": "ceremony",
    "阅兵": "military parade", "军队": "army", "士兵": "soldiers", "行军": "marching", "冲锋": "charge",
    "决战": "final battle", "对决": "showdown", "激战": "fierce battle", "刀剑": "swords", "剑": "sword",
    "侠客": "swordsman", "武术": "martial arts", "功夫": "kung fu", "少林": "Shaolin", "太极": "tai chi",
    "禅": "Zen", "佛教": "Buddhist", "佛乐": "Buddhist music", "梵音": "Buddhist chant", "诵经": "sutra chanting",
    "古寺": "ancient temple", "山谷": "valley", "云海": "sea of clouds", "长安": "Chang'an",
    "大唐": "Tang dynasty", "唐朝": "Tang dynasty", "宋朝": "Song dynasty", "明朝": "Ming dynasty",
    "汉服": "Hanfu", "敦煌": "Dunhuang", "西域": "Western Regions", "边塞": "frontier", "大漠": "vast desert",
    "落日": "setting sun", "夕阳": "setting sun", "晚霞": "sunset glow", "朝阳": "morning sun", "彩虹": "rainbow",
    "雷雨": "thunderstorm", "雷声": "thunder", "暴风雨": "storm", "暴雨": "downpour", "小雨": "light rain",
    "细雨": "drizzle", "烟雨": "misty rain", "雾": "fog", "薄雾": "mist", "冰": "ice", "火": "fire",
    "火焰": "flames", "水": "water", "光": "light", "光影": "light and shadow", "黑夜": "night",
    "星河": "galaxy", "银河": "Milky Way", "星球": "planet", "飞船": "spaceship", "宇航员": "astronaut",
    "科技感": "high-tech", "机械": "mechanical", "机械感": "mechanical", "金属感": "metallic", "电流": "electric",
    "虚拟": "virtual", "黑客": "hacker", "复古游戏": "retro game", "街机": "arcade", "演唱会": "concert",
    "音乐会": "concert", "音乐节": "music festival", "舞台": "stage", "广场舞": "square dance", "车载": "car",
    "抖音": "TikTok", "网红": "viral", "洗脑": "catchy", "朗朗上口": "catchy", "上头": "addictive",
    "抓耳": "catchy", "神曲": "viral hit", "好听": "pleasant", "美": "beautiful", "美好": "beautiful",
    "高级感": "sophisticated", "高级": "sophisticated", "时尚": "fashionable", "潮流": "trendy", "小众": "niche",
    "主流": "mainstream", "独特": "unique", "新颖": "novel", "清爽": "refreshing", "凉爽": "cool",
    "细腻": "delicate", "精致": "exquisite", "华丽": "gorgeous", "绚丽": "dazzling", "辉煌": "glorious",
    "震撼": "powerful", "恢弘": "magnificent", "气势": "grandeur", "气势磅礴": "majestic",
    "激动人心": "exciting", "扣人心弦": "gripping", "心动": "heart-fluttering", "甜蜜": "sweet",
    "暧昧": "flirtatious", "失落": "dejected", "无奈": "helpless", "遗憾": "regretful", "释然": "relieved",
    "平和": "peaceful", "温和": "mild", "淡然": "calm", "从容": "composed", "悠远": "distant", "深邃": "profound",
    "空旷": "spacious", "幽静": "secluded", "幽暗": "dim", "冷峻": "stern", "冷酷": "cold", "压抑": "oppressive",
    "焦虑": "anxious", "不安": "uneasy", "危险": "dangerous", "危机": "crisis", "尖锐": "sharp", "粗犷": "rugged",
    "野性": "wild", "原始": "primal", "部落": "tribal", "神话": "mythical", "传说": "legendary",
    "史诗级": "epic", "电影级": "cinematic", "大片": "blockbuster", "好莱坞": "Hollywood", "百老汇": "Broadway",
    "迪士尼": "Disney", "歌舞": "song and dance", "柔美": "soft and beautiful", "纯净": "pure",
    "清澈": "clear", "通透": "clear", "晶莹": "crystalline", "透明": "transparent", "温情": "tender",
    "坚定": "determined", "勇敢": "brave", "自由": "free", "洒脱": "carefree", "随性": "casual",
    "颓废": "decadent", "叛逆": "rebellious", "张扬": "flamboyant", "情感": "emotional", "层次": "layers",
    "层次感": "layered", "层次丰富": "richly layered", "起伏": "dynamic", "变化": "variation", "推进": "building",
    "层层递进": "building layer by layer", "递进": "building", "爆发": "explosive", "释放": "release",
    "收尾": "ending", "尾声": "coda", "结束": "end", "展开": "unfolding", "流畅": "flowing", "流动": "flowing",
    "简单": "simple", "朴素": "plain", "纯粹": "pure", "加速": "accelerating", "减速": "slowing down",
    "停顿": "pauses", "留白": "space", "戛然而止": "abrupt ending", "铺垫": "build-up", "对比": "contrast",
    "呼应": "call and response", "对话": "dialogue", "交替": "alternating", "萦绕": "lingering", "回荡": "echoing",
    "弥漫": "pervading", "洋溢": "brimming", "营造": "creating", "营造出": "creating", "表达": "expressing",
    "展现": "showing", "唱": "singing", "唱歌": "singing", "走": "walking", "跑": "running", "飞": "flying",
    "爱": "love", "笑": "laughing", "哭泣": "crying", "微笑": "smile", "拥抱": "embrace", "回家": "going home",
    "出发": "setting off", "旅程": "journey", "路上": "on the road", "路": "road", "流浪": "wandering",
    "漂泊": "drifting", "追梦": "chasing dreams", "梦想": "dreams", "过去": "past", "时光": "time",
    "岁月": "years", "时间": "time", "永远": "forever", "瞬间": "moment", "缓慢": "slow", "缓": "slow",
    "战": "battle", "打击": "percussion", "金属打击": "metallic percussion", "一些": "some", "很多": "many",
    "大量": "lots of", "少量": "a little", "几个": "a few", "整个": "whole", "各种": "various", "多种": "various",
    "不同": "different", "其他": "other", "最": "most", "更加": "more", "越来越": "increasingly",
    "逐步": "gradually", "也": "also", "还": "also", "只有": "only", "只": "only", "但": "but", "但是": "but",
    "却": "yet", "所以": "so", "比如": "such as", "例如": "such as", "参考": "reference", "模仿": "imitating",
    "致敬": "homage", "一起": "together", "好": "good", "爵士风情": "jazz flavour", "指弹": "fingerstyle",
    "弦乐组": "string section", "安第斯": "Andean", "犹太": "Jewish", "天使": "angel",
}

_DESCRIPTORS = {
    "感": "feel", "味": "flavour", "味道": "flavour", "色彩": "colour", "气息": "vibe", "情调": "mood",
    "情绪": "emotion", "感觉": "feel", "质感": "texture", "风味": "flavour", "风格": "style", "风": "style",
    "音乐": "music",
    "歌曲": "song", "歌": "song", "曲子": "piece", "乐曲": "piece", "曲": "piece", "钢琴曲": "piano piece",
    "作品": "piece", "旋律": "melody", "节奏": "rhythm", "声音": "sound", "声": "sound", "音": "sound",
    "低音线": "bassline", "背景": "background", "演唱": "singing", "歌声": "singing", "演奏": "performance",
    "弹奏": "playing", "演绎": "rendition", "很": "very", "非常": "very", "十分": "very", "有点": "a bit",
    "稍微": "slightly", "略": "slightly", "极其": "extremely", "超级": "super", "特别": "especially", "更": "more",
    "比较": "fairly", "充满": "full of", "富有": "full of", "带点": "with a touch of", "一点": "a little",
    "些许": "a touch of",
    "淡淡": "subtle", "浓浓": "strong", "浓郁": "rich", "强": "strong", "弱": "soft", "大": "big", "小": "small",
    "高": "high", "低": "low", "长": "long", "短": "short", "新": "new", "老": "old", "轻": "light", "重": "heavy",
    "深": "deep", "浅": "light", "暖": "warm", "冷": "cold", "亮": "bright", "暗": "dark", "柔": "soft",
    "纯": "pure", "多": "many", "少": "few", "约": "about", "大约": "about", "左右": "or so", "以上": "or more",
    "以下": "or less", "每分钟": "per minute", "分钟": "minutes", "秒": "seconds", "拍": "beats",
    "小节": "bars", "调": "key", "版": "version", "版本": "version", "系": "style", "式": "style",
    "风格化": "stylized", "主导": "driven", "为主": "mainly", "无人声": "no vocals", "没有人声": "no vocals",
}

# Function words: translated or dropped ("") in place; "and"-like words join phrases.
_FUNCTION_WORDS = {
    "的": "", "地": "", "得": "", "之": "", "了": "", "着": "", "吧": "", "啊": "", "呀": "", "哦": "",
    "和": "and", "与": "and", "跟": "and", "及": "and", "以及": "and", "还有": "and", "并且": "and",
    "而且": "and", "同时": "while", "或": "or", "或者": "or", "一首": "a", "一段": "a", "一个": "a", "一种": "a",
    "一支": "a", "一曲": "a", "首": "", "段": "", "支": "", "是": "", "有": "with", "没有": "no", "无": "no",
    "不要": "no", "不": "not", "要": "", "需要": "", "想要": "", "我想要": "", "我要": "", "我": "", "给": "",
    "给我": "", "请": "", "帮我": "", "生成": "", "创作": "", "制作": "", "写": "", "做": "", "来": "",
    "作为": "as", "像": "like", "类似": "similar to",
    "仿佛": "as if", "如同": "like", "一样": "", "那样": "", "般": "like", "系列": "series", "从": "from",
    "到": "to", "开始": "starting", "然后": "then", "接着": "then", "逐渐": "gradually", "渐渐": "gradually",
    "慢慢": "slowly", "突然": "suddenly", "最后": "finally", "整体": "overall", "全曲": "throughout",
    "贯穿": "throughout", "始终": "throughout", "主要": "mainly", "中间": "middle", "开头": "opening",
    "时": "", "时候": "", "的时候": "", "当": "", "正在": "", "让人": "", "令人": "", "感到": "feeling",
    "觉得": "", "听起来": "sounding", "听": "", "带来": "bringing", "你": "", "他": "", "她": "", "它": "",
    "我们": "", "他们": "", "们": "", "这": "this", "那": "that", "这首": "this", "这种": "this kind of",
    "那种": "that kind of", "这样": "such", "自己": "", "就": "", "才": "", "都": "", "又": "and", "再": "again",
    "并": "and", "而": "and", "配": "with", "则": "", "即": "", "所有": "all", "每": "every", "一边": "", "加": "with",
    "用来": "for", "一下": "", "可以": "", "能": "", "会": "", "应该": "",
    "最好": "", "尽量": "", "一定": "",
}

# Openers start a phrase that English puts after its head: "用X演奏的Y" -> "Y played on X".
# word -> (preposition, text when nothing follows, {closing word: preposition it gives})
_LOCATION_CLOSERS = {"里": "in", "中": "in", "之中": "in", "里面": "in", "当中": "in", "上": "over",
                     "之上": "over", "上面": "over", "下": "under", "之下": "under", "下面": "under",
                     "旁": "beside", "旁边": "beside", "边": "by"}
_PLAY_CLOSERS = {"演奏": "played on", "来演奏": "played on", "弹奏": "played on", "吹奏": "played on",
                 "拉奏": "played on", "演绎": "performed on", "弹": "played on", "拉": "played on", "吹": "played on",
                 "奏": "played on"}
_OPENERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "用": ("with", "with", _PLAY_CLOSERS), "使用": ("using", "using", _PLAY_CLOSERS),
    "由": ("by", "by", _PLAY_CLOSERS), "在": ("in", "in", _LOCATION_CLOSERS),
    "以": ("with", "with", {"为主": "led by", "为主导": "led by", "为核心": "centred on", "为主题": "themed on"}),
    "带有": ("with", "with", {}), "带着": ("with", "with", {}), "带": ("with", "with", {}),
    "配上": ("with", "with", {}), "配以": ("with", "with", {}), "配合": ("with", "with", {}),
    "搭配": ("with", "with", {}), "加上": ("with", "with", {}), "加入": ("with", "with", {}),
    "伴有": ("with", "with", {}), "伴随": ("accompanied by", "accompanied by", {}),
    "伴随着": ("accompanied by", "accompanied by", {}), "伴着": ("accompanied by", "accompanied by", {}),
    "融合": ("fused with", "fusion", {}), "融入": ("blending in", "blend", {}),
    "结合": ("combined with", "combination", {}), "混合": ("mixed with", "mix", {}),
    "夹杂": ("mixed with", "mix", {}), "穿插": ("interspersed with", "interspersed", {}),
    "点缀": ("accented with", "accents", {}), "点缀着": ("accented with", "accents", {}),
    "适合": ("for", "for", {}), "用于": ("for", "for", {}), "适用于": ("for", "for", {}),
    "关于": ("about", "about", {}), "讲述": ("about", "about", {}), "描写": ("depicting", "depicting", {}),
    "描绘": ("depicting", "depicting", {}),
}
# Outside an opener's phrase a location word turns the words before it into a phrase: "雨夜中" -> "in rainy night".
_POSTPOSITIONS = _LOCATION_CLOSERS
# Before 的, a playing verb does the same to the players before it: "古筝和鼓演奏的旋律" -> "melody played on guzheng
# and drums", "贝斯伴奏的钢琴" -> "piano accompanied by bass".
_VERB_POSTMODIFIERS = {**_PLAY_CLOSERS, "伴奏": "accompanied by", "演唱": "sung by"}

LEXICON: dict[str, str] = {**_GENRES, **_INSTRUMENTS, **_MOODS, **_TEMPO_AND_FORM, **_SCENES, **_GENERAL,
                           **_DESCRIPTORS}
"""Chinese music vocabulary -> English (content words; function words and phrase markers are handled apart)."""

REVERSE_LEXICON: dict[str, str] = {}
"""English (lower case) -> Chinese: the first word of :data:`LEXICON` that gives each English term."""
for _zh, _en in LEXICON.items():
    REVERSE_LEXICON.setdefault(_en.lower(), _zh)

_VOCABULARY: set[str] = (set(LEXICON) | set(_FUNCTION_WORDS) | set(_OPENERS) | set(_POSTPOSITIONS)
                         | set(_PLAY_CLOSERS) | {c for _, _, cl in _OPENERS.values() for c in cl})
_MAX_WORD = max(len(w) for w in _VOCABULARY)

# --- numbers and structured patterns -----------------------------------------------------------------------------

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_NUM = r"(?:\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]+)"
_RANGE = rf"(?P<a>{_NUM})(?:\s*(?:-|~|～|到|至)\s*(?P<b>{_NUM}))?"


def chinese_number(text: str) -> int | float:
    """'120', '一百二十', '一百二' (colloquial 120), '一二〇' (digit by digit), '十五' -> the number."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text) if "." in text else int(text)
    if all(c in _CN_DIGITS for c in text):
        return int("".join(str(_CN_DIGITS[c]) for c in text))
    total, digit, last_unit = 0, 0, 0
    for c in text:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        else:
            last_unit = _CN_UNITS[c]
            total += (digit or 1) * last_unit
            digit = 0
    if digit and last_unit >= 100 and text[-2] in _CN_UNITS:  # 一百二 = 120: a bare digit after 百 counts tens
        digit *= last_unit // 10
    return total + digit


def _span(m: re.Match) -> str:
    a = chinese_number(m.group("a"))
    return f"{a}-{chinese_number(m.group('b'))}" if m.group("b") else f"{a}"


def _plural(m: re.Match, unit: str) -> str:
    n = _span(m)
    return f"{n} {unit}" if n == "1" else f"{n} {unit}s"


def _beats(m: re.Match) -> str:
    n = chinese_number(m.group("a"))
    return f"{_span(m)} BPM" if n >= 30 else _plural(m, "beat")


def _key(m: re.Match) -> str:
    before, letter, after, kind = m.group("pre"), m.group("letter").upper(), m.group("acc"), m.group("kind")
    accidental = {"升": "#", "#": "#", "♯": "#", "降": "b", "b": "b", "♭": "b", None: ""}
    note = letter + accidental[before] + accidental[after]
    return {"大调": f"{note} major", "小调": f"{note} minor", "调式": f"{note} mode"}.get(kind, f"key of {note}")


_BPM = r"(?:拍|下|次|beats?|BPM|bpm)"
_PATTERNS: list[tuple[re.Pattern, object]] = [
    # tempo
    (re.compile(rf"每分钟\s*{_RANGE}\s*{_BPM}?", re.I), lambda m: f"{_span(m)} BPM"),
    (re.compile(rf"{_RANGE}\s*(?:拍|下)\s*(?:每分钟|每分|/\s*分钟|/\s*分)", re.I), lambda m: f"{_span(m)} BPM"),
    (re.compile(rf"(?:速度|节拍|节奏|tempo)\s*(?:为|是|在|:|=)?\s*(?:大约|约)?\s*{_RANGE}\s*{_BPM}?", re.I),
     lambda m: f"{_span(m)} BPM"),
    (re.compile(rf"(?<![A-Za-z])bpm\s*(?:为|是|:|=)?\s*{_RANGE}", re.I), lambda m: f"{_span(m)} BPM"),
    (re.compile(rf"{_RANGE}\s*bpm(?![A-Za-z])", re.I), lambda m: f"{_span(m)} BPM"),
    (re.compile(r"(?P<n>\d+)\s*/\s*(?P<d>\d+)\s*拍子?"), lambda m: f"{m.group('n')}/{m.group('d')} time"),
    (re.compile(r"(?P<n>[一二两三四五六七八九]|十[一二]?)(?P<d>[二四八]|十六)拍子?"),  # 四四拍, 六八拍: time signatures
     lambda m: f"{chinese_number(m.group('n'))}/{chinese_number(m.group('d'))} time"),
    (re.compile(rf"{_RANGE}\s*拍(?!子)"), _beats),
    # durations, bars, decades, bit depth
    (re.compile(rf"(?P<a>{_NUM})\s*分(?:钟)?\s*(?P<s>{_NUM})\s*秒(?:钟)?"),
     lambda m: f"{chinese_number(m.group('a'))} minutes {chinese_number(m.group('s'))} seconds"),
    (re.compile(rf"{_RANGE}\s*秒(?:钟)?"), lambda m: _plural(m, "second")),
    (re.compile(rf"{_RANGE}\s*分钟"), lambda m: _plural(m, "minute")),
    (re.compile(rf"{_RANGE}\s*个?小节"), lambda m: _plural(m, "bar")),
    (re.compile(rf"(?P<a>{_NUM})\s*年代"), lambda m: f"{chinese_number(m.group('a'))}s"),
    (re.compile(r"(?P<a>8|16|32|八|十六)\s*(?:位|比特|bit)"), lambda m: f"{chinese_number(m.group('a'))}-bit"),
    # keys: C大调, a小调, 升F小调, 降B大调, Bb大调, F#小调, D调
    (re.compile(r"(?<![A-Za-z])(?P<pre>[升降])?\s*(?P<letter>[A-Ga-g])\s*(?P<acc>[#♯b♭])?\s*(?P<kind>大调|小调|调式|调)"),
     _key),
]

# --- scanning ----------------------------------------------------------------------------------------------------


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def needs_normalization(text: str) -> bool:
    """True when ``text`` holds CJK characters (ideographs, CJK punctuation, kana, hangul, full-width forms)."""
    for ch in text:
        o = ord(ch)
        if (_is_cjk(ch) or 0x3000 <= o <= 0x30FF or 0xAC00 <= o <= 0xD7AF or 0xFF00 <= o <= 0xFFEF
                or 0x3100 <= o <= 0x31FF):
            return True
    return False


_CLAUSE_BREAKS = {",", ";", ":", "!", "?", "。", "；", "：", "！", "？", "\n"}
_LIST_BREAKS = {"、"}
_SILENT = set("“”‘’《》「」『』【】（）〈〉·・～…—")


@dataclass
class _Token:
    kind: str  # "word" (English text), "zh" (a vocabulary word, role decided when parsing), "break", "list"
    text: str


def _pattern_at(text: str, i: int) -> tuple[re.Match | None, object]:
    """The first structured pattern matching at ``i`` (never from the middle of a number)."""
    if i > 0 and text[i].isdigit() and text[i - 1].isdigit():
        return None, None
    for pattern, render in _PATTERNS:
        m = pattern.match(text, i)
        if m:
            return m, render
    return None, None


def _segment(run: str, dictionary: ZhDictionary | None = None) -> list[_Token]:
    """Split a run of CJK into vocabulary words, fewest unknown characters first, then fewest dictionary words,
    then fewest words, then fewest one-character content words, then the longest first word: "钢琴和弦乐" ->
    钢琴|和|弦乐 ("piano and strings"), not 钢琴|和弦|乐; "吉他和风笛" -> 吉他|和|风笛 ("guitar and bagpipes"), not
    吉他|和风|笛 ("Japanese style flute"). With a ``dictionary`` its words (two characters or more) may cover what
    the lexicon cannot, and only that: 恐龙 -> "dinosaur", not 恐 (unknown) + 龙 "dragon"."""
    n = len(run)
    # from position k: (unknown characters, dictionary words, words, one-character content words, length taken)
    best: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)] * (n + 1)
    longest = max(_MAX_WORD, zh_dictionary.MAX_WORD if dictionary is not None else 0)
    for k in range(n - 1, -1, -1):
        choice: tuple[int, int, int, int, int] | None = None
        for length in range(min(longest, n - k), 0, -1):
            word = run[k:k + length]
            after = best[k + length]
            if word in _VOCABULARY:
                cost = (after[0], after[1], after[2] + 1, after[3] + (length == 1 and word in LEXICON), length)
            elif dictionary is not None and length >= 2 and dictionary.gloss(word):
                cost = (after[0], after[1] + 1, after[2] + 1, after[3], length)
            else:
                continue
            if choice is None or cost[:4] < choice[:4]:
                choice = cost
        after = best[k + 1]
        unknown = (after[0] + 1, after[1], after[2] + 1, after[3], 1)  # k as an unknown character: on a tie, a
        best[k] = unknown if choice is None or unknown[:4] < choice[:4] else choice  # word wins (菊花|台, not 菊|花台)
    tokens: list[_Token] = []
    k = 0
    while k < n:
        length = best[k][4]
        word = run[k:k + length]
        if word in _VOCABULARY:
            tokens.append(_Token("zh", word))
        elif length >= 2:  # a dictionary word
            tokens.append(_Token("word", dictionary.gloss(word)))
        elif tokens and tokens[-1].kind == "unknown":
            tokens[-1].text += word
        else:
            tokens.append(_Token("unknown", word))
        k += length
    return tokens


def _scan(text: str, dictionary: ZhDictionary | None = None) -> tuple[list[_Token], list[str]]:
    tokens: list[_Token] = []
    ascii_buf: list[str] = []
    i, n = 0, len(text)

    def flush_ascii() -> None:
        if ascii_buf:
            for piece in re.split(r"(\s+|[,;!?:](?=\s|$)|\.(?=\s|$))", "".join(ascii_buf)):
                if not piece or piece.isspace():
                    continue
                tokens.append(_Token("break", piece) if piece in _CLAUSE_BREAKS or piece == "." else
                              _Token("word", piece))
            ascii_buf.clear()

    while i < n:
        m, render = _pattern_at(text, i)
        if m:
            flush_ascii()
            tokens.append(_Token("word", render(m)))
            i = m.end()
        else:
            ch = text[i]
            if ch in _CLAUSE_BREAKS:
                flush_ascii()
                tokens.append(_Token("break", ch))
                i += 1
            elif ch in _LIST_BREAKS:
                flush_ascii()
                tokens.append(_Token("list", ","))
                i += 1
            elif ord(ch) < 128 and ch not in "\"'()[]<>":
                ascii_buf.append(ch)
                i += 1
            elif _is_cjk(ch):
                flush_ascii()
                end = i + 1  # the run of CJK up to where a pattern starts
                while end < n and _is_cjk(text[end]) and _pattern_at(text, end)[0] is None:
                    end += 1
                tokens.extend(_segment(text[i:end], dictionary))
                i = end
            else:  # quotes, brackets, symbols, emoji, kana: separators at most
                if ch not in _SILENT and not ch.isspace() and needs_normalization(ch):
                    if tokens and tokens[-1].kind == "unknown":
                        tokens[-1].text += ch
                    else:
                        tokens.append(_Token("unknown", ch))
                ascii_buf.append(" ")
                i += 1
    flush_ascii()
    unknown = [t.text for t in tokens if t.kind == "unknown"]
    return [t for t in tokens if t.kind != "unknown"], unknown


# --- phrases -----------------------------------------------------------------------------------------------------

@dataclass
class _Unit:
    kind: str  # "np" (words), "pp" (preposition + words), "de" (的), "join" (and/or/list comma)
    words: list[str] = field(default_factory=list)


def _content(token: _Token) -> str:
    if token.kind == "word":
        return token.text
    return LEXICON.get(token.text, _FUNCTION_WORDS.get(token.text, ""))


def _parse_clause(tokens: list[_Token]) -> list[_Unit]:
    units: list[_Unit] = []

    def words_unit() -> _Unit:
        if not units or units[-1].kind != "np":
            units.append(_Unit("np"))
        return units[-1]

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        zh = tok.text if tok.kind == "zh" else None
        if tok.kind == "list":
            units.append(_Unit("join", [","]))
        elif zh == "的":
            units.append(_Unit("de"))
        elif zh in ("和", "与", "跟", "及", "以及", "还有", "或", "或者"):
            units.append(_Unit("join", [_FUNCTION_WORDS[zh]]))
        elif zh in _OPENERS:
            prep, alone, closers = _OPENERS[zh]
            j, inner = i + 1, []
            # a phrase without a closing word runs to the clause's last 的 ("带有欢快的鼓点的流行" -> "pop with
            # upbeat drum beat"), else to the next opener or the clause's end
            last_de = max((k for k in range(i + 1, len(tokens)) if tokens[k].text == "的"), default=None)
            while j < len(tokens):
                t = tokens[j]
                if closers and t.kind == "zh" and (t.text in closers or t.text == "的" or t.text in _OPENERS):
                    break
                if not closers and (j == last_de or (last_de is None and t.kind == "zh" and t.text in _OPENERS)):
                    break
                inner.append(t)
                j += 1
            if j < len(tokens) and tokens[j].text in closers:
                prep = closers[tokens[j].text]
                j += 1
            words = [w for w in (_content(t) if t.kind != "list" else "," for t in inner) if w]
            units.append(_Unit("pp", [prep, *words]) if words else _Unit("np", [alone]))
            i = j
            continue
        elif (zh in _POSTPOSITIONS and units and units[-1].kind == "np" and units[-1].words
              and (i + 1 == len(tokens) or tokens[i + 1].text == "的")):  # "雨夜里的" / "...雨中": a phrase
            units[-1] = _Unit("pp", [_POSTPOSITIONS[zh], *units[-1].words])
        elif (zh in _VERB_POSTMODIFIERS and units and units[-1].kind == "np" and units[-1].words
              and i + 1 < len(tokens) and tokens[i + 1].text == "的"):
            k = len(units) - 1  # the players: a list of them ("古筝、二胡和鼓") goes along
            while k >= 2 and units[k - 1].kind == "join" and units[k - 2].kind == "np":
                k -= 2
            units[k:] = [_Unit("pp", [_VERB_POSTMODIFIERS[zh], *(w for u in units[k:] for w in u.words)])]
        else:
            word = _content(tok)
            if word:
                words_unit().words.append(word)
        i += 1
    return units


def _render_clause(units: list[_Unit]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(units):
        unit = units[i]
        # "pp 的 np" -> "np pp": the phrase follows its head in English; the head is the last of a chain of
        # "np 的 np" ("钢琴演奏的欢快的民谣" -> "upbeat folk played on piano")
        if unit.kind == "pp" and i + 2 < len(units) and units[i + 1].kind == "de" and units[i + 2].kind == "np":
            j = i + 2
            while j + 2 < len(units) and units[j + 1].kind == "de" and units[j + 2].kind == "np":
                j += 2
            out += [w for u in units[i + 2:j + 1] for w in u.words] + unit.words
            i = j + 1
            continue
        if unit.kind != "de":
            out += unit.words
        i += 1
    return out


def _tidy(words: list[str]) -> str:
    kept: list[str] = []
    for w in words:
        if kept and (kept[-1] == w or kept[-1].endswith(" " + w) or (w in ("style", "music") and kept[-1].endswith(w))):
            continue  # "Chinese style" + 风格, "electronic music" + 音乐, "sawtooth synth lead" + 主音
        if w == "," and (not kept or kept[-1] == ","):
            continue
        kept.append(w)
    for k in range(len(kept) - 1):  # article before a vowel sound
        following = kept[k + 1].lower()
        if kept[k] == "a" and (following[:1] in "aeio" or (following[:1] == "u" and not following.startswith(
                ("uk", "uni", "use", "usu")))):
            kept[k] = "an"
    while kept and kept[-1] in (",", "and", "or", "with"):  # a dangling joint, its other side dropped
        kept.pop()
    while kept and kept[0] in (",", "and", "or"):
        kept.pop(0)
    return " ".join(kept).replace(" ,", ",")


@dataclass
class NormalizedPrompt:
    """A prompt as the encoder gets it: ``text_used``; ``changed`` when it differs from the input; ``unknown``
    lists the runs of CJK characters that were dropped because no rule covers them."""

    text_used: str
    changed: bool
    unknown: list[str] = field(default_factory=list)


def normalize_prompt(text: str, dictionary: bool = True) -> NormalizedPrompt:
    """Rewrite the Chinese music vocabulary of ``text`` in English; text without CJK is returned unchanged.

    Where the lexicon leaves characters unknown and ``dictionary`` is on, CC-CEDICT (:mod:`zh_dictionary`) converts
    traditional script to simplified and supplies the missing words. Text the lexicon covers whole is translated
    the same either way.

    A prompt none of whose words is covered comes back as ``""`` with everything in ``unknown``: callers should
    warn rather than pass "" on, which the text conditioners take as the null (unconditional) prompt.
    """
    if not needs_normalization(text):
        return NormalizedPrompt(text, False, [])
    text_nfkc = unicodedata.normalize("NFKC", text)
    tokens, unknown = _scan(text_nfkc)
    if unknown and dictionary:
        cedict = zh_dictionary.load()
        if cedict is not None:
            tokens, unknown = _scan(cedict.simplify(text_nfkc), cedict)
    clauses: list[str] = []
    current: list[_Token] = []
    breaks: list[str] = []
    for tok in [*tokens, _Token("break", "")]:
        if tok.kind != "break":
            current.append(tok)
            continue
        rendered = _tidy(_render_clause(_parse_clause(current)))
        if rendered:
            clauses.append(rendered)
            breaks.append(". " if tok.text in ("。", "!", "?", ".") else ", ")
        current = []
    out = "".join(c + b for c, b in zip(clauses, breaks[:-1])) + (clauses[-1] if clauses else "")
    return NormalizedPrompt(out, out != text, unknown)


__all__ = ["LEXICON", "REVERSE_LEXICON", "NormalizedPrompt", "chinese_number", "needs_normalization",
           "normalize_prompt"]
