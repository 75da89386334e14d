"""INVALID_OUTPUT: decode returns a nested list instead of a tensor."""
import struct


def encode(image, device, **params):
    return struct.pack(">II", image.shape[1], image.shape[2])


def decode(bitstream, device, **params):
    height, width = struct.unpack(">II", bitstream)
    return [[[0] * width for _ in range(height)] for _ in range(3)]
