"""Training: the codec (``train_codec``) and the language model (``train_lm``), on one process or under torchrun.

Layout: ``config`` (YAML -> dataclasses), ``losses`` / ``discriminator`` / ``balancer`` (codec objectives),
``codec_trainer`` and ``lm_trainer`` (the two loops), ``lora`` (adapters), ``distributed`` (DDP / FSDP),
``state`` (atomic checkpoints and resume), ``logger`` (progress bar, CSV / TensorBoard, audio samples),
``models`` (building and exporting models), ``cli`` (the ``yuefu train`` / ``yuefu data`` commands).
"""

from yuefu.train.codec_trainer import train_codec
from yuefu.train.config import CodecTrainConfig, LMTrainConfig, load_config
from yuefu.train.lm_trainer import train_lm

__all__ = ["CodecTrainConfig", "LMTrainConfig", "load_config", "train_codec", "train_lm"]
