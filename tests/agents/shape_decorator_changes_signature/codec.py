"""A functools.wraps decorator that changes the signature (issue 13, finding 14): the call goes to
the wrapper, whose own signature takes the device."""
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


def _takes_device(f):
    @functools.wraps(f)
    def wrapper(x, device, *args, **kwargs):
        return f(x)
    return wrapper


@_takes_device
def encode(image):
    return _enc(image)


@_takes_device
def decode(bitstream):
    return _dec(bitstream)
