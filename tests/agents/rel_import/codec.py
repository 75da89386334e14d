"""A bundle whose entry module imports a sibling package relatively (issue 13)."""
from .helpers.bits import pack, unpack


def encode(image, device, **params):
    return pack(image)


def decode(bitstream, device, **params):
    return unpack(bitstream)
