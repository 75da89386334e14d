"""Hostile: returns the whole environment it can see as its bitstream."""

import os


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        return "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())).encode()

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
