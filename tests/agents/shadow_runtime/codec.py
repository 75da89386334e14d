"""A good lossless agent whose bundle also holds a package named like the sandbox runtime
(``sandbox/child.py``). The worker must run its own runtime, never the bundle's."""
import struct

import torch

_HEADER = struct.Struct(">II")


def encode(image, device, **params):
    return _HEADER.pack(image.shape[1], image.shape[2]) + image.cpu().numpy().tobytes()


def decode(bitstream, device, **params):
    height, width = _HEADER.unpack_from(bitstream)
    pixels = torch.frombuffer(bytearray(bitstream[_HEADER.size:]), dtype=torch.uint8)
    return pixels.reshape(3, height, width)
