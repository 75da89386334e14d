"""Conversion between Python values and ``codecbench.v1.Value`` (the seed contract's dicts).

Supported: None, bool, int (64-bit), float, str, bytes, list/tuple, dict with str keys, numpy
arrays and torch tensors. Anything else is refused with a message naming the path of the
offending entry, e.g. ``encoding_data['meta'][2]: unsupported type set``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, SupportsFloat, SupportsInt, cast

from codecbench.v1 import types_pb2

if TYPE_CHECKING:  # for annotations only: see below
    import numpy as np
    import torch

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# numpy and torch are not imported here: the CLI and the orchestrator convert plain values and should
# not pay their import (numpy 0.1 s, torch 2 s). Their types are looked up with _loaded_types, and
# codecbench.tensors (which needs numpy) is imported where an array or a tensor is converted.


def _loaded_types(module: str, *names: str) -> tuple[type, ...]:
    """The named types of ``module`` if it is already imported, else none: an object of such a type
    cannot exist before its library is loaded, so checking against an empty tuple loses nothing."""
    library = sys.modules.get(module)
    return tuple(getattr(library, name) for name in names) if library is not None else ()


class ValueConversionError(TypeError):
    """A value that has no protocol form; the message names where it sits."""


def to_value(obj: Any, path: str = "value") -> types_pb2.Value:
    """Converts a Python object to a Value message.

    Raises:
        ValueConversionError: an unsupported type, a non-str dict key, or an int beyond 64 bits.
    """
    if obj is None:
        return types_pb2.Value(null_value=True)
    if isinstance(obj, (bool, *_loaded_types("numpy", "bool_"))):
        return types_pb2.Value(bool_value=bool(obj))
    if isinstance(obj, (int, *_loaded_types("numpy", "integer"))):
        # The casts restore what isinstance against a runtime tuple of types cannot tell mypy.
        number = int(cast(SupportsInt, obj))
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueConversionError(f"{path}: integer {obj} does not fit in 64 bits")
        return types_pb2.Value(int_value=number)
    if isinstance(obj, (float, *_loaded_types("numpy", "floating"))):
        return types_pb2.Value(float_value=float(cast(SupportsFloat, obj)))
    if isinstance(obj, str):
        return types_pb2.Value(string_value=obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return types_pb2.Value(bytes_value=bytes(obj))
    if isinstance(obj, _loaded_types("torch", "Tensor")):
        from codecbench import tensors

        try:
            return types_pb2.Value(torch_tensor_value=tensors.from_torch(cast("torch.Tensor", obj)))
        except TypeError as exc:
            raise ValueConversionError(f"{path}: {exc}") from exc
    if isinstance(obj, _loaded_types("numpy", "ndarray")):
        from codecbench import tensors

        try:
            return types_pb2.Value(ndarray_value=tensors.from_numpy(cast("np.ndarray[Any, Any]", obj)))
        except TypeError as exc:
            raise ValueConversionError(f"{path}: {exc}") from exc
    if isinstance(obj, (list, tuple)):
        items = [to_value(item, f"{path}[{i}]") for i, item in enumerate(obj)]
        return types_pb2.Value(list_value=types_pb2.ValueList(values=items))
    if isinstance(obj, dict):
        entries = []
        for key, item in obj.items():
            if not isinstance(key, str):
                raise ValueConversionError(f"{path}: dict key {key!r} is {type(key).__name__}, keys must be str")
            entries.append(types_pb2.ValueMapEntry(key=key, value=to_value(item, f"{path}[{key!r}]")))
        return types_pb2.Value(map_value=types_pb2.ValueMap(entries=entries))
    raise ValueConversionError(f"{path}: unsupported type {type(obj).__name__}")


def from_value(value: types_pb2.Value) -> Any:
    """Converts a Value message back to Python (lists stay lists; tensors come back on CPU).

    Raises:
        tensors.TensorFormatError: a tensor whose data does not match its shape.
    """
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    if kind == "map_value":
        return {e.key: from_value(e.value) for e in value.map_value.entries}
    if kind in ("torch_tensor_value", "ndarray_value"):
        from codecbench import tensors

        if kind == "torch_tensor_value":
            return tensors.to_torch(value.torch_tensor_value)
        return tensors.to_numpy(value.ndarray_value)
    return getattr(value, kind)


def params_to_python(point: types_pb2.ParameterPoint) -> dict[str, Any]:
    """A parameter point as keyword arguments, in key order (e.g. ``{"quality": 50}``)."""
    return {key: from_value(point.params[key]) for key in sorted(point.params)}


def params_from_python(params: dict[str, Any]) -> types_pb2.ParameterPoint:
    """Keyword arguments as a parameter point.

    Raises:
        ValueConversionError: a value with no protocol form.
    """
    return types_pb2.ParameterPoint(params={k: to_value(v, k) for k, v in params.items()})


def format_params(point: types_pb2.ParameterPoint) -> str:
    """``quality=50,mode='fast'``: a short label for tables and plots."""
    return ",".join(f"{k}={v!r}" for k, v in params_to_python(point).items())
