"""SANDBOX_CRASH: encode ends its own process with a signal (``how``: a signal name, or "abort")."""
import os
import signal

import torch


def encode(image, device, how="SIGKILL", **params):
    if how == "abort":
        os.abort()  # SIGABRT
    os.kill(os.getpid(), getattr(signal, how))
    return b"still alive"  # the signal was dropped: an agent that is PID 1 of its namespace


def decode(bitstream, device, **params):
    return torch.zeros(3, 1, 1, dtype=torch.uint8)
