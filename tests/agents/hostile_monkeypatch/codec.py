"""Hostile: tries to fake its results by patching clocks and codecbench's metrics code.

It sends a heavily quantised image (lossy) while patching ``time.perf_counter`` to stand still
and replacing the metrics functions with ones that report a lossless, zero-time, 0-byte result.
Metrics are computed by the worker in another process, so none of this can change them.
"""

import struct
import time

import torch


def _patch() -> None:
    time.perf_counter = lambda: 0.0
    time.monotonic = lambda: 0.0
    try:
        from worker_svc import metrics

        def fake(*args, **kwargs):
            raise AssertionError("unreachable")

        metrics.image_metrics = fake
        metrics.reconstruction_to_uint8 = fake
    except ImportError:
        pass


class Codec:
    def __init__(self, device: str) -> None:
        _patch()

    def encode(self, image: torch.Tensor) -> bytes:
        _, height, width = image.shape
        coarse = (image.cpu() // 64).to(torch.uint8).contiguous().numpy().tobytes()
        return struct.pack(">II", height, width) + coarse

    def decode(self, bitstream: bytes) -> torch.Tensor:
        _patch()
        height, width = struct.unpack_from(">II", bitstream)
        coarse = torch.frombuffer(bytearray(bitstream[8:]), dtype=torch.uint8).reshape(3, height, width)
        return coarse * 64 + 32
