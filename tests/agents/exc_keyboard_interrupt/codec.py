"""AGENT_EXCEPTION: encode raises KeyboardInterrupt."""
import torch


class Codec:
    def __init__(self, device, **params):
        pass

    def encode(self, image):
        raise KeyboardInterrupt("stop")

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
