"""Functions that take only *args (issue 13, finding 15)."""
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


def encode(*args):
    assert args[1] == "cpu"
    return _enc(args[0])


def decode(*args):
    return _dec(args[0])
