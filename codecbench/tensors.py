"""Conversion between ``codecbench.v1.Tensor`` and numpy arrays / torch tensors.

A Tensor travels as raw little-endian bytes with its dtype and shape: no pickle, no JSON, no
base64, so every bit arrives as it was sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from codecbench import validation
from codecbench.v1 import types_pb2

if TYPE_CHECKING:  # imported where a tensor is packed or made, so the CLI and orchestrator never load it
    import torch

_NUMPY_OF: dict[types_pb2.DType.ValueType, np.dtype[Any]] = {
    types_pb2.D_TYPE_UINT8: np.dtype("<u1"),
    types_pb2.D_TYPE_INT8: np.dtype("<i1"),
    types_pb2.D_TYPE_INT16: np.dtype("<i2"),
    types_pb2.D_TYPE_INT32: np.dtype("<i4"),
    types_pb2.D_TYPE_INT64: np.dtype("<i8"),
    types_pb2.D_TYPE_FLOAT16: np.dtype("<f2"),
    types_pb2.D_TYPE_FLOAT32: np.dtype("<f4"),
    types_pb2.D_TYPE_FLOAT64: np.dtype("<f8"),
    types_pb2.D_TYPE_BOOL: np.dtype("?"),
}
_DTYPE_OF = {dt.newbyteorder("=").str if dt.itemsize > 1 else dt.str: code for code, dt in _NUMPY_OF.items()}


class TensorFormatError(ValueError):
    """A Tensor message whose dtype, shape and data length do not agree."""


# The format rules (dimensions, dtypes, data length) live in codecbench.validation, numpy-free.
dtype_name = validation.dtype_name


def from_numpy(array: np.ndarray) -> types_pb2.Tensor:
    """Packs an array of a supported dtype (any byte order) into a Tensor message.

    Raises:
        TypeError: the dtype has no protocol equivalent (e.g. complex, object).
    """
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=").str if arr.dtype.itemsize > 1 else arr.dtype.str
    code = _DTYPE_OF.get(key)
    if code is None:
        raise TypeError(f"unsupported array dtype {arr.dtype}")
    data = np.ascontiguousarray(arr, dtype=_NUMPY_OF[code]).tobytes()
    return types_pb2.Tensor(dtype=code, shape=list(arr.shape), data=data)


def from_torch(tensor: torch.Tensor) -> types_pb2.Tensor:
    """Packs a torch tensor (any device) into a Tensor message; bfloat16 keeps its 2-byte layout.

    Raises:
        TypeError: the dtype has no protocol equivalent.
    """
    import torch  # lazily: see the TYPE_CHECKING import above

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        raw = t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
        return types_pb2.Tensor(dtype=types_pb2.D_TYPE_BFLOAT16, shape=list(t.shape), data=raw)
    return from_numpy(t.contiguous().numpy())


def _shape(message: types_pb2.Tensor) -> tuple[int, ...]:
    """The message's shape, checked against its dtype and data length by the same pure-Python check
    that the orchestrator applies to tensor parameters (:func:`codecbench.validation.tensor_problem`)."""
    problem = validation.tensor_problem(message)
    if problem:
        raise TensorFormatError(problem)
    return tuple(int(s) for s in message.shape)


def to_numpy(message: types_pb2.Tensor) -> np.ndarray:
    """Unpacks a Tensor message into a writable numpy array in native byte order.

    Raises:
        TensorFormatError: unknown dtype (bfloat16 has no numpy form), or a data length that does
            not match the shape.
    """
    if message.dtype not in _NUMPY_OF:
        raise TensorFormatError(f"{dtype_name(message.dtype)} has no numpy equivalent")
    dt = _NUMPY_OF[message.dtype]
    shape = _shape(message)
    return np.frombuffer(message.data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="), copy=True)


def to_torch(message: types_pb2.Tensor) -> torch.Tensor:
    """Unpacks a Tensor message into a CPU torch tensor.

    Raises:
        TensorFormatError: as :func:`to_numpy`.
    """
    import torch  # lazily: see the TYPE_CHECKING import above

    if message.dtype == types_pb2.D_TYPE_BFLOAT16:
        shape = _shape(message)
        raw = np.frombuffer(message.data, dtype="<i2").astype(np.int16).reshape(shape)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16)
    return torch.from_numpy(to_numpy(message))
