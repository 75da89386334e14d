"""AGENT_EXCEPTION: encode calls sys.exit(5)."""
import sys

import torch


class Codec:
    def __init__(self, device, **params):
        pass

    def encode(self, image):
        sys.exit(5)

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
