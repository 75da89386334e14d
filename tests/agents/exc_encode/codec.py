"""AGENT_EXCEPTION: encode calls a helper that divides by zero."""
import torch


def _scale(image):
    return image.numel() / 0


class Codec:
    def __init__(self, device, **params):
        self.device = device

    def encode(self, image):
        return bytes([int(_scale(image))])

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
