"""Codec checkpoint adapters: audiocraft's and transformers' EnCodec configs and weights <-> ours.

Our parameter names (``yuefu.codec.CompressionModel``) keep the SEANet layer indices, which both formats share:

    ours                             audiocraft (best_state)                   transformers (EncodecModel)
    encoder.layers.{i}.conv.*        encoder.model.{i}.conv.conv.*             encoder.layers.{i}.conv.*
    decoder.layers.{i}.convtr.*      decoder.model.{i}.convtr.convtr.*         decoder.layers.{i}.conv.*
    *.layers.{i}.block.{j}.conv.*    *.model.{i}.block.{j}.conv.conv.*         *.layers.{i}.block.{j}.conv.*
    *.layers.{i}.shortcut.conv.*     *.model.{i}.shortcut.conv.conv.*          *.layers.{i}.shortcut.conv.*
    *.layers.{i}.lstm.*              *.model.{i}.lstm.*                        *.layers.{i}.lstm.*
    quantizer.codebooks.{k}.embed    quantizer.vq.layers.{k}._codebook.embed   quantizer.layers.{k}.codebook.embed

(audiocraft names from ``audiocraft/modules/{seanet,conv,lstm}.py`` and ``audiocraft/quantization/{vq,core_vq}.py``.)
A weight-normed convolution weight is stored as ``weight_g``/``weight_v`` (torch's old ``weight_norm``, as in the
official audiocraft checkpoints) or ``parametrizations.weight.original0/1`` (the new one, as transformers saves):
both are read; ours are written in the new spelling, audiocraft's in the old one. Unknown keys raise a ValueError.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import Tensor

from yuefu.codec.seanet import weight_norm_fold, weight_norm_split
from yuefu.config import CodecConfig

StateDict = dict[str, Tensor]

_PLACEHOLDERS = {
    "part": r"encoder|decoder",
    "i": r"\d+",
    "k": r"\d+",
    "sub": r"block\.\d+|shortcut",
    "cs": r"weight|bias|weight_g|weight_v|parametrizations\.weight\.original[01]",  # convolution
    "ls": r"(?:weight|bias)_(?:ih|hh)_l\d+",  # LSTM
    "buf": r"inited|cluster_size|embed|embed_avg",  # codebook
}

# (ours, audiocraft)
_AUDIOCRAFT = [
    ("{part}.layers.{i}.conv.{cs}", "{part}.model.{i}.conv.conv.{cs}"),
    ("decoder.layers.{i}.convtr.{cs}", "decoder.model.{i}.convtr.convtr.{cs}"),
    ("{part}.layers.{i}.{sub}.conv.{cs}", "{part}.model.{i}.{sub}.conv.conv.{cs}"),
    ("{part}.layers.{i}.lstm.{ls}", "{part}.model.{i}.lstm.{ls}"),
    ("quantizer.codebooks.{k}.{buf}", "quantizer.vq.layers.{k}._codebook.{buf}"),
]
# (ours, transformers); transformers names the decoder's transposed convolutions ``conv`` as well, so reading
# takes the first rule for them and _mark_transposed fixes the name afterwards.
_TRANSFORMERS = [
    ("{part}.layers.{i}.conv.{cs}", "{part}.layers.{i}.conv.{cs}"),
    ("decoder.layers.{i}.convtr.{cs}", "decoder.layers.{i}.conv.{cs}"),
    ("{part}.layers.{i}.{sub}.conv.{cs}", "{part}.layers.{i}.{sub}.conv.{cs}"),
    ("{part}.layers.{i}.lstm.{ls}", "{part}.layers.{i}.lstm.{ls}"),
    ("quantizer.codebooks.{k}.{buf}", "quantizer.layers.{k}.codebook.{buf}"),
]


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    regex = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{_PLACEHOLDERS[p]})" for n, p in enumerate(parts))
    return re.compile(regex + "$")


def _rename(sd: StateDict, rules: list[tuple[str, str]], src: int, what: str) -> StateDict:
    """Rename every key by the first rule whose side ``src`` (0 ours, 1 foreign) matches it."""
    compiled = [(_compile(rule[src]), rule[1 - src]) for rule in rules]
    out: StateDict = {}
    unknown = []
    for key, value in sd.items():
        for pattern, target in compiled:
            m = pattern.match(key)
            if m:
                out[target.format(**m.groupdict())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown {what} codec keys ({len(unknown)}): {unknown[:5]}")
    return out


# -- weight-norm spellings (on our names) ------------------------------------------------------------------------
_CONV_WEIGHT = re.compile(r"^(.*\.(?:conv|convtr))\.(weight|weight_g|weight_v|parametrizations\.weight\.original[01])$")
_SPELLINGS = {"old": ("weight_g", "weight_v"),
              "new": ("parametrizations.weight.original0", "parametrizations.weight.original1")}


def _respell(sd: StateDict, style: str) -> StateDict:
    """Store every convolution weight as ``style``: "new", "old" (g/v pairs) or "plain" (folded weight)."""
    out: StateDict = {}
    found: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        m = _CONV_WEIGHT.match(key)
        if m:
            found.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            out[key] = value
    for prefix, stored in found.items():
        if set(stored) == {"weight"}:
            g, v = weight_norm_split(stored["weight"]) if style != "plain" else (None, None)
            plain = stored["weight"]
        else:
            pair = next((p for p in _SPELLINGS.values() if set(stored) == set(p)), None)
            if pair is None:
                raise ValueError(f"{prefix}: incomplete or mixed weight entries {sorted(stored)}")
            g, v = stored[pair[0]], stored[pair[1]]
            plain = weight_norm_fold(g, v) if style == "plain" else None
        if style == "plain":
            out[f"{prefix}.weight"] = plain
        else:
            names = _SPELLINGS[style]
            out[f"{prefix}.{names[0]}"], out[f"{prefix}.{names[1]}"] = g, v
    return out


def _keep_spelling(sd: StateDict) -> StateDict:
    """Old g/v pairs -> new spelling; plain and new entries as they are."""
    if any(k.endswith((".weight_g", ".weight_v")) for k in sd):
        plain = {k: v for k, v in sd.items() if _CONV_WEIGHT.match(k) and k.endswith(".weight")}
        rest = _respell({k: v for k, v in sd.items() if k not in plain}, "new")
        return {**rest, **plain}
    return dict(sd)


def _mark_transposed(sd: StateDict) -> StateDict:
    """Decoder convolutions between the first and the last one are the transposed (upsampling) ones."""
    idx = sorted({int(m.group(1)) for k in sd if (m := re.match(r"decoder\.layers\.(\d+)\.conv\.", k))})
    inner = {str(i) for i in idx[1:-1]}
    out: StateDict = {}
    for key, value in sd.items():
        m = re.match(r"decoder\.layers\.(\d+)\.conv\.(.*)$", key)
        out[f"decoder.layers.{m.group(1)}.convtr.{m.group(2)}" if m and m.group(1) in inner else key] = value
    return out


# -- weights ---------------------------------------------------------------------------------------------------
def codec_state_from_transformers(sd: dict[str, Tensor]) -> StateDict:
    """``EncodecModel.state_dict()`` (no ``audio_encoder.`` prefix) -> our names."""
    return _keep_spelling(_mark_transposed(_rename(sd, _TRANSFORMERS, 1, "transformers")))


def codec_state_to_transformers(sd: dict[str, Tensor]) -> StateDict:
    """Our weights (weight norm folded or not) -> ``EncodecModel`` names, weights as weight-norm parametrizations."""
    return _rename(_respell(sd, "new"), _TRANSFORMERS, 0, "yuefu")


def codec_state_from_audiocraft(sd: dict[str, Tensor]) -> StateDict:
    """audiocraft ``best_state`` of an EncodecModel -> our names."""
    return _keep_spelling(_rename(sd, _AUDIOCRAFT, 1, "audiocraft"))


def codec_state_to_audiocraft(sd: dict[str, Tensor], weight_norm: bool = True) -> StateDict:
    """Our weights -> audiocraft ``best_state`` names; convolutions as ``weight_g``/``weight_v`` like the official
    checkpoints (``weight_norm=False``: plain ``weight``, for a codec built with ``norm: none``)."""
    return _rename(_respell(sd, "old" if weight_norm else "plain"), _AUDIOCRAFT, 0, "yuefu")


# -- transformers config -----------------------------------------------------------------------------------------
# transformers' EncodecConfig defaults (models/encodec/configuration_encodec.py), for keys a config.json leaves out
_TF_DEFAULTS: dict[str, Any] = {
    "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0], "sampling_rate": 24000, "audio_channels": 1,
    "normalize": False, "chunk_length_s": None, "overlap": None, "hidden_size": 128, "num_filters": 32,
    "num_residual_layers": 1, "upsampling_ratios": [8, 5, 4, 2], "norm_type": "weight_norm", "kernel_size": 7,
    "last_kernel_size": 7, "residual_kernel_size": 3, "dilation_growth_rate": 2, "use_causal_conv": True,
    "pad_mode": "reflect", "compress": 2, "num_lstm_layers": 2, "trim_right_ratio": 1.0, "codebook_size": 1024,
    "codebook_dim": None, "use_conv_shortcut": True,
}


def _tf_bits_per_second_per_codebook(sample_rate: int, hop: int, bins: int) -> int:
    # transformers: frame_rate = ceil(sr / hop), bits = ceil(log2(bins))
    return math.ceil(sample_rate / hop) * math.ceil(math.log2(bins))


def codec_config_from_transformers(cfg: dict[str, Any]) -> CodecConfig:
    """A transformers ``EncodecConfig`` (as a dict) -> our CodecConfig; n_q as transformers' ``num_quantizers``."""
    c = {**_TF_DEFAULTS, **cfg}
    if c.get("model_type", "encodec") != "encodec":
        raise ValueError(f"not an EnCodec config (model_type={c['model_type']!r})")
    if c["norm_type"] != "weight_norm":
        raise ValueError(f"unsupported EnCodec norm_type {c['norm_type']!r} (only weight_norm)")
    if c["chunk_length_s"] is not None:
        raise ValueError("chunked EnCodec models (chunk_length_s set) are not supported")
    if c["codebook_dim"] is not None and c["codebook_dim"] != c["hidden_size"]:
        raise ValueError("codebook_dim different from hidden_size (projected codebooks) is not supported")
    ratios = [int(r) for r in c["upsampling_ratios"]]
    bins = int(c["codebook_size"])
    bps = _tf_bits_per_second_per_codebook(int(c["sampling_rate"]), math.prod(ratios), bins)
    n_q = int(1000 * c["target_bandwidths"][-1] // bps)
    return CodecConfig(
        sample_rate=int(c["sampling_rate"]), channels=int(c["audio_channels"]), dimension=int(c["hidden_size"]),
        n_filters=int(c["num_filters"]), n_residual_layers=int(c["num_residual_layers"]), ratios=ratios,
        kernel_size=int(c["kernel_size"]), residual_kernel_size=int(c["residual_kernel_size"]),
        last_kernel_size=int(c["last_kernel_size"]), dilation_base=int(c["dilation_growth_rate"]),
        causal=bool(c["use_causal_conv"]), pad_mode=str(c["pad_mode"]), true_skip=not c["use_conv_shortcut"],
        compress=int(c["compress"]), lstm=int(c["num_lstm_layers"]), norm="weight_norm",
        trim_right_ratio=float(c["trim_right_ratio"]), activation_alpha=1.0, n_q=n_q, bins=bins,
        renormalize=bool(c["normalize"]),
    )


def codec_config_to_transformers(cfg: CodecConfig) -> dict[str, Any]:
    """Our CodecConfig -> a transformers ``EncodecConfig`` dict whose single target bandwidth gives n_q codebooks."""
    if cfg.norm != "weight_norm" or cfg.activation_alpha != 1.0 or cfg.lstm < 1:
        raise ValueError("transformers' EnCodec needs weight norm, ELU alpha 1 and an LSTM")
    if 2 ** round(math.log2(cfg.bins)) != cfg.bins:
        raise ValueError(f"transformers' EnCodec needs a power-of-two codebook size, got {cfg.bins}")
    bps = _tf_bits_per_second_per_codebook(cfg.sample_rate, cfg.hop_length, cfg.bins)
    bandwidth = round(cfg.n_q * bps / 1000, 6)
    while int(1000 * bandwidth // bps) < cfg.n_q:  # guard against float rounding below the integer
        bandwidth = math.nextafter(bandwidth, math.inf)
    return {
        "model_type": "encodec", "target_bandwidths": [bandwidth], "sampling_rate": cfg.sample_rate,
        "audio_channels": cfg.channels, "normalize": cfg.renormalize, "chunk_length_s": None, "overlap": None,
        "hidden_size": cfg.dimension, "num_filters": cfg.n_filters, "num_residual_layers": cfg.n_residual_layers,
        "upsampling_ratios": list(cfg.ratios), "norm_type": "weight_norm", "kernel_size": cfg.kernel_size,
        "last_kernel_size": cfg.last_kernel_size, "residual_kernel_size": cfg.residual_kernel_size,
        "dilation_growth_rate": cfg.dilation_base, "use_causal_conv": cfg.causal, "pad_mode": cfg.pad_mode,
        "compress": cfg.compress, "num_lstm_layers": cfg.lstm, "trim_right_ratio": cfg.trim_right_ratio,
        "codebook_size": cfg.bins, "codebook_dim": cfg.dimension, "use_conv_shortcut": not cfg.true_skip,
    }


# -- audiocraft config -------------------------------------------------------------------------------------------
# Constructor defaults of audiocraft's SEANetEncoder/Decoder and ResidualVectorQuantizer, for keys an xp.cfg lacks
_SEANET_DEFAULTS: dict[str, Any] = {
    "channels": 1, "dimension": 128, "n_filters": 32, "n_residual_layers": 3, "ratios": [8, 5, 4, 2],
    "activation": "ELU", "activation_params": {"alpha": 1.0}, "norm": "none", "norm_params": {}, "kernel_size": 7,
    "last_kernel_size": 7, "residual_kernel_size": 3, "dilation_base": 2, "causal": False, "pad_mode": "reflect",
    "true_skip": True, "compress": 2, "lstm": 0, "disable_norm_outer_blocks": 0, "trim_right_ratio": 1.0,
    "final_activation": None, "final_activation_params": None,
}
_DECODER_ONLY = {"trim_right_ratio", "final_activation", "final_activation_params"}


def _resolve(value: Any, root: dict[str, Any]) -> Any:
    """Resolve OmegaConf ``${a.b}`` references (whole-string ones, the only kind xp.cfg uses for the codec)."""
    for _ in range(16):
        m = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", value) if isinstance(value, str) else None
        if not m:
            break
        node: Any = root
        for part in m.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"xp.cfg reference {value!r} points nowhere")
            node = node[part]
        value = node
    if isinstance(value, dict):
        return {k: _resolve(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root) for v in value]
    return value


def codec_config_from_audiocraft(xp_cfg: dict[str, Any]) -> CodecConfig:
    """audiocraft's ``xp.cfg`` of a compression model (parsed YAML) -> our CodecConfig.

    Follows audiocraft's ``models/builders.py``: ``seanet.*`` with ``seanet.encoder``/``seanet.decoder`` overrides
    builds the SEANet pair, ``rvq.*`` the quantizer (dimension = seanet dimension), ``encodec.*`` the wrapper.
    EMA training settings of ``rvq`` (decay, k-means, dead-code threshold) have no field in CodecConfig.
    """
    if xp_cfg.get("compression_model", "encodec") != "encodec":
        raise ValueError(f"unsupported compression_model {xp_cfg.get('compression_model')!r} (only encodec)")
    encodec = _resolve(xp_cfg.get("encodec") or {}, xp_cfg)
    if encodec.get("autoencoder", "seanet") != "seanet" or encodec.get("quantizer", "rvq") != "rvq":
        raise ValueError("only the seanet autoencoder with the rvq quantizer is supported")
    seanet = {**_SEANET_DEFAULTS, **_resolve(xp_cfg.get("seanet") or {}, xp_cfg)}
    encoder_overrides = seanet.pop("encoder", None) or {}
    decoder_overrides = seanet.pop("decoder", None) or {}
    enc, dec = {**seanet, **encoder_overrides}, {**seanet, **decoder_overrides}
    differing = sorted(k for k in set(enc) | set(dec) if k not in _DECODER_ONLY and enc.get(k) != dec.get(k))
    if differing:
        raise ValueError(f"different encoder and decoder settings are not supported: {differing}")
    if dec["activation"] != "ELU" or dec["final_activation"] is not None:
        raise ValueError("only ELU activations without a final activation are supported")
    if int(dec["disable_norm_outer_blocks"]) != 0:
        raise ValueError("disable_norm_outer_blocks != 0 is not supported")
    rvq = _resolve(xp_cfg.get("rvq") or {}, xp_cfg)
    channels = int(dec["channels"])
    if int(encodec.get("channels", channels)) != channels:
        raise ValueError("encodec.channels and seanet.channels differ")
    return CodecConfig(
        sample_rate=int(encodec.get("sample_rate", _resolve(xp_cfg.get("sample_rate"), xp_cfg))),
        channels=channels, dimension=int(dec["dimension"]), n_filters=int(dec["n_filters"]),
        n_residual_layers=int(dec["n_residual_layers"]), ratios=[int(r) for r in dec["ratios"]],
        kernel_size=int(dec["kernel_size"]), residual_kernel_size=int(dec["residual_kernel_size"]),
        last_kernel_size=int(dec["last_kernel_size"]), dilation_base=int(dec["dilation_base"]),
        causal=bool(dec["causal"]), pad_mode=str(dec["pad_mode"]), true_skip=bool(dec["true_skip"]),
        compress=int(dec["compress"]), lstm=int(dec["lstm"] or 0), norm=str(dec["norm"]),
        trim_right_ratio=float(dec["trim_right_ratio"]),
        activation_alpha=float((dec["activation_params"] or {}).get("alpha", 1.0)),
        n_q=int(rvq.get("n_q", 8)), bins=int(rvq.get("bins", 1024)),
        renormalize=bool(encodec.get("renormalize", False)),
    )


def codec_config_to_audiocraft(cfg: CodecConfig) -> dict[str, Any]:
    """Our CodecConfig -> the codec sections of an audiocraft ``xp.cfg`` (top-level ``sample_rate``, ``channels``,
    ``compression_model``, ``encodec``, ``seanet``, ``rvq``), with the same keys and references as audiocraft writes.

    The rvq training settings are MusicGen's (decay 0.99, k-means init with 50 iterations, dead-code threshold 2).
    """
    return {
        "sample_rate": cfg.sample_rate,
        "channels": cfg.channels,
        "compression_model": "encodec",
        "encodec": {
            "autoencoder": "seanet", "quantizer": "rvq", "sample_rate": "${sample_rate}", "channels": "${channels}",
            "causal": cfg.causal, "renormalize": cfg.renormalize,
        },
        "seanet": {
            "dimension": cfg.dimension, "channels": "${channels}", "causal": "${encodec.causal}",
            "n_filters": cfg.n_filters, "n_residual_layers": cfg.n_residual_layers, "ratios": list(cfg.ratios),
            "activation": "ELU", "activation_params": {"alpha": cfg.activation_alpha}, "norm": cfg.norm,
            "norm_params": {}, "kernel_size": cfg.kernel_size, "residual_kernel_size": cfg.residual_kernel_size,
            "last_kernel_size": cfg.last_kernel_size, "dilation_base": cfg.dilation_base, "pad_mode": cfg.pad_mode,
            "true_skip": cfg.true_skip, "compress": cfg.compress, "lstm": cfg.lstm, "disable_norm_outer_blocks": 0,
            "decoder": {"trim_right_ratio": cfg.trim_right_ratio, "final_activation": None,
                        "final_activation_params": None},
            "encoder": {},
        },
        "rvq": {
            "n_q": cfg.n_q, "q_dropout": False, "bins": cfg.bins, "decay": 0.99, "kmeans_init": True,
            "kmeans_iters": 50, "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0,
            "orthogonal_reg_active_codes_only": False,
        },
    }
