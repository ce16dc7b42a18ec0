"""Specification of the codec (yuefu.codec) and its checkpoint adapters (yuefu.checkpoints.codec_keys).

The reference is transformers' own ``EncodecModel``: small random models of the 32 kHz MusicGen layout (ratios
[8, 5, 4, 4], 4 codebooks x 2048) are loaded into ``CompressionModel`` through the adapters, and must give the same
codes and the same audio on the same waveforms. audiocraft is not installed, so its key names are pinned to the
names its source defines.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import yaml

from yuefu.checkpoints.codec_keys import (
    codec_config_from_audiocraft,
    codec_config_from_transformers,
    codec_config_to_audiocraft,
    codec_config_to_transformers,
    codec_state_from_audiocraft,
    codec_state_from_transformers,
    codec_state_to_audiocraft,
    codec_state_to_transformers,
)
from yuefu.codec import CompressionModel, EuclideanCodebook
from yuefu.config import CodecConfig

transformers = pytest.importorskip("transformers")

HOP = 640
SETTINGS = {
    # what audiocraft's MusicGen codec uses (musicgen-facts.md, "Where audiocraft and transformers differ")
    "audiocraft-like": dict(use_causal_conv=False, pad_mode="constant", use_conv_shortcut=False),
    # EncodecConfig defaults: causal, reflect padding, 1x1 conv on the residual shortcut
    "transformers-defaults": dict(),
    # the remaining switches: causal trimming split, input renormalization, two dilated residual units, compress 4
    "causal-trim-renormalize": dict(trim_right_ratio=0.5, normalize=True, num_residual_layers=2, compress=4,
                                    pad_mode="constant", use_conv_shortcut=False),
}
LENGTHS = [32000, 32000 + 123]  # one second, and a length that is not a multiple of the hop


@functools.cache
def _reference(setting: str) -> transformers.EncodecModel:
    """A tiny transformers EnCodec of the 32 kHz layout (2.2 kbps = 4 codebooks, 1.1 = 2); shared, read only."""
    cfg = transformers.EncodecConfig(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
                                     num_filters=8, hidden_size=32, num_lstm_layers=2, target_bandwidths=[1.1, 2.2],
                                     **SETTINGS[setting])
    torch.manual_seed(0)
    model = transformers.EncodecModel(cfg).eval()
    # transformers initialises codebooks to zeros; draw them at the scale of the latent so that codes vary
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        scale = model.encoder(torch.randn(1, 1, 32000, generator=gen)).std()
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(2048, 32, generator=gen) * scale)
    return model


@pytest.fixture(scope="module", params=list(SETTINGS))
def pair(request) -> tuple[transformers.EncodecModel, CompressionModel]:
    ref = _reference(request.param)
    ours = CompressionModel(codec_config_from_transformers(ref.config.to_dict())).eval()
    ours.load_state_dict(codec_state_from_transformers(ref.state_dict()))
    return ref, ours


def _wav(length: int) -> torch.Tensor:
    return torch.randn(2, 1, length, generator=torch.Generator().manual_seed(length))


def _assert_same_coding(ref, ours: CompressionModel, length: int) -> None:
    wav = _wav(length)
    with torch.no_grad():
        expected = ref.encode(wav, bandwidth=2.2)  # no chunking (chunk_length_s None): one frame of codes
        codes, scale = ours.encode_with_scale(wav)
        assert torch.equal(codes, expected.audio_codes[0])
        assert codes.unique().numel() > 20  # not a degenerate codebook
        ref_audio = ref.decode(expected.audio_codes, expected.audio_scales).audio_values
        audio = ours.decode(codes, scale)
    assert audio.shape == ref_audio.shape == (2, 1, math.ceil(length / HOP) * HOP)
    torch.testing.assert_close(audio, ref_audio, atol=1e-4, rtol=0)


# -- behaviour against transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize("length", LENGTHS)
def test_codes_and_audio_match_transformers(pair, length):
    ref, ours = pair
    _assert_same_coding(ref, ours, length)


def test_folded_weight_norm_codes_and_audio_match_transformers(pair):
    ref, ours = pair
    folded = CompressionModel(ours.config).eval().remove_weight_norm()
    folded.load_state_dict(codec_state_from_transformers(ref.state_dict()))  # weight-norm pairs into plain weights
    assert not any("parametrizations" in k for k in folded.state_dict())
    _assert_same_coding(ref, folded, LENGTHS[1])


def test_first_codebooks_match_transformers_lower_bandwidth(pair):
    ref, ours = pair
    wav = _wav(LENGTHS[1])
    with torch.no_grad():
        expected = ref.encode(wav, bandwidth=1.1)
        ours.n_q = 2
        try:
            codes, scale = ours.encode_with_scale(wav)
        finally:
            ours.n_q = 4
        assert codes.shape == (2, 2, math.ceil(LENGTHS[1] / HOP))
        assert torch.equal(codes, expected.audio_codes[0])
        ref_audio = ref.decode(expected.audio_codes, expected.audio_scales).audio_values
        torch.testing.assert_close(ours.decode(codes, scale), ref_audio, atol=1e-4, rtol=0)


def test_decode_latent_is_sum_of_codewords(pair):
    ref, ours = pair
    codes = torch.randint(0, 2048, (2, 4, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.quantizer.decode(codes.transpose(0, 1))  # transformers takes [K, B, T], gives [B, D, T]
    torch.testing.assert_close(ours.decode_latent(codes), expected, atol=0, rtol=0)
    torch.testing.assert_close(ours.decode_latent(codes[:, :1]), ref.quantizer.layers[0].decode(codes[:, 0]))


def test_model_description():
    ref = _reference("audiocraft-like")
    ours = CompressionModel(codec_config_from_transformers(ref.config.to_dict()))
    assert (ours.sample_rate, ours.channels, ours.hop_length, ours.frame_rate) == (32000, 1, 640, 50.0)
    assert (ours.cardinality, ours.n_q, ours.total_codebooks) == (2048, 4, 4)
    with pytest.raises(ValueError):
        ours.n_q = 5


# -- transformers format -----------------------------------------------------------------------------------------
def test_transformers_state_roundtrip_loads_strictly_and_codes_agree(pair):
    ref, ours = pair
    rebuilt = transformers.EncodecModel(transformers.EncodecConfig(**codec_config_to_transformers(ours.config)))
    rebuilt.load_state_dict(codec_state_to_transformers(ours.state_dict()), strict=True)
    folded = CompressionModel(ours.config).eval()
    folded.load_state_dict(ours.state_dict())
    folded.remove_weight_norm()
    assert codec_state_to_transformers(folded.state_dict()).keys() == ref.state_dict().keys()
    rebuilt.eval()
    wav = _wav(LENGTHS[0])
    with torch.no_grad():
        assert torch.equal(rebuilt.encode(wav).audio_codes, ref.encode(wav, bandwidth=2.2).audio_codes)


def test_old_weight_norm_spelling_loads():
    ref = _reference("transformers-defaults")
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                           "weight_v"): v
           for k, v in ref.state_dict().items()}
    assert any(k.endswith("weight_g") for k in old)
    ours = CompressionModel(codec_config_from_transformers(ref.config.to_dict())).eval()
    ours.load_state_dict(codec_state_from_transformers(old))
    _assert_same_coding(ref, ours, LENGTHS[1])


def test_encodec_32khz_config_is_musicgen_codec():
    """facebook/encodec_32khz's config (transformers) describes the codec of musicgen-facts.md (= our defaults)."""
    hub = dict(sampling_rate=32000, audio_channels=1, num_filters=64, hidden_size=128, upsampling_ratios=[8, 5, 4, 4],
               target_bandwidths=[2.2], codebook_size=2048, use_causal_conv=False, pad_mode="constant",
               use_conv_shortcut=False, normalize=False, num_lstm_layers=2, compress=2, trim_right_ratio=1.0)
    assert codec_config_from_transformers(transformers.EncodecConfig(**hub).to_dict()) == CodecConfig()
    assert codec_config_from_transformers(hub) == CodecConfig()  # a bare config.json without defaults filled in


@pytest.mark.parametrize("n_q", [1, 2, 3, 4, 7, 8, 32])
@pytest.mark.parametrize("bins,sample_rate,ratios", [(2048, 32000, [8, 5, 4, 4]), (1024, 24000, [8, 5, 4, 2]),
                                                     (1024, 48000, [8, 5, 4, 2])])
def test_transformers_config_roundtrip(n_q, bins, sample_rate, ratios):
    cfg = CodecConfig(n_q=n_q, bins=bins, sample_rate=sample_rate, ratios=ratios, causal=True, pad_mode="reflect",
                      true_skip=False, renormalize=True, trim_right_ratio=0.5, n_filters=32, dimension=64)
    tf_cfg = transformers.EncodecConfig(**codec_config_to_transformers(cfg))
    assert tf_cfg.num_quantizers == n_q
    assert codec_config_from_transformers(tf_cfg.to_dict()) == cfg


# -- audiocraft format -------------------------------------------------------------------------------------------
# Key names as audiocraft defines them: SEANetEncoder/Decoder.model is an nn.Sequential and SEANetResnetBlock has
# .block (Sequential: act, conv, act, conv) and .shortcut (audiocraft/modules/seanet.py); StreamableConv1d.conv is
# a NormConv1d whose .conv is torch.nn.utils.weight_norm(nn.Conv1d) -> weight_g / weight_v, and
# StreamableConvTranspose1d.convtr a NormConvTranspose1d with .convtr (audiocraft/modules/conv.py);
# StreamableLSTM.lstm is an nn.LSTM (audiocraft/modules/lstm.py); ResidualVectorQuantizer.vq ->
# ResidualVectorQuantization.layers[k] -> VectorQuantization._codebook -> EuclideanCodebook buffers inited,
# cluster_size, embed, embed_avg (audiocraft/quantization/vq.py, core_vq.py).
AUDIOCRAFT_KEYS = [
    "encoder.model.0.conv.conv.weight_g",
    "encoder.model.0.conv.conv.weight_v",
    "encoder.model.0.conv.conv.bias",
    "encoder.model.1.block.1.conv.conv.weight_g",
    "encoder.model.1.block.3.conv.conv.bias",
    "encoder.model.1.shortcut.conv.conv.weight_v",
    "encoder.model.3.conv.conv.weight_g",
    "encoder.model.13.lstm.weight_ih_l0",
    "encoder.model.13.lstm.bias_hh_l1",
    "encoder.model.15.conv.conv.weight_g",
    "decoder.model.0.conv.conv.weight_v",
    "decoder.model.1.lstm.weight_hh_l1",
    "decoder.model.3.convtr.convtr.weight_g",
    "decoder.model.3.convtr.convtr.bias",
    "decoder.model.4.block.1.conv.conv.weight_v",
    "decoder.model.12.convtr.convtr.weight_v",
    "decoder.model.15.conv.conv.weight_g",
    "quantizer.vq.layers.0._codebook.inited",
    "quantizer.vq.layers.0._codebook.cluster_size",
    "quantizer.vq.layers.0._codebook.embed",
    "quantizer.vq.layers.3._codebook.embed_avg",
]


def test_audiocraft_key_names_and_roundtrip():
    ref = _reference("transformers-defaults")  # has the conv shortcut, so every kind of key appears
    ours = CompressionModel(codec_config_from_transformers(ref.config.to_dict())).eval()
    ours.load_state_dict(codec_state_from_transformers(ref.state_dict()))
    ac = codec_state_to_audiocraft(ours.state_dict())
    assert set(AUDIOCRAFT_KEYS) <= set(ac)
    assert len(ac) == len(ref.state_dict())
    assert not any("parametrizations" in k for k in ac)
    back = CompressionModel(ours.config).eval()
    back.load_state_dict(codec_state_from_audiocraft(ac))
    _assert_same_coding(ref, back, LENGTHS[1])
    # a folded model writes the same weight-norm pairs (up to float rounding of the norm)
    ours.remove_weight_norm()
    ac_folded = codec_state_to_audiocraft(ours.state_dict())
    assert ac_folded.keys() == ac.keys()
    torch.testing.assert_close(ac_folded, ac)
    # newer torch spells audiocraft's weight norm as a parametrization; that loads too, into a folded model
    new = {k.replace("weight_g", "parametrizations.weight.original0").replace("weight_v",
                                                                              "parametrizations.weight.original1"): v
           for k, v in ac.items()}
    folded = CompressionModel(ours.config).eval().remove_weight_norm()
    folded.load_state_dict(codec_state_from_audiocraft(new))
    _assert_same_coding(ref, folded, LENGTHS[0])


# The codec sections of /work/shared/reference/audiocraft-xp-cfg-compression.yaml, an xp.cfg as audiocraft writes it
# (tiny codec: dimension 32, 8 filters).
AUDIOCRAFT_XP_CFG = """
sample_rate: 32000
channels: 1
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${sample_rate}
  channels: ${channels}
  causal: false
  renormalize: false
seanet:
  dimension: 32
  channels: ${channels}
  causal: ${encodec.causal}
  n_filters: 8
  n_residual_layers: 1
  ratios:
  - 8
  - 5
  - 4
  - 4
  activation: ELU
  activation_params:
    alpha: 1.0
  norm: weight_norm
  norm_params: {}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: constant
  true_skip: true
  compress: 2
  lstm: 2
  disable_norm_outer_blocks: 0
  decoder:
    trim_right_ratio: 1.0
    final_activation: null
    final_activation_params: null
  encoder: {}
rvq:
  n_q: 4
  q_dropout: false
  bins: 2048
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
  orthogonal_reg_weight: 0.0
  orthogonal_reg_active_codes_only: false
"""


def test_audiocraft_config_roundtrip():
    xp = yaml.safe_load(AUDIOCRAFT_XP_CFG)  # references (${...}) unresolved, as plain YAML reads them
    cfg = codec_config_from_audiocraft(xp)
    assert cfg == CodecConfig(dimension=32, n_filters=8)  # the MusicGen codec, smaller
    written = codec_config_to_audiocraft(cfg)
    assert yaml.safe_load(yaml.safe_dump(written, sort_keys=False)) == xp
    assert codec_config_from_audiocraft(written) == cfg


def test_audiocraft_config_decoder_override_and_unsupported():
    xp = yaml.safe_load(AUDIOCRAFT_XP_CFG)
    xp["encodec"]["causal"] = True
    xp["seanet"]["decoder"]["trim_right_ratio"] = 0.5
    cfg = codec_config_from_audiocraft(xp)
    assert cfg.causal and cfg.trim_right_ratio == 0.5
    xp["seanet"]["encoder"] = {"n_filters": 16}
    with pytest.raises(ValueError, match="n_filters"):
        codec_config_from_audiocraft(xp)


# -- strict loading ----------------------------------------------------------------------------------------------
def test_unknown_foreign_keys_raise_naming_them():
    ref = _reference("audiocraft-like")
    sd = dict(ref.state_dict())
    sd["encoder.layers.0.conv.mystery"] = torch.zeros(1)
    with pytest.raises(ValueError, match="encoder.layers.0.conv.mystery"):
        codec_state_from_transformers(sd)
    prefixed = {f"audio_encoder.{k}": v for k, v in ref.state_dict().items()}
    with pytest.raises(ValueError, match="audio_encoder."):
        codec_state_from_transformers(prefixed)
    with pytest.raises(ValueError, match="encoder.layers.0"):  # transformers names are not audiocraft names
        codec_state_from_audiocraft(ref.state_dict())


def test_missing_extra_or_misshaped_weights_raise_naming_them():
    ref = _reference("audiocraft-like")
    ours = CompressionModel(codec_config_from_transformers(ref.config.to_dict()))
    good = codec_state_from_transformers(ref.state_dict())
    missing = {k: v for k, v in good.items() if k != "quantizer.codebooks.3.embed"}
    with pytest.raises(ValueError, match=r"missing.*quantizer\.codebooks\.3\.embed"):
        ours.load_state_dict(missing)
    extra = {**good, "quantizer.codebooks.4.embed": torch.zeros(2048, 32)}  # a 5th codebook (a known key pattern)
    with pytest.raises(ValueError, match=r"unexpected.*quantizer\.codebooks\.4\.embed"):
        ours.load_state_dict(extra)
    half = {k: v for k, v in good.items() if not k.endswith("encoder.layers.0.conv.parametrizations.weight.original1")}
    with pytest.raises(ValueError, match="encoder.layers.0.conv.parametrizations.weight.original1"):
        ours.load_state_dict(half)
    shaped = {**good, "quantizer.codebooks.0.embed": torch.zeros(1024, 32)}
    with pytest.raises(ValueError, match="wrong shape"):
        ours.load_state_dict(shaped)


# -- quantizer training state ------------------------------------------------------------------------------------
def test_codebook_training_kmeans_puts_codewords_on_the_clusters():
    centers = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [-5.0, -5.0, -5.0]])
    gen = torch.Generator().manual_seed(0)
    x = centers[torch.randint(0, 4, (400,), generator=gen)] + 0.01 * torch.randn(400, 3, generator=gen)
    torch.manual_seed(0)
    codebook = EuclideanCodebook(3, 16, kmeans_iters=10).train()
    assert not codebook.inited.item()
    for _ in range(3):  # k-means on the first batch, EMA updates (and dead-code restarts) after each
        quantized, codes = codebook(x)
    assert codebook.inited.item() and codebook.cluster_size.sum().item() == pytest.approx(400)
    torch.testing.assert_close(quantized, codebook.embed[codes])
    assert (quantized - x).norm(dim=1).max() < 0.1  # quantization error at the noise level
    assert torch.cdist(centers, codebook.embed).min(dim=1).values.max() < 0.05  # every cluster has a codeword


def test_codebook_training_replaces_dead_codes_with_batch_vectors():
    torch.manual_seed(0)
    codebook = EuclideanCodebook(3, 8, kmeans_init=False, threshold_ema_dead_code=2).train()
    codebook.embed.fill_(100.0)  # every codeword far away, with no recent use: all dead
    codebook.embed_avg.zero_()
    codebook.cluster_size.zero_()
    x = torch.randn(64, 3)
    _, codes = codebook(x)
    unused = torch.ones(8, dtype=torch.bool)
    unused[codes] = False
    assert unused.sum() == 7  # all 64 vectors went to the same (tied) codeword before the replacement
    # the replaced codewords that the batch did not use stay what they were replaced with: vectors of the batch
    gap = (codebook.embed[unused, None] - x[None]).norm(dim=-1).min(dim=1).values
    assert gap.max() < 1e-3
    assert codebook.embed.abs().max() < 10


def test_training_forward_passes_gradients_straight_through():
    ours = CompressionModel(CodecConfig(dimension=16, n_filters=4, bins=32, n_q=2)).train()
    wav = torch.randn(2, 1, 1300, requires_grad=True)
    out = ours(wav)
    assert out.audio.shape == wav.shape and out.codes.shape == (2, 2, math.ceil(1300 / HOP))
    (out.audio.pow(2).mean() + out.commit_loss).backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0
    assert ours.quantizer.codebooks[0].inited.item()
