"""Hostile (red-team C1): signals each image's value through per-uid inotify instance counts.

Adapted from the red team's proof of concept (sent 0/60/20, received 0/60/20 while encoder and
decoder were the same uid and alive together). The encoder holds as many inotify instances as
the image's first pixel (0..99) and, with ``hold_s``, keeps holding them after it returns for a
while (a decoder running at the same time then counts them); the decoder opens instances until
the per-uid limit refuses one and returns an image filled with ``limit - opened``. On uniform
images that is the original: a lossless result through a 4-byte bitstream, when the channel works.
"""

import ctypes
import os
import struct
import time

import torch

_libc = ctypes.CDLL(None, use_errno=True)
_held: list[int] = []


class Codec:
    def __init__(self, device: str, limit: int = 128, hold_s: float = 0.0) -> None:
        self.limit, self.hold_s = limit, hold_s

    def encode(self, image: torch.Tensor) -> bytes:
        value = int(image[0, 0, 0]) % 100
        for fd in _held:
            os.close(fd)
        _held.clear()
        for _ in range(value):
            _held.append(_libc.inotify_init())
        time.sleep(self.hold_s)
        return struct.pack("<HH", image.shape[1], image.shape[2])

    def decode(self, bitstream: bytes) -> torch.Tensor:
        opened = []
        while len(opened) < self.limit:
            fd = _libc.inotify_init()
            if fd < 0:
                break
            opened.append(fd)
        for fd in opened:
            os.close(fd)
        height, width = struct.unpack("<HH", bitstream)
        print(f"decoder opened {len(opened)} inotify instances", flush=True)
        return torch.full((3, height, width), self.limit - len(opened), dtype=torch.uint8)
