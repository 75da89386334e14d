"""INVALID_OUTPUT: encode returns a str instead of bytes."""
import torch


def encode(image, device, **params):
    return "not bytes"


def decode(bitstream, device, **params):
    return torch.zeros(3, 1, 1, dtype=torch.uint8)
