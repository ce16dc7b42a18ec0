"""yuefu (乐府): text-to-music with MusicGen in pure PyTorch."""

from yuefu.musicgen import MusicGen, get_pretrained

__version__ = "0.1.0"

__all__ = ["MusicGen", "get_pretrained", "__version__"]
