"""TIMEOUT: Codec.__init__ sleeps far longer than the load limit."""
import time

import torch


class Codec:
    def __init__(self, device, **params):
        time.sleep(600)

    def encode(self, image):
        return b""

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
