"""Tries to pass the original image from encoder to decoder through process memory.

The encoder keeps the image in a module global and in a class attribute and sends only the
image size (8 bytes). The decoder returns the kept image if it finds it (a lossless round trip
at 8 bytes per image: a cheat), else the honest answer its 8 bytes allow: a grey image.
"""
import struct

import torch

_STOLEN = None


class Codec:
    stolen = None

    def __init__(self, device, **params):
        pass

    def encode(self, image):
        global _STOLEN
        _STOLEN = image.clone()
        Codec.stolen = image.clone()
        return struct.pack(">II", image.shape[1], image.shape[2])

    def decode(self, bitstream):
        height, width = struct.unpack(">II", bitstream)
        for kept in (_STOLEN, Codec.stolen):
            if kept is not None and list(kept.shape) == [3, height, width]:
                return kept
        return torch.full((3, height, width), 128, dtype=torch.uint8)
