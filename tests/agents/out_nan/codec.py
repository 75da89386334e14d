"""INVALID_OUTPUT: decode returns a float tensor of the right shape with NaN in it."""
import struct

import torch


def encode(image, device, **params):
    return struct.pack(">II", image.shape[1], image.shape[2])


def decode(bitstream, device, **params):
    height, width = struct.unpack(">II", bitstream)
    out = torch.full((3, height, width), 0.5)
    out[1, 0, 0] = float("nan")
    return out
