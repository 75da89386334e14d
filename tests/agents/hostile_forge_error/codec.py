"""Hostile: raises codecbench's own WorkerLost (retryable) from encode, hoping to be rerun and
reported as the worker's fault."""

from codecbench import errors


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        raise errors.WorkerLost("no heartbeat", limit_s=1.0)

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
