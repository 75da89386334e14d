"""Trivial agent for the benchmarks: no compression work at all, so what is measured is the system.

Codec contract. The bitstream is 4 bytes, the image height and width as two big-endian uint16;
the decoder returns an all-zero uint8 [3, H, W] tensor of that size.
"""

import struct

import torch

_SIZE = struct.Struct(">HH")


class Codec:
    def __init__(self, device: str) -> None:
        self.device = device

    def encode(self, image: torch.Tensor) -> bytes:
        """uint8 [3, H, W] -> 4 bytes (H, W)."""
        return _SIZE.pack(int(image.shape[1]), int(image.shape[2]))

    def decode(self, bitstream: bytes) -> torch.Tensor:
        """4 bytes (H, W) -> zeros, uint8 [3, H, W]."""
        height, width = _SIZE.unpack(bitstream)
        return torch.zeros((3, height, width), dtype=torch.uint8)
