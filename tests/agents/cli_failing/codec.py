"""AGENT_EXCEPTION for the CLI tests: encode prints a line, then a helper divides by zero."""

import torch


def _bits_per_pixel(image: torch.Tensor) -> float:
    empty = 0
    return image.numel() / empty


class Codec:
    def __init__(self, device: str, quality: int = 50) -> None:
        self.quality = quality

    def encode(self, image: torch.Tensor) -> bytes:
        print(f"cli_failing: encoding at quality {self.quality}")
        return bytes([int(_bits_per_pixel(image))])

    def decode(self, bitstream: bytes) -> torch.Tensor:
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
