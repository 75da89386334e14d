"""Request checks shared by the orchestrator and the worker.

Each ``check_*`` function raises :class:`codecbench.errors.InvalidArgument` naming the first bad
field and its limit (``points[2].params['q']: nested deeper than 8 levels``), and returns None when
the value is acceptable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from codecbench.errors import InvalidArgument, echo
from codecbench.v1 import types_pb2

MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_POINTS = 1000
# A parameter point is a handful of settings, not a payload: bounded in size and nesting.
MAX_POINT_BYTES = 64 * 1024
MAX_VALUE_DEPTH = 8


def check_timeouts(timeouts: types_pb2.Timeouts, field: str = "timeouts") -> None:
    """Every limit is finite and between 0 (the default) and :data:`MAX_TIMEOUT_S` seconds.

    Raises:
        InvalidArgument: naming ``timeouts.<limit>``.
    """
    for name in ("load_s", "encode_s", "decode_s", "experiment_s"):
        value = getattr(timeouts, name)
        if not math.isfinite(value) or value < 0 or value > MAX_TIMEOUT_S:
            raise InvalidArgument(
                f"{field}.{name}", f"{value} must be between 0 (default) and {MAX_TIMEOUT_S:g} seconds"
            )


def check_points(points: Sequence[types_pb2.ParameterPoint], field: str = "points") -> None:
    """At most :data:`MAX_POINTS` points of at most :data:`MAX_POINT_BYTES` each; parameter names are
    Python identifiers, values are set and nested at most :data:`MAX_VALUE_DEPTH` levels.

    Raises:
        InvalidArgument: naming the point or parameter, e.g. ``points[0].params['q']``.
    """
    if len(points) > MAX_POINTS:
        raise InvalidArgument(field, f"{len(points)} parameter points exceed the limit of {MAX_POINTS}")
    for i, point in enumerate(points):
        if point.ByteSize() > MAX_POINT_BYTES:
            raise InvalidArgument(
                f"{field}[{i}]", f"{point.ByteSize()} bytes exceed the limit of {MAX_POINT_BYTES} bytes per point"
            )
        for key, value in point.params.items():
            if not key.isidentifier():
                raise InvalidArgument(f"{field}[{i}].params", f"{echo(key)} is not a Python identifier")
            if value.WhichOneof("kind") is None:
                raise InvalidArgument(f"{field}[{i}].params[{key!r}]", "empty value")
            if _depth(value) > MAX_VALUE_DEPTH:
                raise InvalidArgument(f"{field}[{i}].params[{key!r}]", f"nested deeper than {MAX_VALUE_DEPTH} levels")


def _depth(value: types_pb2.Value) -> int:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return 1 + max((_depth(v) for v in value.list_value.values), default=0)
    if kind == "map_value":
        return 1 + max((_depth(e.value) for e in value.map_value.entries), default=0)
    return 1


def check_device(
    device: types_pb2.Device.ValueType, allowed: Sequence[types_pb2.Device.ValueType], field: str = "device"
) -> None:
    """``device`` (DEVICE_UNSPECIFIED reads as DEVICE_CPU) is one of ``allowed``.

    Raises:
        InvalidArgument: naming ``field``.
    """
    if (device or types_pb2.DEVICE_CPU) not in allowed:
        names = ", ".join(types_pb2.Device.Name(d) for d in allowed)
        raise InvalidArgument(field, f"{device} is not one of {names}")
