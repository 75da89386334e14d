import datetime

from codecbench.v1 import experiment_pb2 as _experiment_pb2
from codecbench.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU: _ClassVar[DeviceKind]
    DEVICE_KIND_CUDA: _ClassVar[DeviceKind]

class Isolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISOLATION_UNSPECIFIED: _ClassVar[Isolation]
    ISOLATION_PROCESS: _ClassVar[Isolation]
    ISOLATION_BWRAP: _ClassVar[Isolation]
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_CPU: DeviceKind
DEVICE_KIND_CUDA: DeviceKind
ISOLATION_UNSPECIFIED: Isolation
ISOLATION_PROCESS: Isolation
ISOLATION_BWRAP: Isolation

class Device(_message.Message):
    __slots__ = ("kind", "name", "description", "memory_bytes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    kind: DeviceKind
    name: str
    description: str
    memory_bytes: int
    def __init__(self, kind: _Optional[_Union[DeviceKind, str]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "build_id", "protocol_version", "pid", "host", "start_time", "devices", "slots", "isolation", "address")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    build_id: str
    protocol_version: str
    pid: int
    host: str
    start_time: _timestamp_pb2.Timestamp
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    slots: int
    isolation: Isolation
    address: str
    def __init__(self, worker_id: _Optional[str] = ..., build_id: _Optional[str] = ..., protocol_version: _Optional[str] = ..., pid: _Optional[int] = ..., host: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., slots: _Optional[int] = ..., isolation: _Optional[_Union[Isolation, str]] = ..., address: _Optional[str] = ...) -> None: ...

class GetWorkerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetWorkerInfoResponse(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerInfo
    def __init__(self, worker: _Optional[_Union[WorkerInfo, _Mapping]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("agent", "params", "image", "device", "timeouts")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentBundle
    params: _types_pb2.ParameterPoint
    image: _types_pb2.Tensor
    device: str
    timeouts: _types_pb2.Timeouts
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., params: _Optional[_Union[_types_pb2.ParameterPoint, _Mapping]] = ..., image: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., device: _Optional[str] = ..., timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("bitstream", "bitstream_sha256", "encode_ms")
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    bitstream: bytes
    bitstream_sha256: str
    encode_ms: float
    def __init__(self, bitstream: _Optional[bytes] = ..., bitstream_sha256: _Optional[str] = ..., encode_ms: _Optional[float] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("agent", "params", "bitstream", "device", "timeouts")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentBundle
    params: _types_pb2.ParameterPoint
    bitstream: bytes
    device: str
    timeouts: _types_pb2.Timeouts
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., params: _Optional[_Union[_types_pb2.ParameterPoint, _Mapping]] = ..., bitstream: _Optional[bytes] = ..., device: _Optional[str] = ..., timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("reconstruction", "decode_ms")
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    reconstruction: _types_pb2.Tensor
    decode_ms: float
    def __init__(self, reconstruction: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., decode_ms: _Optional[float] = ...) -> None: ...

class RunExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "attempt", "agent", "dataset", "points", "device", "timeouts")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    attempt: int
    agent: _types_pb2.AgentBundle
    dataset: _types_pb2.DatasetRef
    points: _containers.RepeatedCompositeFieldContainer[_types_pb2.ParameterPoint]
    device: str
    timeouts: _types_pb2.Timeouts
    def __init__(self, experiment_id: _Optional[str] = ..., attempt: _Optional[int] = ..., agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., dataset: _Optional[_Union[_types_pb2.DatasetRef, _Mapping]] = ..., points: _Optional[_Iterable[_Union[_types_pb2.ParameterPoint, _Mapping]]] = ..., device: _Optional[str] = ..., timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

class RunExperimentResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _experiment_pb2.ExperimentEvent
    def __init__(self, event: _Optional[_Union[_experiment_pb2.ExperimentEvent, _Mapping]] = ...) -> None: ...
