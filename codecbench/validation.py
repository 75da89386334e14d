"""Request checks shared by the orchestrator and the worker.

Each function returns the first problem as ``"<field>: <problem and limit>"`` (the text of an
INVALID_ARGUMENT status), or None when the value is acceptable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from codecbench.v1 import types_pb2

MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_POINTS = 1000
# A parameter point is a handful of settings, not a payload: bounded in size and nesting.
MAX_POINT_BYTES = 64 * 1024
MAX_VALUE_DEPTH = 8


def timeouts_problem(timeouts: types_pb2.Timeouts, field: str = "timeouts") -> str | None:
    for name in ("load_s", "encode_s", "decode_s", "experiment_s"):
        value = getattr(timeouts, name)
        if not math.isfinite(value) or value < 0 or value > MAX_TIMEOUT_S:
            return f"{field}.{name}: {value} must be between 0 (default) and {MAX_TIMEOUT_S:g} seconds"
    return None


def points_problem(points: Sequence[types_pb2.ParameterPoint], field: str = "points") -> str | None:
    if len(points) > MAX_POINTS:
        return f"{field}: {len(points)} parameter points exceed the limit of {MAX_POINTS}"
    for i, point in enumerate(points):
        if point.ByteSize() > MAX_POINT_BYTES:
            return f"{field}[{i}]: {point.ByteSize()} bytes exceed the limit of {MAX_POINT_BYTES} bytes per point"
        for key, value in point.params.items():
            if not key.isidentifier():
                return f"{field}[{i}].params: {key!r} is not a Python identifier"
            if value.WhichOneof("kind") is None:
                return f"{field}[{i}].params[{key!r}]: empty value"
            if _depth(value) > MAX_VALUE_DEPTH:
                return f"{field}[{i}].params[{key!r}]: nested deeper than {MAX_VALUE_DEPTH} levels"
    return None


def _depth(value: types_pb2.Value) -> int:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return 1 + max((_depth(v) for v in value.list_value.values), default=0)
    if kind == "map_value":
        return 1 + max((_depth(e.value) for e in value.map_value.entries), default=0)
    return 1


def device_problem(
    device: types_pb2.Device.ValueType, allowed: Sequence[types_pb2.Device.ValueType], field: str = "device"
) -> str | None:
    """``device`` (unspecified reads as DEVICE_CPU) must be one of ``allowed``."""
    if (device or types_pb2.DEVICE_CPU) not in allowed:
        names = ", ".join(types_pb2.Device.Name(d) for d in allowed)
        return f"{field}: {device} is not one of {names}"
    return None
