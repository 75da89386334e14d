import datetime

from codecbench.v1 import experiment_pb2 as _experiment_pb2
from codecbench.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceInfo(_message.Message):
    __slots__ = ("kind", "name", "description", "memory_bytes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    kind: _types_pb2.Device
    name: str
    description: str
    memory_bytes: int
    def __init__(self, kind: _Optional[_Union[_types_pb2.Device, str]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "build_id", "protocol_version", "pid", "host", "start_time", "devices", "slots", "isolation", "address", "default_timeouts")
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
    DEFAULT_TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    build_id: str
    protocol_version: str
    pid: int
    host: str
    start_time: _timestamp_pb2.Timestamp
    devices: _containers.RepeatedCompositeFieldContainer[DeviceInfo]
    slots: int
    isolation: _types_pb2.Isolation
    address: str
    default_timeouts: _types_pb2.Timeouts
    def __init__(self, worker_id: _Optional[str] = ..., build_id: _Optional[str] = ..., protocol_version: _Optional[str] = ..., pid: _Optional[int] = ..., host: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[DeviceInfo, _Mapping]]] = ..., slots: _Optional[int] = ..., isolation: _Optional[_Union[_types_pb2.Isolation, str]] = ..., address: _Optional[str] = ..., default_timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

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
    device: _types_pb2.Device
    timeouts: _types_pb2.Timeouts
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., params: _Optional[_Union[_types_pb2.ParameterPoint, _Mapping]] = ..., image: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., device: _Optional[_Union[_types_pb2.Device, str]] = ..., timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

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
    device: _types_pb2.Device
    timeouts: _types_pb2.Timeouts
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., params: _Optional[_Union[_types_pb2.ParameterPoint, _Mapping]] = ..., bitstream: _Optional[bytes] = ..., device: _Optional[_Union[_types_pb2.Device, str]] = ..., timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

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
    device: _types_pb2.Device
    timeouts: _types_pb2.Timeouts
    def __init__(self, experiment_id: _Optional[str] = ..., attempt: _Optional[int] = ..., agent: _Optional[_Union[_types_pb2.AgentBundle, _Mapping]] = ..., dataset: _Optional[_Union[_types_pb2.DatasetRef, _Mapping]] = ..., points: _Optional[_Iterable[_Union[_types_pb2.ParameterPoint, _Mapping]]] = ..., device: _Optional[_Union[_types_pb2.Device, str]] = ..., timeouts: _Optional[_Union[_types_pb2.Timeouts, _Mapping]] = ...) -> None: ...

class RunExperimentResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _experiment_pb2.ExperimentEvent
    def __init__(self, event: _Optional[_Union[_experiment_pb2.ExperimentEvent, _Mapping]] = ...) -> None: ...
