"""codecbench.values (the seed contract's typed dicts) and codecbench.tensors (raw tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from codecbench import tensors, values
from codecbench.v1 import types_pb2


def _roundtrip(obj: object) -> Any:
    """Through the wire format: to a Value, serialized, parsed, and back."""
    wire = values.to_value(obj, "encoding_data").SerializeToString(deterministic=True)
    return values.from_value(types_pb2.Value.FromString(wire))


# ---- values ----

def test_nested_dict_round_trip_keeps_types_and_bits() -> None:
    payload = bytes(range(256)) * 3 + b"\x00\xff\n\r"  # every byte value, NULs and newlines
    obj = {
        "bitstream": payload,
        "meta": {"shape": [3, 40, 48], "name": "ünïcode ✓", "ratio": 0.1, "flag": True, "missing": None},
        "levels": (1, -2, 2**63 - 1, -(2**63)),
        "array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "tensor": torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3),
        "nested": [[b"a", {"deep": [np.int16(-7), np.float32(0.5), np.bool_(False)]}]],
        "empty": {},
        "nan": float("nan"),
    }
    back = _roundtrip(obj)
    assert list(back) == list(obj)  # insertion order kept
    assert back["bitstream"] == payload and isinstance(back["bitstream"], bytes)
    assert back["meta"] == obj["meta"]
    assert back["levels"] == list(obj["levels"])  # tuples come back as lists
    assert isinstance(back["array"], np.ndarray) and back["array"].dtype == np.float32
    assert np.array_equal(back["array"], obj["array"])
    assert isinstance(back["tensor"], torch.Tensor) and back["tensor"].dtype == torch.float64
    assert torch.equal(back["tensor"], obj["tensor"])
    assert back["nested"] == [[b"a", {"deep": [-7, 0.5, False]}]]
    assert type(back["nested"][0][1]["deep"][0]) is int and type(back["nested"][0][1]["deep"][2]) is bool
    assert back["empty"] == {}
    assert np.isnan(back["nan"])


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor([[0.1, -2.5], [3.25, 1e-3]], dtype=torch.bfloat16),
        torch.tensor([1.5, -0.0, 65504.0], dtype=torch.float16),
        torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4),
        torch.tensor([-(2**63), 2**63 - 1], dtype=torch.int64),
        torch.tensor([True, False, True]),
        torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # not contiguous
        torch.zeros(0, 5, dtype=torch.int32),
    ],
    ids=["bfloat16", "float16", "uint8", "int64", "bool", "transposed", "empty"],
)
def test_torch_tensor_round_trip_is_exact(tensor: torch.Tensor) -> None:
    back = _roundtrip({"t": tensor})["t"]
    assert back.dtype == tensor.dtype and list(back.shape) == list(tensor.shape)
    assert torch.equal(back, tensor)
    # Bit for bit (-0.0 stays -0.0, bfloat16 keeps its mantissa bits).
    assert tensors.from_torch(back).data == tensors.from_torch(tensor).data


def test_bfloat16_keeps_its_two_byte_layout() -> None:
    t = torch.tensor([1.0, -2.0, 0.15625], dtype=torch.bfloat16)
    message = tensors.from_torch(t)
    assert message.dtype == types_pb2.D_TYPE_BFLOAT16 and len(message.data) == 2 * 3
    assert message.data == t.view(torch.int16).numpy().astype("<i2").tobytes()
    with pytest.raises(tensors.TensorFormatError, match="no numpy equivalent"):
        tensors.to_numpy(message)


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, np.uint64(2**64 - 1)], ids=["2^63", "-2^63-1", "uint64-max"])
def test_integers_beyond_64_bits_are_refused_with_their_path(big) -> None:
    with pytest.raises(values.ValueConversionError, match=r"encoding_data\['meta'\]\[2\]: integer .* 64 bits"):
        values.to_value({"meta": [0, 1, big]}, "encoding_data")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"s": {1, 2}}, r"value\['s'\]: unsupported type set"),
        ({1: "x"}, r"value: dict key 1 is int, keys must be str"),
        ({"c": np.zeros(2, dtype=np.complex64)}, r"value\['c'\]: unsupported array dtype complex64"),
        ([object()], r"value\[0\]: unsupported type object"),
    ],
    ids=["set", "int-key", "complex-array", "object"],
)
def test_unsupported_values_are_refused_naming_where(obj, message) -> None:
    with pytest.raises(values.ValueConversionError, match=message):
        values.to_value(obj)


def test_parameter_points() -> None:
    point = values.params_from_python({"quality": 50, "mode": "fast", "scale": 0.5})
    assert values.params_to_python(point) == {"mode": "fast", "quality": 50, "scale": 0.5}
    assert type(values.params_to_python(point)["quality"]) is int
    assert values.format_params(point) == "mode='fast',quality=50,scale=0.5"
    assert values.from_value(types_pb2.Value()) is None  # an unset value reads as None


# ---- tensors ----

@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "?"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_numpy_round_trip_any_byte_order(dtype: str, order: str) -> None:
    rng = np.random.default_rng(1)
    dt = np.dtype(dtype)
    array = (rng.random((3, 5, 2)) * 100).astype(dt.newbyteorder(order) if dt.itemsize > 1 else dt)
    message = tensors.from_numpy(array)
    assert list(message.shape) == [3, 5, 2] and len(message.data) == array.size * array.itemsize
    back = tensors.to_numpy(message)
    assert back.dtype.isnative and back.flags.writeable
    assert np.array_equal(back, array)


def test_little_endian_on_the_wire() -> None:
    message = tensors.from_numpy(np.array([1, 256], dtype=">u2").astype(np.int16))
    assert message.data == b"\x01\x00\x00\x01"


def _message(dtype: int, shape: list[int], data: bytes) -> types_pb2.Tensor:
    return types_pb2.Tensor(dtype=dtype, shape=shape, data=data)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (_message(types_pb2.D_TYPE_UINT8, [3, 4, 4], bytes(47)), r"shape \[3, 4, 4\] of uint8 needs 48 bytes, got 47"),
        (_message(types_pb2.D_TYPE_FLOAT32, [2, 2], bytes(17)), r"needs 16 bytes, got 17"),
        (_message(types_pb2.D_TYPE_INT16, [-1, 4], bytes(8)), r"negative dimension"),
        # 2**32 * 2**32 wraps to 0 in 64-bit arithmetic: it must not match an empty buffer.
        (_message(types_pb2.D_TYPE_UINT8, [2**32, 2**32], b""), r"needs 18446744073709551616 bytes, got 0"),
        (_message(types_pb2.D_TYPE_UNSPECIFIED, [1], b"\x00"), r"no numpy equivalent"),
    ],
    ids=["short", "long", "negative", "overflow", "no-dtype"],
)
def test_shape_and_length_must_agree(message, match) -> None:
    with pytest.raises(tensors.TensorFormatError, match=match):
        tensors.to_numpy(message)
    with pytest.raises(tensors.TensorFormatError, match=match):
        tensors.to_torch(message)


@pytest.mark.parametrize(
    ("shape", "size"), [([2, 3], 11), ([2**32, 2**32], 0), ([-2, 1], 4)], ids=["short", "overflow", "negative"]
)
def test_bfloat16_shape_and_length_must_agree(shape, size) -> None:
    with pytest.raises(tensors.TensorFormatError):
        tensors.to_torch(_message(types_pb2.D_TYPE_BFLOAT16, shape, bytes(size)))


def test_a_bad_tensor_inside_a_value_is_refused() -> None:
    value = types_pb2.Value(ndarray_value=_message(types_pb2.D_TYPE_INT32, [4], bytes(15)))
    with pytest.raises(tensors.TensorFormatError):
        values.from_value(types_pb2.Value(list_value=types_pb2.ValueList(values=[value])))


def test_unsupported_dtypes_are_refused() -> None:
    with pytest.raises(TypeError, match="complex128"):
        tensors.from_numpy(np.zeros(2, dtype=np.complex128))
    with pytest.raises(TypeError):
        tensors.from_torch(torch.zeros(2, dtype=torch.complex64))
