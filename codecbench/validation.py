"""Request checks shared by the orchestrator and the worker.

Each ``check_*`` function raises :class:`codecbench.errors.InvalidArgument` naming the first bad
field and its limit (``points[2].params['q']: nested deeper than 8 levels``), and returns None when
the value is acceptable.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Mapping, Sequence

from codecbench.errors import REASON_TENSOR_MALFORMED, InvalidArgument, echo
from codecbench.v1 import types_pb2

MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_POINTS = 1000
# Decoded images kept per parameter point (CreateExperimentRequest.keep_reconstructions): PNG blobs
# of up to a few MB each, stored per experiment, so a handful to look at, not a dataset copy.
MAX_KEEP_RECONSTRUCTIONS = 16
# A parameter point is a handful of settings, not a payload: bounded in size and nesting. The size
# bound also bounds a tensor parameter, whose data must have every byte its shape needs.
MAX_POINT_BYTES = 64 * 1024
MAX_VALUE_DEPTH = 8
# The names the agent contracts pass themselves (sandbox/contracts.py): a parameter of the same name
# would replace them (`--param device=cuda:7` once made the agent see cuda:7 with the image on the CPU).
RESERVED_PARAMS = ("device", "image", "bitstream", "encoding_data")
# Labels tag an experiment (team=codecs); a list filter matches a few of them. Both bounded: 20,000
# filters once made SQLite refuse the query ("Expression tree is too large") or time out.
MAX_LABELS = 64
MAX_LABEL_FILTERS = 16
MAX_LABEL_KEY_CHARS = 200
MAX_LABEL_VALUE_CHARS = 1000
# Identifiers (experiment, worker, request ids) and names (datasets, agents, hosts): short strings.
MAX_ID_CHARS = 200
MAX_NAME_CHARS = 255
# A bundle file's path inside the bundle (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096
# A worker's devices: a few GPUs and the CPU.
MAX_DEVICES = 64
# numpy supports at most 64 dimensions; no image codec needs more than a handful.
MAX_TENSOR_DIMS = 32
# Bytes per element of each protocol dtype: the tensor format is checked without numpy or torch,
# which the orchestrator never loads (tests/test_imports.py).
ITEMSIZE: dict[types_pb2.DType.ValueType, int] = {
    types_pb2.D_TYPE_UINT8: 1,
    types_pb2.D_TYPE_INT8: 1,
    types_pb2.D_TYPE_INT16: 2,
    types_pb2.D_TYPE_INT32: 4,
    types_pb2.D_TYPE_INT64: 8,
    types_pb2.D_TYPE_FLOAT16: 2,
    types_pb2.D_TYPE_BFLOAT16: 2,
    types_pb2.D_TYPE_FLOAT32: 4,
    types_pb2.D_TYPE_FLOAT64: 8,
    types_pb2.D_TYPE_BOOL: 1,
}


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
    """At most :data:`MAX_POINTS` points, each acceptable to :func:`check_point`.

    Raises:
        InvalidArgument: naming the point or parameter, e.g. ``points[0].params['q']``.
    """
    if len(points) > MAX_POINTS:
        raise InvalidArgument(field, f"{len(points)} parameter points exceed the limit of {MAX_POINTS}")
    for i, point in enumerate(points):
        check_point(point, f"{field}[{i}]")


def check_point(point: types_pb2.ParameterPoint, field: str = "params") -> None:
    """A point of at most :data:`MAX_POINT_BYTES`; parameter names are NFKC-normalised Python
    identifiers (the only names a parameter can have) other than :data:`RESERVED_PARAMS` and their
    NFKC variants, values are set and nested at most :data:`MAX_VALUE_DEPTH` levels,
    floats are finite, and tensors well-formed (:func:`tensor_problem`).

    Raises:
        InvalidArgument: naming the parameter, e.g. ``points[0].params['device']`` (reason
            ``TENSOR_MALFORMED`` for a malformed tensor).
    """
    if point.ByteSize() > MAX_POINT_BYTES:
        raise InvalidArgument(field, f"{point.ByteSize()} bytes exceed the limit of {MAX_POINT_BYTES} bytes per point")
    for key, value in point.params.items():
        if not key.isidentifier():
            raise InvalidArgument(f"{field}.params", f"{echo(key)} is not a Python identifier")
        normal = unicodedata.normalize("NFKC", key)
        if normal in RESERVED_PARAMS and normal != key:
            raise InvalidArgument(
                f"{field}.params[{key!r}]",
                f"{key!r} is a variant of the reserved name {normal!r} (NFKC): the contracts pass "
                f"{', '.join(RESERVED_PARAMS)} themselves",
            )
        if normal != key:
            # Python reads identifiers NFKC-normalised (PEP 3131): a function's parameter is named
            # normal, so this key could never reach it.
            raise InvalidArgument(
                f"{field}.params[{key!r}]",
                f"{key!r} is not NFKC-normalised: Python names the parameter {normal!r} (PEP 3131), so this "
                f"name can never bind; send {normal!r}",
            )
        if key in RESERVED_PARAMS:
            raise InvalidArgument(
                f"{field}.params[{key!r}]",
                f"{key!r} is reserved: the contracts pass {', '.join(RESERVED_PARAMS)} themselves "
                "(choose the device with the experiment's device field, e.g. codecbench run --device cuda)",
            )
        if _depth(value) > MAX_VALUE_DEPTH:
            raise InvalidArgument(f"{field}.params[{key!r}]", f"nested deeper than {MAX_VALUE_DEPTH} levels")
        _check_setting(value, f"{field}.params[{key!r}]")


def _depth(value: types_pb2.Value) -> int:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return 1 + max((_depth(v) for v in value.list_value.values), default=0)
    if kind == "map_value":
        return 1 + max((_depth(e.value) for e in value.map_value.entries), default=0)
    return 1


def _leaves(value: types_pb2.Value, path: str = "") -> Iterator[tuple[str, types_pb2.Value]]:
    """Every non-container value inside ``value`` with its path below it (``[2]['a']``)."""
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        for i, item in enumerate(value.list_value.values):
            yield from _leaves(item, f"{path}[{i}]")
    elif kind == "map_value":
        for entry in value.map_value.entries:
            yield from _leaves(entry.value, f"{path}[{entry.key!r}]")
    else:
        yield path, value


def _check_setting(value: types_pb2.Value, field: str) -> None:
    """Floats are finite (a NaN or an infinity is no setting) and tensors well-formed, at any depth.

    Raises:
        InvalidArgument: naming ``field``; reason ``TENSOR_MALFORMED`` for a tensor.
    """
    for path, leaf in _leaves(value):
        where = f" (at {path})" if path else ""
        kind = leaf.WhichOneof("kind")
        if kind is None:
            # Not read as None: a client that forgot to set a kind must hear so (null_value is None).
            raise InvalidArgument(field, f"a Value with no kind set{where}: set exactly one of its fields "
                                  "(null_value: true for None)")
        if kind == "float_value" and not math.isfinite(leaf.float_value):
            raise InvalidArgument(field, f"{leaf.float_value}{where}: a parameter point must be a finite setting")
        if kind in ("torch_tensor_value", "ndarray_value"):
            problem = tensor_problem(getattr(leaf, kind))
            if problem:
                raise InvalidArgument(field, f"{problem}{where}", reason=REASON_TENSOR_MALFORMED)


def dtype_name(dtype: types_pb2.DType.ValueType) -> str:
    """``D_TYPE_FLOAT32`` -> ``"float32"``; ``"dtype 77"`` for a value the protocol does not know."""
    if dtype not in types_pb2.DType.values():
        return f"dtype {dtype}"
    return types_pb2.DType.Name(dtype).removeprefix("D_TYPE_").lower()


def tensor_problem(tensor: types_pb2.Tensor) -> str:
    """What is wrong with a Tensor message's format, or ``""``: the dtype is one of :data:`ITEMSIZE`,
    at most :data:`MAX_TENSOR_DIMS` dimensions, none negative, and the data has exactly
    ``prod(shape) * itemsize`` bytes (exact integers: a huge shape cannot wrap around to match).

    Pure Python, no numpy: the orchestrator checks tensor parameters with it, and
    :mod:`codecbench.tensors` before unpacking one.
    """
    if tensor.dtype not in ITEMSIZE:
        return f"{dtype_name(tensor.dtype)} is not a tensor dtype"
    shape = [int(s) for s in tensor.shape]
    if len(shape) > MAX_TENSOR_DIMS:
        return f"{len(shape)} dimensions exceed the limit of {MAX_TENSOR_DIMS}"
    if any(s < 0 for s in shape):
        return f"negative dimension in shape {shape}"
    expected = math.prod(shape) * ITEMSIZE[tensor.dtype]
    if len(tensor.data) != expected:
        return f"shape {echo(shape)} of {dtype_name(tensor.dtype)} needs {expected} bytes, got {len(tensor.data)}"
    return ""


# PostgreSQL text cannot hold the NUL character (psycopg refuses it even as a query parameter), so a
# string the orchestrator stores or looks up must not contain it, on every store alike.
NUL = "\x00"
NUL_PROBLEM = "contains the NUL character (U+0000), which text fields may not hold"


def check_labels(labels: Mapping[str, str], max_count: int = MAX_LABELS, field: str = "labels") -> None:
    """At most ``max_count`` labels (:data:`MAX_LABELS` on an experiment, :data:`MAX_LABEL_FILTERS`
    in a list filter); keys of 1 to :data:`MAX_LABEL_KEY_CHARS` characters, values of at most
    :data:`MAX_LABEL_VALUE_CHARS`.

    Raises:
        InvalidArgument: naming ``labels`` or ``labels['key']``.
    """
    if len(labels) > max_count:
        raise InvalidArgument(field, f"{len(labels)} labels: at most {max_count}")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_KEY_CHARS or NUL in key:
            raise InvalidArgument(field, f"key {echo(key)} must have 1 to {MAX_LABEL_KEY_CHARS} characters, none NUL")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidArgument(f"{field}[{key!r}]", f"value longer than {MAX_LABEL_VALUE_CHARS} characters")
        if NUL in value:
            raise InvalidArgument(f"{field}[{key!r}]", NUL_PROBLEM)


def check_text(text: str, field: str, max_chars: int, required: bool = False) -> None:
    """A string field of at most ``max_chars`` characters without NUL (and not empty when ``required``).

    Raises:
        InvalidArgument: naming ``field`` and the limit.
    """
    if required and not text:
        raise InvalidArgument(field, "missing")
    if len(text) > max_chars:
        raise InvalidArgument(field, f"{len(text)} characters exceed the limit of {max_chars}")
    if NUL in text:
        raise InvalidArgument(field, NUL_PROBLEM)


def check_count(count: int, field: str, limit: int) -> None:
    """A repeated field of at most ``limit`` entries.

    Raises:
        InvalidArgument: naming ``field`` and the limit.
    """
    if count > limit:
        raise InvalidArgument(field, f"{count} entries exceed the limit of {limit}")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` contains a control character (NUL, newline, escape, DEL, C1 controls)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


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
