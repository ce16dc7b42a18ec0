"""EnCodec-style audio codec: SEANet autoencoder with residual vector quantization."""

from yuefu.codec.model import CodecOutput, CompressionModel
from yuefu.codec.quantizer import EuclideanCodebook, ResidualVectorQuantizer
from yuefu.codec.seanet import SEANetDecoder, SEANetEncoder

__all__ = [
    "CodecOutput",
    "CompressionModel",
    "EuclideanCodebook",
    "ResidualVectorQuantizer",
    "SEANetDecoder",
    "SEANetEncoder",
]
