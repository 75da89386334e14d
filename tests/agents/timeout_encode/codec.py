"""TIMEOUT: encode never returns."""
import torch


class Codec:
    def __init__(self, device, **params):
        pass

    def encode(self, image):
        n = 0
        while True:
            n += 1

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
