"""The one error tree of codecbench, and its translation to the protocol and to gRPC status.

::

    CodecbenchError                      (kind, phase; -> codecbench.v1.Error)
    ├── AgentError                       the agent is at fault; running it again will not help
    │   ├── AgentLoadError               AGENT_LOAD_ERROR     syntax/import error, file:line
    │   ├── SignatureMismatch            SIGNATURE_MISMATCH   expected vs actual parameters
    │   ├── AgentException               AGENT_EXCEPTION      type, message, frames
    │   ├── InvalidOutput                INVALID_OUTPUT       expected vs actual
    │   ├── Timeout                      TIMEOUT              phase, limit, elapsed
    │   ├── MemoryLimit                  MEMORY_LIMIT
    │   └── SandboxCrash                 SANDBOX_CRASH        exit code or signal
    ├── Cancelled                        CANCELLED
    ├── WorkerLost                       WORKER_LOST          retryable
    └── InternalError                    INTERNAL             retryable

Errors raised in a sandbox child arrive as ``codecbench.v1.Error`` messages and are wrapped
with :func:`from_proto`; every gRPC boundary uses :func:`grpc_status_code` and
:func:`rpc_status` so the status code and the typed details always agree.
"""

from __future__ import annotations

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status as rich_status

from codecbench.v1 import errors_pb2, types_pb2

Kind = errors_pb2.ErrorKind
Phase = types_pb2.Phase

# Which gRPC status a failed unary call carries for each kind of error.
_STATUS_OF_KIND: dict[int, grpc.StatusCode] = {
    errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR: grpc.StatusCode.FAILED_PRECONDITION,
    errors_pb2.ERROR_KIND_SIGNATURE_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    errors_pb2.ERROR_KIND_AGENT_EXCEPTION: grpc.StatusCode.ABORTED,
    errors_pb2.ERROR_KIND_INVALID_OUTPUT: grpc.StatusCode.ABORTED,
    errors_pb2.ERROR_KIND_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors_pb2.ERROR_KIND_MEMORY_LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors_pb2.ERROR_KIND_SANDBOX_CRASH: grpc.StatusCode.ABORTED,
    errors_pb2.ERROR_KIND_WORKER_LOST: grpc.StatusCode.UNAVAILABLE,
    errors_pb2.ERROR_KIND_CANCELLED: grpc.StatusCode.CANCELLED,
    errors_pb2.ERROR_KIND_INTERNAL: grpc.StatusCode.INTERNAL,
}
_MAX_STATUS_MESSAGE = 1024
_MAX_STATUS_DETAIL_BYTES = 6 * 1024
RETRYABLE_KINDS = frozenset({errors_pb2.ERROR_KIND_WORKER_LOST, errors_pb2.ERROR_KIND_INTERNAL})


def kind_name(kind: int) -> str:
    """``ERROR_KIND_TIMEOUT`` -> ``"TIMEOUT"``."""
    return errors_pb2.ErrorKind.Name(kind).removeprefix("ERROR_KIND_")


def phase_name(phase: int) -> str:
    """``PHASE_ENCODE`` -> ``"encode"``."""
    return types_pb2.Phase.Name(phase).removeprefix("PHASE_").lower()


class CodecbenchError(Exception):
    """Root of codecbench's errors; carries the protocol's ``Error`` message.

    Subclasses fix ``kind``; extra fields (frames, limits, exit codes) go through ``**fields``.
    """

    kind: int = errors_pb2.ERROR_KIND_INTERNAL

    def __init__(self, message: str, *, phase: int = types_pb2.PHASE_UNSPECIFIED, **fields: object) -> None:
        super().__init__(message)
        self.error = errors_pb2.Error(
            kind=self.kind, message=message, phase=phase, retryable=self.kind in RETRYABLE_KINDS, **fields
        )

    @property
    def retryable(self) -> bool:
        """Whether running the experiment again could help (worker lost, internal error)."""
        return self.error.retryable

    def to_proto(self) -> errors_pb2.Error:
        return self.error


class AgentError(CodecbenchError):
    """The agent is at fault: its code, its output or its resource use. Not retried."""


class AgentLoadError(AgentError):
    kind = errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR


class SignatureMismatch(AgentError):
    kind = errors_pb2.ERROR_KIND_SIGNATURE_MISMATCH


class AgentException(AgentError):
    kind = errors_pb2.ERROR_KIND_AGENT_EXCEPTION


class InvalidOutput(AgentError):
    kind = errors_pb2.ERROR_KIND_INVALID_OUTPUT


class Timeout(AgentError):
    kind = errors_pb2.ERROR_KIND_TIMEOUT


class MemoryLimit(AgentError):
    kind = errors_pb2.ERROR_KIND_MEMORY_LIMIT


class SandboxCrash(AgentError):
    kind = errors_pb2.ERROR_KIND_SANDBOX_CRASH


class Cancelled(CodecbenchError):
    kind = errors_pb2.ERROR_KIND_CANCELLED


class WorkerLost(CodecbenchError):
    kind = errors_pb2.ERROR_KIND_WORKER_LOST


class InternalError(CodecbenchError):
    kind = errors_pb2.ERROR_KIND_INTERNAL


_CLASS_OF_KIND = {
    cls.kind: cls
    for cls in (
        AgentLoadError, SignatureMismatch, AgentException, InvalidOutput, Timeout, MemoryLimit,
        SandboxCrash, Cancelled, WorkerLost, InternalError,
    )
}


def from_proto(error: errors_pb2.Error) -> CodecbenchError:
    """Wraps a protocol ``Error`` (e.g. from a sandbox child) in the matching exception class."""
    cls = _CLASS_OF_KIND.get(error.kind, InternalError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, error.message)
    exc.error = errors_pb2.Error()
    exc.error.CopyFrom(error)
    return exc


def grpc_status_code(kind: int) -> grpc.StatusCode:
    """The gRPC status code that a unary call failing with ``kind`` returns."""
    return _STATUS_OF_KIND.get(kind, grpc.StatusCode.INTERNAL)


def rpc_status(error: errors_pb2.Error) -> grpc.Status:
    """A gRPC status (for ``context.abort_with_status``) whose details carry ``error``.

    Read it back on the client with :func:`error_from_rpc`.
    """
    code = grpc_status_code(error.kind)
    headline = f"{kind_name(error.kind)}: {error.message}"
    if len(headline) > _MAX_STATUS_MESSAGE:
        headline = headline[:_MAX_STATUS_MESSAGE] + "..."
    detail = status_pb2.Status(code=code.value[0], message=headline)
    # Status details travel in trailing metadata, whose size gRPC caps (16 KiB by default).
    packed = errors_pb2.Error()
    packed.CopyFrom(error)
    while packed.ByteSize() > _MAX_STATUS_DETAIL_BYTES and packed.frames:
        del packed.frames[0]
    if packed.ByteSize() > _MAX_STATUS_DETAIL_BYTES:
        packed.message = packed.message[: _MAX_STATUS_DETAIL_BYTES // 2] + "..."
    detail.details.add().Pack(packed)
    return rich_status.to_status(detail)


def error_from_rpc(exc: grpc.RpcError) -> errors_pb2.Error | None:
    """The ``codecbench.v1.Error`` in a failed call's rich status details, if it has one."""
    status = rich_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(errors_pb2.Error.DESCRIPTOR):
            error = errors_pb2.Error()
            detail.Unpack(error)
            return error
    return None


def describe(error: errors_pb2.Error) -> str:
    """One line for people: ``AGENT_EXCEPTION at codec.py:12 in encode: ZeroDivisionError: ...``."""
    parts = [kind_name(error.kind)]
    if error.location:
        parts.append(f"at {error.location}")
    if error.phase:
        parts.append(f"in {phase_name(error.phase)}")
    if error.HasField("image_index"):
        parts.append(f"(image {error.image_index}{' ' + error.image_name if error.image_name else ''})")
    head = " ".join(parts)
    message = f"{error.exception_type}: {error.message}" if error.exception_type else error.message
    return f"{head}: {message}"


__all__ = [
    "AgentError", "AgentException", "AgentLoadError", "Cancelled", "CodecbenchError", "InternalError",
    "InvalidOutput", "MemoryLimit", "SandboxCrash", "SignatureMismatch", "Timeout", "WorkerLost",
    "describe", "error_from_rpc", "from_proto", "grpc_status_code", "kind_name", "phase_name",
    "rpc_status",
]
