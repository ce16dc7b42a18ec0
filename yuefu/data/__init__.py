"""Datasets for training: manifests of audio files with their metadata, audio crops, and cached codec tokens."""

from yuefu.data.dataset import AudioDataset, GlobalBatchSampler, collate_audio, read_segment
from yuefu.data.manifest import (
    AudioEntry,
    IndexResult,
    index_folder,
    load_entries,
    read_manifest,
    split_entries,
    write_manifest,
)
from yuefu.data.sidecar import MusicInfo, TextAugment, read_sidecar, training_text
from yuefu.data.token_cache import TokenCache, TokenDataset, collate_tokens, fill_cache

__all__ = [
    "AudioDataset",
    "AudioEntry",
    "GlobalBatchSampler",
    "IndexResult",
    "MusicInfo",
    "TextAugment",
    "TokenCache",
    "TokenDataset",
    "collate_audio",
    "collate_tokens",
    "fill_cache",
    "index_folder",
    "load_entries",
    "read_manifest",
    "read_segment",
    "read_sidecar",
    "split_entries",
    "training_text",
    "write_manifest",
]
