"""The device vocabulary (``codecbench.v1.Device``), in one place for services, sandbox and client.

``DEVICE_UNSPECIFIED`` means ``DEVICE_CPU``: the one default, resolved by :func:`resolve`. An
experiment may ask for ``DEVICE_ANY`` (whatever worker is free, on its GPU when it has one); a
worker and an agent are always given CPU or CUDA. Agents receive the short name as the
``device`` argument (``"cpu"`` or ``"cuda"``), which is also what torch calls the device.
"""

from __future__ import annotations

from codecbench.v1 import types_pb2

Device = types_pb2.Device

CPU = types_pb2.DEVICE_CPU
CUDA = types_pb2.DEVICE_CUDA
ANY = types_pb2.DEVICE_ANY
_SHORT_NAMES = {CPU: "cpu", CUDA: "cuda", ANY: "any"}


def resolve(device: Device.ValueType) -> Device.ValueType:
    """``device``, with DEVICE_UNSPECIFIED read as DEVICE_CPU (the default)."""
    return device or CPU


def short_name(device: Device.ValueType) -> str:
    """``DEVICE_CUDA`` -> ``"cuda"`` (unspecified -> ``"cpu"``); the torch device name for CPU and CUDA."""
    return _SHORT_NAMES[resolve(device)]


def parse(name: str) -> Device.ValueType:
    """``"cuda"`` or ``"DEVICE_CUDA"`` (any case) -> ``DEVICE_CUDA``.

    Raises:
        ValueError: ``name`` is not cpu, cuda or any.
    """
    key = name.strip().lower().removeprefix("device_")
    for device, short in _SHORT_NAMES.items():
        if short == key:
            return device
    raise ValueError(f"{name!r} is not one of {', '.join(_SHORT_NAMES.values())}")
