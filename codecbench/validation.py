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
DEVICES = ("cpu", "cuda")


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
        for key, value in point.params.items():
            if not key.isidentifier():
                return f"{field}[{i}].params: {key!r} is not a Python identifier"
            if value.WhichOneof("kind") is None:
                return f"{field}[{i}].params[{key!r}]: empty value"
    return None


def device_problem(device: str, field: str = "device", allowed: Sequence[str] = DEVICES) -> str | None:
    if device not in allowed:
        return f"{field}: {device!r} is not one of {', '.join(allowed)}"
    return None
