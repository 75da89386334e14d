from codecbench.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_AGENT_LOAD_ERROR: _ClassVar[ErrorKind]
    ERROR_KIND_SIGNATURE_MISMATCH: _ClassVar[ErrorKind]
    ERROR_KIND_AGENT_EXCEPTION: _ClassVar[ErrorKind]
    ERROR_KIND_INVALID_OUTPUT: _ClassVar[ErrorKind]
    ERROR_KIND_TIMEOUT: _ClassVar[ErrorKind]
    ERROR_KIND_MEMORY_LIMIT: _ClassVar[ErrorKind]
    ERROR_KIND_SANDBOX_CRASH: _ClassVar[ErrorKind]
    ERROR_KIND_WORKER_LOST: _ClassVar[ErrorKind]
    ERROR_KIND_CANCELLED: _ClassVar[ErrorKind]
    ERROR_KIND_INTERNAL: _ClassVar[ErrorKind]
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_AGENT_LOAD_ERROR: ErrorKind
ERROR_KIND_SIGNATURE_MISMATCH: ErrorKind
ERROR_KIND_AGENT_EXCEPTION: ErrorKind
ERROR_KIND_INVALID_OUTPUT: ErrorKind
ERROR_KIND_TIMEOUT: ErrorKind
ERROR_KIND_MEMORY_LIMIT: ErrorKind
ERROR_KIND_SANDBOX_CRASH: ErrorKind
ERROR_KIND_WORKER_LOST: ErrorKind
ERROR_KIND_CANCELLED: ErrorKind
ERROR_KIND_INTERNAL: ErrorKind

class Frame(_message.Message):
    __slots__ = ("file", "line", "function", "code")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    function: str
    code: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., function: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("kind", "message", "phase", "point_index", "image_index", "image_name", "exception_type", "frames", "location", "expected", "actual", "limit_s", "elapsed_s", "exit_code", "signal", "retryable")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    POINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    message: str
    phase: _types_pb2.Phase
    point_index: int
    image_index: int
    image_name: str
    exception_type: str
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    location: str
    expected: str
    actual: str
    limit_s: float
    elapsed_s: float
    exit_code: int
    signal: int
    retryable: bool
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ..., phase: _Optional[_Union[_types_pb2.Phase, str]] = ..., point_index: _Optional[int] = ..., image_index: _Optional[int] = ..., image_name: _Optional[str] = ..., exception_type: _Optional[str] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., location: _Optional[str] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ..., limit_s: _Optional[float] = ..., elapsed_s: _Optional[float] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., retryable: _Optional[bool] = ...) -> None: ...
