"""Hostile: returns a 1 GiB bitstream."""


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        return bytes(1024 * 1024 * 1024)

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
