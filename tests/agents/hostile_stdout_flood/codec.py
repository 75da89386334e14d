"""Hostile: prints 100 MB to stdout during encode, then works normally (lossless)."""

import struct
import sys

import torch

LINE = "x" * 1023 + "\n"


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image: torch.Tensor) -> bytes:
        for _ in range(100 * 1024):
            sys.stdout.write(LINE)
        sys.stdout.flush()
        _, height, width = image.shape
        return struct.pack(">II", height, width) + image.cpu().contiguous().numpy().tobytes()

    def decode(self, bitstream: bytes) -> torch.Tensor:
        height, width = struct.unpack_from(">II", bitstream)
        return torch.frombuffer(bytearray(bitstream[8:]), dtype=torch.uint8).reshape(3, height, width)
