"""Tells which process and which Codec served each parameter point, on both sides.

Every ``Codec(...)`` prints one line, ``<side> process=<token> codec=<n> quality=<q>``: the token is
drawn once per process, ``n`` counts the Codecs that process has built. The encoder writes its
Codec's quality into the bitstream; the decoder refuses a bitstream of another quality than its
own Codec's (a Codec reused from another point) and returns a flat image of value ``quality``.
"""
import os
import struct

import torch

_TOKEN = os.urandom(8).hex()
_BUILT = 0


class Codec:
    def __init__(self, device, quality):
        global _BUILT
        _BUILT += 1
        self.quality = quality
        self.number = _BUILT
        self.side = "unknown"
        print(f"codec process={_TOKEN} codec={_BUILT} quality={quality}", flush=True)

    def encode(self, image):
        return struct.pack(">III", self.quality, image.shape[1], image.shape[2])

    def decode(self, bitstream):
        quality, height, width = struct.unpack(">III", bitstream)
        if quality != self.quality:
            raise ValueError(f"a Codec built for quality {self.quality} got a bitstream of quality {quality}")
        return torch.full((3, height, width), self.quality, dtype=torch.uint8)
