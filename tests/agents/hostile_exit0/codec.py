"""Hostile: leaves the process with exit code 0 in the middle of encode."""

import os


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        os._exit(0)

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
