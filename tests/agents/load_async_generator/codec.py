"""encode/decode written as async generators (yield instead of return): refused at load (issue 13, finding 16)."""
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


async def encode(image, device):
    yield _enc(image)


async def decode(bitstream, device):
    yield _dec(bitstream)
