"""SIGNATURE_MISMATCH: Codec.__init__ takes no `quality`, the experiment passes quality=50."""
import torch


class Codec:
    def __init__(self, device):
        self.device = device

    def encode(self, image):
        return b""

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
