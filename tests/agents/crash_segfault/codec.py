"""SANDBOX_CRASH: encode dereferences a NULL pointer through ctypes (SIGSEGV)."""
import ctypes

import torch


def encode(image, device, **params):
    ctypes.memset(0, 0, 16)
    return b""


def decode(bitstream, device, **params):
    return torch.zeros(3, 1, 1, dtype=torch.uint8)
