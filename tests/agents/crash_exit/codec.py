"""SANDBOX_CRASH: the process exits with code 3 in the middle of encode."""
import os

import torch


def encode(image, device, **params):
    print("crash_exit: last words before os._exit(3)", flush=True)
    os._exit(3)


def decode(bitstream, device, **params):
    return torch.zeros(3, 1, 1, dtype=torch.uint8)
