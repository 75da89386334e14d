"""Hostile: leaves a busy thread and a sleeping subprocess behind after encode returns."""

import struct
import subprocess
import sys
import threading

import torch

# The sandbox has no /usr/bin (no `sleep`): the interpreter is the one program every agent can start.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(1000)"]


def _spin() -> None:
    while True:
        pass


class Codec:
    def __init__(self, device: str) -> None:
        self.children = []

    def encode(self, image: torch.Tensor) -> bytes:
        threading.Thread(target=_spin, daemon=False).start()
        self.children.append(subprocess.Popen(SLEEPER, start_new_session=True))
        _, height, width = image.shape
        return struct.pack(">II", height, width) + image.cpu().contiguous().numpy().tobytes()

    def decode(self, bitstream: bytes) -> torch.Tensor:
        height, width = struct.unpack_from(">II", bitstream)
        self.children.append(subprocess.Popen(SLEEPER, start_new_session=True))
        return torch.frombuffer(bytearray(bitstream[8:]), dtype=torch.uint8).reshape(3, height, width)
