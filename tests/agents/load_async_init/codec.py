"""A Codec whose __init__ is async def: refused at load with advice (issue 13, finding 16)."""
import struct
import zlib

import numpy as np
import torch


def _enc(image):
    a = image.cpu().numpy()
    return struct.pack("<HH", a.shape[1], a.shape[2]) + zlib.compress(a.tobytes())


def _dec(b):
    h, w = struct.unpack("<HH", b[:4])
    return torch.from_numpy(np.frombuffer(zlib.decompress(b[4:]), np.uint8).reshape(3, h, w).copy())


class Codec:
    async def __init__(self, device):
        pass

    def encode(self, image):
        return _enc(image)

    def decode(self, bitstream):
        return _dec(bitstream)
