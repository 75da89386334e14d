import datetime

from codecbench.v1 import errors_pb2 as _errors_pb2
from codecbench.v1 import types_pb2 as _types_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_UNSPECIFIED: _ClassVar[LogStream]
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]
    LOG_STREAM_SYSTEM: _ClassVar[LogStream]

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_QUEUED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_SUCCEEDED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_FAILED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_CANCELLED: _ClassVar[ExperimentState]
LOG_STREAM_UNSPECIFIED: LogStream
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
LOG_STREAM_SYSTEM: LogStream
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_QUEUED: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_SUCCEEDED: ExperimentState
EXPERIMENT_STATE_FAILED: ExperimentState
EXPERIMENT_STATE_CANCELLED: ExperimentState

class ImageMetrics(_message.Message):
    __slots__ = ("bytes", "width", "height", "bpp", "mse", "psnr_db", "ms_ssim", "ms_ssim_unavailable_reason", "lossless", "encode_ms", "decode_ms", "bitstream_sha256", "agent_reported", "conversion")
    class AgentReportedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BPP_FIELD_NUMBER: _ClassVar[int]
    MSE_FIELD_NUMBER: _ClassVar[int]
    PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    MS_SSIM_FIELD_NUMBER: _ClassVar[int]
    MS_SSIM_UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    LOSSLESS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    AGENT_REPORTED_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    width: int
    height: int
    bpp: float
    mse: float
    psnr_db: float
    ms_ssim: float
    ms_ssim_unavailable_reason: str
    lossless: bool
    encode_ms: float
    decode_ms: float
    bitstream_sha256: str
    agent_reported: _containers.ScalarMap[str, float]
    conversion: str
    def __init__(self, bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bpp: _Optional[float] = ..., mse: _Optional[float] = ..., psnr_db: _Optional[float] = ..., ms_ssim: _Optional[float] = ..., ms_ssim_unavailable_reason: _Optional[str] = ..., lossless: _Optional[bool] = ..., encode_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., bitstream_sha256: _Optional[str] = ..., agent_reported: _Optional[_Mapping[str, float]] = ..., conversion: _Optional[str] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("point_index", "image_index", "image_name", "metrics")
    POINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    point_index: int
    image_index: int
    image_name: str
    metrics: ImageMetrics
    def __init__(self, point_index: _Optional[int] = ..., image_index: _Optional[int] = ..., image_name: _Optional[str] = ..., metrics: _Optional[_Union[ImageMetrics, _Mapping]] = ...) -> None: ...

class PointResult(_message.Message):
    __slots__ = ("point_index", "params", "image_count", "total_bytes", "bpp", "mse", "psnr_db", "ms_ssim", "lossless", "encode_ms", "decode_ms", "images")
    POINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    BPP_FIELD_NUMBER: _ClassVar[int]
    MSE_FIELD_NUMBER: _ClassVar[int]
    PSNR_DB_FIELD_NUMBER: _ClassVar[int]
    MS_SSIM_FIELD_NUMBER: _ClassVar[int]
    LOSSLESS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    point_index: int
    params: _types_pb2.ParameterPoint
    image_count: int
    total_bytes: int
    bpp: float
    mse: float
    psnr_db: float
    ms_ssim: float
    lossless: bool
    encode_ms: float
    decode_ms: float
    images: _containers.RepeatedCompositeFieldContainer[ImageResult]
    def __init__(self, point_index: _Optional[int] = ..., params: _Optional[_Union[_types_pb2.ParameterPoint, _Mapping]] = ..., image_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., bpp: _Optional[float] = ..., mse: _Optional[float] = ..., psnr_db: _Optional[float] = ..., ms_ssim: _Optional[float] = ..., lossless: _Optional[bool] = ..., encode_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., images: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ...) -> None: ...

class ExperimentResult(_message.Message):
    __slots__ = ("points", "wall_ms", "worker_id")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    WALL_MS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[PointResult]
    wall_ms: float
    worker_id: str
    def __init__(self, points: _Optional[_Iterable[_Union[PointResult, _Mapping]]] = ..., wall_ms: _Optional[float] = ..., worker_id: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "point_index", "point_count", "image_index", "image_count", "image_name")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    POINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    phase: _types_pb2.Phase
    point_index: int
    point_count: int
    image_index: int
    image_count: int
    image_name: str
    def __init__(self, phase: _Optional[_Union[_types_pb2.Phase, str]] = ..., point_index: _Optional[int] = ..., point_count: _Optional[int] = ..., image_index: _Optional[int] = ..., image_count: _Optional[int] = ..., image_name: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("stream", "text", "phase", "truncated")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    stream: LogStream
    text: str
    phase: _types_pb2.Phase
    truncated: bool
    def __init__(self, stream: _Optional[_Union[LogStream, str]] = ..., text: _Optional[str] = ..., phase: _Optional[_Union[_types_pb2.Phase, str]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "attempt", "worker_id", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: ExperimentState
    attempt: int
    worker_id: str
    reason: str
    def __init__(self, state: _Optional[_Union[ExperimentState, str]] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ExperimentEvent(_message.Message):
    __slots__ = ("experiment_id", "sequence", "time", "attempt", "progress", "log", "image_result", "state_change", "error", "result")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    IMAGE_RESULT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    attempt: int
    progress: Progress
    log: LogLine
    image_result: ImageResult
    state_change: StateChange
    error: _errors_pb2.Error
    result: ExperimentResult
    def __init__(self, experiment_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., image_result: _Optional[_Union[ImageResult, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., error: _Optional[_Union[_errors_pb2.Error, _Mapping]] = ..., result: _Optional[_Union[ExperimentResult, _Mapping]] = ...) -> None: ...
