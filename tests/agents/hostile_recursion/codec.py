"""Hostile: unbounded recursion in encode."""


def _deeper(n: int) -> int:
    return _deeper(n + 1) + 1


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        return bytes([_deeper(0) % 256])

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
