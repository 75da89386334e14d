"""Which compute devices this worker offers (the CPU always; CUDA GPUs when torch sees them)."""

from __future__ import annotations

import os

import torch

from codecbench.v1 import types_pb2, worker_pb2


def detect_devices() -> list[worker_pb2.DeviceInfo]:
    """The CPU and each visible CUDA device with its name and total memory in bytes.

    Querying CUDA properties initialises CUDA in this (the worker's) process only; sandbox
    children are started fresh, so none inherits a CUDA context.
    """
    devices = [
        worker_pb2.DeviceInfo(
            kind=types_pb2.DEVICE_CPU, name="cpu", description=f"{os.cpu_count()} logical cores",
            memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        )
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(
                worker_pb2.DeviceInfo(
                    kind=types_pb2.DEVICE_CUDA, name=f"cuda:{index}", description=props.name,
                    memory_bytes=props.total_memory,
                )
            )
    return devices


def has_cuda(devices: list[worker_pb2.DeviceInfo]) -> bool:
    """Whether any of ``devices`` is a CUDA device."""
    return any(d.kind == types_pb2.DEVICE_CUDA for d in devices)
