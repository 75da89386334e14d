"""Hostile: a fork bomb in encode. The pids cgroup stops it; fork then raises BlockingIOError."""

import os


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        while True:
            os.fork()

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
