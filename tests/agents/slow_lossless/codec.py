"""Test agent: lossless (raw pixels plus a size header), but each encode takes ``delay_s``.

Slow enough that a test can kill a worker, the orchestrator, or cancel while it runs.
"""

import struct
import time

import torch


class Codec:
    def __init__(self, device: str, delay_s: float = 0.5) -> None:
        self.delay_s = float(delay_s)

    def encode(self, image: torch.Tensor) -> bytes:
        time.sleep(self.delay_s)
        _, height, width = image.shape
        return struct.pack(">II", height, width) + image.cpu().contiguous().numpy().tobytes()

    def decode(self, bitstream: bytes) -> torch.Tensor:
        height, width = struct.unpack_from(">II", bitstream)
        pixels = torch.frombuffer(bytearray(bitstream[8:]), dtype=torch.uint8)
        return pixels.reshape(3, height, width)
