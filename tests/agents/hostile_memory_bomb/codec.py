"""Hostile: allocates and touches memory without end in encode."""


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        hoard = []
        while True:
            hoard.append(b"\x01" * (64 * 1024 * 1024))

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
