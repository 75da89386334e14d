from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    D_TYPE_UNSPECIFIED: _ClassVar[DType]
    D_TYPE_UINT8: _ClassVar[DType]
    D_TYPE_INT8: _ClassVar[DType]
    D_TYPE_INT16: _ClassVar[DType]
    D_TYPE_INT32: _ClassVar[DType]
    D_TYPE_INT64: _ClassVar[DType]
    D_TYPE_FLOAT16: _ClassVar[DType]
    D_TYPE_BFLOAT16: _ClassVar[DType]
    D_TYPE_FLOAT32: _ClassVar[DType]
    D_TYPE_FLOAT64: _ClassVar[DType]
    D_TYPE_BOOL: _ClassVar[DType]

class Contract(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTRACT_UNSPECIFIED: _ClassVar[Contract]
    CONTRACT_CODEC: _ClassVar[Contract]
    CONTRACT_SEED: _ClassVar[Contract]

class Device(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_UNSPECIFIED: _ClassVar[Device]
    DEVICE_CPU: _ClassVar[Device]
    DEVICE_CUDA: _ClassVar[Device]
    DEVICE_ANY: _ClassVar[Device]

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_QUEUE: _ClassVar[Phase]
    PHASE_SETUP: _ClassVar[Phase]
    PHASE_LOAD: _ClassVar[Phase]
    PHASE_ENCODE: _ClassVar[Phase]
    PHASE_DECODE: _ClassVar[Phase]
    PHASE_METRICS: _ClassVar[Phase]

class Isolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISOLATION_UNSPECIFIED: _ClassVar[Isolation]
    ISOLATION_PROCESS: _ClassVar[Isolation]
    ISOLATION_BWRAP: _ClassVar[Isolation]
D_TYPE_UNSPECIFIED: DType
D_TYPE_UINT8: DType
D_TYPE_INT8: DType
D_TYPE_INT16: DType
D_TYPE_INT32: DType
D_TYPE_INT64: DType
D_TYPE_FLOAT16: DType
D_TYPE_BFLOAT16: DType
D_TYPE_FLOAT32: DType
D_TYPE_FLOAT64: DType
D_TYPE_BOOL: DType
CONTRACT_UNSPECIFIED: Contract
CONTRACT_CODEC: Contract
CONTRACT_SEED: Contract
DEVICE_UNSPECIFIED: Device
DEVICE_CPU: Device
DEVICE_CUDA: Device
DEVICE_ANY: Device
PHASE_UNSPECIFIED: Phase
PHASE_QUEUE: Phase
PHASE_SETUP: Phase
PHASE_LOAD: Phase
PHASE_ENCODE: Phase
PHASE_DECODE: Phase
PHASE_METRICS: Phase
ISOLATION_UNSPECIFIED: Isolation
ISOLATION_PROCESS: Isolation
ISOLATION_BWRAP: Isolation

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null_value", "bool_value", "int_value", "float_value", "string_value", "bytes_value", "list_value", "map_value", "torch_tensor_value", "ndarray_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    MAP_VALUE_FIELD_NUMBER: _ClassVar[int]
    TORCH_TENSOR_VALUE_FIELD_NUMBER: _ClassVar[int]
    NDARRAY_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: bool
    bool_value: bool
    int_value: int
    float_value: float
    string_value: str
    bytes_value: bytes
    list_value: ValueList
    map_value: ValueMap
    torch_tensor_value: Tensor
    ndarray_value: Tensor
    def __init__(self, null_value: _Optional[bool] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., string_value: _Optional[str] = ..., bytes_value: _Optional[bytes] = ..., list_value: _Optional[_Union[ValueList, _Mapping]] = ..., map_value: _Optional[_Union[ValueMap, _Mapping]] = ..., torch_tensor_value: _Optional[_Union[Tensor, _Mapping]] = ..., ndarray_value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class ValueMap(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ValueMapEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[ValueMapEntry, _Mapping]]] = ...) -> None: ...

class ValueMapEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: Value
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class ParameterPoint(_message.Message):
    __slots__ = ("params",)
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.MessageMap[str, Value]
    def __init__(self, params: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("name", "sha256", "size_bytes", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size_bytes: int
    content: bytes
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content: _Optional[bytes] = ...) -> None: ...

class AgentBundle(_message.Message):
    __slots__ = ("name", "files", "entry_module", "contract")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_MODULE_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    name: str
    files: _containers.RepeatedCompositeFieldContainer[BlobRef]
    entry_module: str
    contract: Contract
    def __init__(self, name: _Optional[str] = ..., files: _Optional[_Iterable[_Union[BlobRef, _Mapping]]] = ..., entry_module: _Optional[str] = ..., contract: _Optional[_Union[Contract, str]] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("name", "images")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    images: _containers.RepeatedCompositeFieldContainer[BlobRef]
    def __init__(self, name: _Optional[str] = ..., images: _Optional[_Iterable[_Union[BlobRef, _Mapping]]] = ...) -> None: ...

class Timeouts(_message.Message):
    __slots__ = ("load_s", "encode_s", "decode_s", "experiment_s")
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    ENCODE_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_S_FIELD_NUMBER: _ClassVar[int]
    load_s: float
    encode_s: float
    decode_s: float
    experiment_s: float
    def __init__(self, load_s: _Optional[float] = ..., encode_s: _Optional[float] = ..., decode_s: _Optional[float] = ..., experiment_s: _Optional[float] = ...) -> None: ...
