"""Positional-only parameters named like the contract's, in another order (issue 13, finding 4)."""
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


def encode(device, image, /):
    assert device == "cpu", f"device got {type(device)}"
    return _enc(image)


def decode(device, bitstream, /):
    assert device == "cpu", f"device got {type(device)}"
    return _dec(bitstream)
