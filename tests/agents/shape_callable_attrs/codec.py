"""Codec class attributes that are no descriptors: a callable instance and a functools.partial
(issue 13, finding 5); Python calls them without self."""
import functools
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


class _Encoder:
    def __call__(self, image):
        return _enc(image)


def _decode(bitstream, level):
    assert level == 3
    return _dec(bitstream)


class Codec:
    encode = _Encoder()
    decode = functools.partial(_decode, level=3)

    def __init__(self, device):
        pass
