"""A relative import of a module the bundle does not have: AGENT_LOAD_ERROR with advice."""
from .helpers.bits import pack


def encode(image, device, **params):
    return pack(image)


def decode(bitstream, device, **params):
    raise NotImplementedError
