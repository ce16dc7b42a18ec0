"""Tiny random reference models built locally with transformers (no network), shared by the tests.

The reference is transformers' own ``MusicgenForConditionalGeneration`` with musicgen-small's structure (delay
pattern, 4 codebooks x 2048, cross-attention, the 32 kHz EnCodec layout) at toy sizes, a tiny T5 and a
SentencePiece tokenizer trained here on a few prompts.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROMPTS = [
    "lo-fi hip hop with a warm piano", "rock band with drums and bass guitar",
    "a cheerful erhu melody over a rock beat", "jazz trio with upright bass", "epic orchestral music with strings",
    "80s synth pop with a catchy melody", "calm ambient pads", "traditional chinese folk music with guzheng",
]


def make_tokenizer(folder: Path):
    """A T5 tokenizer (unigram SentencePiece, pad 0 / eos 1 / unk 2) trained on PROMPTS, saved in ``folder``."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(PROMPTS * 10))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "sp"), vocab_size=60, model_type="unigram", pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    for f in ("corpus.txt", "sp.model", "sp.vocab"):
        (folder / f).unlink()
    return tok


def make_musicgen(tokenizer, seed: int = 0, stereo: bool = False, audiocraft_codec: bool = True,
                  dim: int = 64, layers: int = 2):
    """A random transformers MusicGen of musicgen-small's structure at toy size."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    torch.manual_seed(seed)
    text = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(
        sampling_rate=32000, audio_channels=1, num_filters=4, hidden_size=16, upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2], codebook_size=2048, num_lstm_layers=2, chunk_length_s=None, overlap=None,
        normalize=False, use_causal_conv=not audiocraft_codec, pad_mode="constant" if audiocraft_codec else "reflect",
        use_conv_shortcut=not audiocraft_codec)
    n_q = 8 if stereo else 4
    dec = MusicgenDecoderConfig(vocab_size=2048, num_hidden_layers=layers, hidden_size=dim, num_attention_heads=4,
                                ffn_dim=4 * dim, num_codebooks=n_q, audio_channels=2 if stereo else 1,
                                max_position_embeddings=2048, dropout=0.0)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict())
    model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random codebooks (the default init is degenerate) and larger LM weights so that logits are spread out.
        for name, buf in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn_like(buf) * 0.5)
        for name, p in model.decoder.named_parameters():
            if "lm_heads" in name or "embed_tokens" in name:
                p.normal_(0, 1.0)
        model.generation_config.pad_token_id = 2048
        model.generation_config.decoder_start_token_id = 2048
    return model


def make_musicgen_melody(tokenizer, seed: int = 0, dim: int = 64, layers: int = 2):
    """A random transformers MusicGen-melody (chroma + text prepended, no cross-attention) at toy size."""
    from transformers import (
        EncodecConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
        T5Config,
    )

    torch.manual_seed(seed)
    text = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(
        sampling_rate=32000, audio_channels=1, num_filters=4, hidden_size=16, upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2], codebook_size=2048, num_lstm_layers=2, chunk_length_s=None, overlap=None,
        normalize=False, use_causal_conv=False, pad_mode="constant", use_conv_shortcut=False)
    dec = MusicgenMelodyDecoderConfig(vocab_size=2048, num_hidden_layers=layers, hidden_size=dim,
                                      num_attention_heads=4, ffn_dim=4 * dim, num_codebooks=4, audio_channels=1,
                                      max_position_embeddings=2048, dropout=0.0)
    config = MusicgenMelodyConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict(),
                                  num_chroma=12, chroma_length=235)
    model = MusicgenMelodyForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, buf in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn_like(buf) * 0.5)
        for name, p in model.decoder.named_parameters():
            if "lm_heads" in name or "embed_tokens" in name:
                p.normal_(0, 1.0)
        # a chroma projection large enough that the melody visibly moves the logits
        model.audio_enc_to_dec_proj.weight.normal_(0, 1.0)
        model.generation_config.pad_token_id = 2048
        model.generation_config.decoder_start_token_id = 2048
    return model


class _TorchaudioSpectrogram(torch.nn.Module):
    """torchaudio.transforms.Spectrogram(power=2, normalized=True, center=True) by its definition: |STFT / ||w|| |^2."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int, **_: object):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop_length
        self.window = torch.hann_window(win_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)
        return (spec / self.window.pow(2).sum().sqrt()).abs().pow(2)


def make_melody_feature_extractor():
    """transformers' MusicgenMelodyFeatureExtractor; without torchaudio its Spectrogram is the stand-in above."""
    import importlib
    import types

    fe_mod = importlib.import_module("transformers.models.musicgen_melody.feature_extraction_musicgen_melody")
    try:
        import torchaudio  # noqa: F401

        return fe_mod.MusicgenMelodyFeatureExtractor()
    except Exception:  # torchaudio absent: the rest is transformers' own code
        stand_in = types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=_TorchaudioSpectrogram))
        had = hasattr(fe_mod, "torchaudio")
        old = getattr(fe_mod, "torchaudio", None)
        fe_mod.torchaudio = stand_in
        try:
            return fe_mod.MusicgenMelodyFeatureExtractor()
        finally:
            if had:
                fe_mod.torchaudio = old
            else:
                del fe_mod.torchaudio


def hf_greedy_generate(hf_model, inputs: dict, frames: int, cfg: float = 3.0):
    """transformers' greedy generation with classifier-free guidance for ``frames`` frames; the codes are caught on
    their way into the codec's decoder. -> (codes [B, K, frames], audio [B, C, samples])."""
    caught = {}
    decode = hf_model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        caught["codes"] = codes.clone()
        return decode(codes, *args, **kwargs)

    hf_model.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            audio = hf_model.generate(**inputs, do_sample=False, guidance_scale=cfg,
                                      max_new_tokens=frames + hf_model.config.decoder.num_codebooks - 1)
    finally:
        hf_model.audio_encoder.decode = decode
    return caught["codes"][0], audio


def sentence_checkpoint(hf_dir: Path, seed: int = 7):
    """The tiny test MusicGen (yuefu Checkpoint) with its T5 replaced by all-MiniLM-L6-v2 (384 wide, yuefu-mini's
    kind of text encoder) and a random projection into the LM."""
    from yuefu.checkpoints import read_checkpoint

    ckpt = read_checkpoint(hf_dir)
    text = ckpt.config.text
    text.kind, text.name = "sentence", "sentence-transformers/all-MiniLM-L6-v2"
    text.encoder_dim, text.encoder_config = 384, None
    ckpt.config.max_duration = 10.0
    gen = torch.Generator().manual_seed(seed)
    ckpt.text_proj = {"weight": torch.randn(ckpt.config.lm.dim, 384, generator=gen) * 0.2,
                      "bias": torch.randn(ckpt.config.lm.dim, generator=gen) * 0.1}
    ckpt.text_encoder, ckpt.tokenizer_dir = None, None
    return ckpt
