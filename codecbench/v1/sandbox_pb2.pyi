from codecbench.v1 import errors_pb2 as _errors_pb2
from codecbench.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SandboxRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_ROLE_UNSPECIFIED: _ClassVar[SandboxRole]
    SANDBOX_ROLE_ENCODER: _ClassVar[SandboxRole]
    SANDBOX_ROLE_DECODER: _ClassVar[SandboxRole]
SANDBOX_ROLE_UNSPECIFIED: SandboxRole
SANDBOX_ROLE_ENCODER: SandboxRole
SANDBOX_ROLE_DECODER: SandboxRole

class SandboxLoad(_message.Message):
    __slots__ = ("agent", "role", "device")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentBundle
    role: SandboxRole
    device: _types_pb2.Device
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., role: _Optional[_Union[SandboxRole, str]] = ..., device: _Optional[_Union[_types_pb2.Device, str]] = ...) -> None: ...

class SandboxSetParams(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _types_pb2.ParameterPoint
    def __init__(self, params: _Optional[_Union[_types_pb2.ParameterPoint, _Mapping]] = ...) -> None: ...

class SandboxEncode(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _types_pb2.Tensor
    def __init__(self, image: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...

class SandboxDecode(_message.Message):
    __slots__ = ("bitstream", "encoding_data")
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    ENCODING_DATA_FIELD_NUMBER: _ClassVar[int]
    bitstream: bytes
    encoding_data: _types_pb2.Value
    def __init__(self, bitstream: _Optional[bytes] = ..., encoding_data: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...

class SandboxRequest(_message.Message):
    __slots__ = ("load", "set_params", "encode", "decode")
    LOAD_FIELD_NUMBER: _ClassVar[int]
    SET_PARAMS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    load: SandboxLoad
    set_params: SandboxSetParams
    encode: SandboxEncode
    decode: SandboxDecode
    def __init__(self, load: _Optional[_Union[SandboxLoad, _Mapping]] = ..., set_params: _Optional[_Union[SandboxSetParams, _Mapping]] = ..., encode: _Optional[_Union[SandboxEncode, _Mapping]] = ..., decode: _Optional[_Union[SandboxDecode, _Mapping]] = ...) -> None: ...

class SandboxLoaded(_message.Message):
    __slots__ = ("contract",)
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    contract: _types_pb2.Contract
    def __init__(self, contract: _Optional[_Union[_types_pb2.Contract, str]] = ...) -> None: ...

class SandboxEncoded(_message.Message):
    __slots__ = ("bitstream", "encoding_data")
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    ENCODING_DATA_FIELD_NUMBER: _ClassVar[int]
    bitstream: bytes
    encoding_data: _types_pb2.Value
    def __init__(self, bitstream: _Optional[bytes] = ..., encoding_data: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...

class SandboxDecoded(_message.Message):
    __slots__ = ("reconstruction", "decoding_data")
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    DECODING_DATA_FIELD_NUMBER: _ClassVar[int]
    reconstruction: _types_pb2.Tensor
    decoding_data: _types_pb2.Value
    def __init__(self, reconstruction: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., decoding_data: _Optional[_Union[_types_pb2.Value, _Mapping]] = ...) -> None: ...

class SandboxResponse(_message.Message):
    __slots__ = ("loaded", "params_set", "encoded", "decoded", "error")
    LOADED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SET_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    DECODED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    loaded: SandboxLoaded
    params_set: bool
    encoded: SandboxEncoded
    decoded: SandboxDecoded
    error: _errors_pb2.Error
    def __init__(self, loaded: _Optional[_Union[SandboxLoaded, _Mapping]] = ..., params_set: _Optional[bool] = ..., encoded: _Optional[_Union[SandboxEncoded, _Mapping]] = ..., decoded: _Optional[_Union[SandboxDecoded, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ...) -> None: ...

class SandboxSpawn(_message.Message):
    __slots__ = ("spawn_id", "limits")
    SPAWN_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    spawn_id: int
    limits: SandboxRlimits
    def __init__(self, spawn_id: _Optional[int] = ..., limits: _Optional[_Union[SandboxRlimits, _Mapping]] = ...) -> None: ...

class SandboxRlimits(_message.Message):
    __slots__ = ("memory_bytes", "cpu_s", "file_bytes", "open_files", "max_frame_bytes", "max_bitstream_bytes")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPEN_FILES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BITSTREAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_s: int
    file_bytes: int
    open_files: int
    max_frame_bytes: int
    max_bitstream_bytes: int
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_s: _Optional[int] = ..., file_bytes: _Optional[int] = ..., open_files: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., max_bitstream_bytes: _Optional[int] = ...) -> None: ...

class TemplateEvent(_message.Message):
    __slots__ = ("ready", "exited", "spawn_failed")
    READY_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    SPAWN_FAILED_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    exited: SandboxExited
    spawn_failed: SandboxSpawnFailed
    def __init__(self, ready: _Optional[bool] = ..., exited: _Optional[_Union[SandboxExited, _Mapping]] = ..., spawn_failed: _Optional[_Union[SandboxSpawnFailed, _Mapping]] = ...) -> None: ...

class SandboxExited(_message.Message):
    __slots__ = ("spawn_id", "exit_code", "signal")
    SPAWN_ID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    spawn_id: int
    exit_code: int
    signal: int
    def __init__(self, spawn_id: _Optional[int] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ...) -> None: ...

class SandboxSpawnFailed(_message.Message):
    __slots__ = ("spawn_id", "message")
    SPAWN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    spawn_id: int
    message: str
    def __init__(self, spawn_id: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
