"""Lossless agent: raw RGB pixels compressed with zlib (DEFLATE, RFC 1950/1951).

Module-level form of the codec contract. Bitstream: height and width as two big-endian uint32,
then the zlib stream of the H*W*3 interleaved RGB bytes. Parameter ``level`` is zlib's 0..9 (default 6).
"""

import struct
import zlib

import torch

_HEADER = struct.Struct(">II")


def encode(image: torch.Tensor, device: str, level: int = 6) -> bytes:
    """uint8 [3, H, W] -> header + zlib stream."""
    _, height, width = image.shape
    raw = image.cpu().permute(1, 2, 0).contiguous().numpy().tobytes()
    return _HEADER.pack(height, width) + zlib.compress(raw, level)


def decode(bitstream: bytes, device: str, level: int = 6) -> torch.Tensor:
    """Header + zlib stream -> uint8 [3, H, W]."""
    height, width = _HEADER.unpack_from(bitstream)
    raw = zlib.decompress(bitstream[_HEADER.size:])
    pixels = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return pixels.reshape(height, width, 3).permute(2, 0, 1).to(device)
