"""The one error tree of codecbench, and its one table of gRPC status codes.

::

    CodecbenchError                      status code (the table below), ErrorInfo reason, retryable
    ├── AgentError                       FAILED_PRECONDITION: the agent is at fault; running it again will not help
    │   ├── AgentLoadError               AGENT_LOAD_ERROR     syntax/import error, file:line
    │   ├── SignatureMismatch            SIGNATURE_MISMATCH   expected vs actual parameters
    │   ├── AgentException               AGENT_EXCEPTION      type, message, frames
    │   ├── InvalidOutput                INVALID_OUTPUT       expected vs actual
    │   ├── Timeout                      TIMEOUT              phase, limit, elapsed
    │   ├── MemoryLimit                  MEMORY_LIMIT
    │   └── SandboxCrash                 SANDBOX_CRASH        exit code or signal
    ├── Cancelled                        CANCELLED
    ├── WorkerLost                       WORKER_LOST          retryable
    ├── InternalError                    INTERNAL             retryable
    ├── Unschedulable                    UNSCHEDULABLE        no registered worker could run it in its queue timeout
    └── RequestError                     the call is refused; no ErrorKind (it ends a call, not an experiment)
        ├── InvalidArgument              INVALID_ARGUMENT     field + problem (BadRequest field violations)
        ├── NotFound                     NOT_FOUND
        ├── AlreadyExists                ALREADY_EXISTS
        ├── FailedPrecondition           FAILED_PRECONDITION
        ├── ResourceExhausted            RESOURCE_EXHAUSTED   e.g. reason NO_FREE_SLOT (retryable), DISK_FULL
        ├── OutOfRange                   OUT_OF_RANGE         e.g. watching past the last event
        ├── Unauthenticated              UNAUTHENTICATED
        ├── PermissionDenied             PERMISSION_DENIED
        └── Unavailable                  UNAVAILABLE          the service cannot be reached (retryable)

Experiment errors (the upper branches) carry the protocol's ``codecbench.v1.Error`` and its
``ErrorKind``: they end experiments and travel in experiment events. Request errors refuse a call
before any experiment exists, so the protocol's ``ErrorKind`` is not widened for them (their
``kind`` is ``ERROR_KIND_UNSPECIFIED``); on the wire they are a gRPC status whose
``google.rpc.ErrorInfo`` (domain :data:`DOMAIN`) carries a machine-readable ``reason`` such as
``INVALID_ARGUMENT``, ``NO_FREE_SLOT`` or ``DATASET_UNKNOWN``, plus ``google.rpc.BadRequest`` field
violations for an invalid argument. Every error, either branch, also has a reason (an experiment
error's is its kind name).

:data:`_STATUS_OF` is the one table from exception class to gRPC status code. The translation to
and from the wire (``abort_with_status`` on the servers, ``AioRpcError`` on the clients) is
:mod:`codecbench.status`, the one boundary on each side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_status import rpc_status as rich_status

from codecbench.v1 import errors_pb2, types_pb2

Kind = errors_pb2.ErrorKind
Phase = types_pb2.Phase

# The ``google.rpc.ErrorInfo.domain`` of every codecbench status.
DOMAIN = "codecbench.v1"
# ErrorInfo reasons that callers act on (beyond the default reason of each class, its code name).
REASON_NO_FREE_SLOT = "NO_FREE_SLOT"
REASON_DATASET_UNKNOWN = "DATASET_UNKNOWN"
REASON_BLOB_MISSING = "BLOB_MISSING"
REASON_IMAGE_UNDECODABLE = "IMAGE_UNDECODABLE"
REASON_TENSOR_MALFORMED = "TENSOR_MALFORMED"
REASON_VALUE_UNCONVERTIBLE = "VALUE_UNCONVERTIBLE"
REASON_REQUEST_UNDECODABLE = "REQUEST_UNDECODABLE"
REASON_NO_GPU = "NO_GPU"
REASON_REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
# A draining worker refuses new experiments and ends those still running when its grace period
# runs out (UNAVAILABLE): the orchestrator requeues them without spending an attempt.
REASON_WORKER_DRAINING = "WORKER_DRAINING"
# A standby orchestrator (PostgreSQL active-standby) refuses every call (UNAVAILABLE) until it
# leads: the client should be pointed at the leader, not told to start an orchestrator.
REASON_STANDBY = "STANDBY"

RETRYABLE_KINDS = frozenset({errors_pb2.ERROR_KIND_WORKER_LOST, errors_pb2.ERROR_KIND_INTERNAL})
# User input quoted in a message is cut to this many characters (see :func:`echo`).
MAX_ECHO_CHARS = 200


def kind_name(kind: errors_pb2.ErrorKind.ValueType) -> str:
    """``ERROR_KIND_TIMEOUT`` -> ``"TIMEOUT"``."""
    return errors_pb2.ErrorKind.Name(kind).removeprefix("ERROR_KIND_")


def phase_name(phase: types_pb2.Phase.ValueType) -> str:
    """``PHASE_ENCODE`` -> ``"encode"``."""
    return types_pb2.Phase.Name(phase).removeprefix("PHASE_").lower()


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` for quoting user input in an error message, cut to about ``limit`` characters.

    A request may carry a 100 KB label key; the message that refuses it quotes the start only.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class CodecbenchError(Exception):
    """Root of codecbench's errors; carries the protocol's ``Error`` message.

    Subclasses fix ``kind``; extra fields (frames, limits, exit codes) go through ``**fields``.
    """

    kind: errors_pb2.ErrorKind.ValueType = errors_pb2.ERROR_KIND_INTERNAL

    def __init__(
        self, message: str, *, phase: types_pb2.Phase.ValueType = types_pb2.PHASE_UNSPECIFIED, **fields: Any
    ) -> None:
        super().__init__(message)
        self.error = errors_pb2.Error(
            kind=self.kind, message=message, phase=phase, retryable=self.kind in RETRYABLE_KINDS, **fields
        )

    @property
    def retryable(self) -> bool:
        """Whether running the experiment (or sending the call) again could help."""
        return self.error.retryable

    @property
    def reason(self) -> str:
        """The ``google.rpc.ErrorInfo`` reason: the kind name, e.g. ``"AGENT_EXCEPTION"``."""
        return kind_name(self.error.kind)

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code of a call that fails with this error (from the one table)."""
        return status_code_of(type(self))

    def to_proto(self) -> errors_pb2.Error:
        """The protocol ``Error`` (a request error's has kind UNSPECIFIED: it is no experiment outcome)."""
        return self.error


class AgentError(CodecbenchError):
    """The agent is at fault: its code, its output or its resource use. Not retried."""


class AgentLoadError(AgentError):
    """The agent could not be imported (syntax or import error); the error names file:line."""

    kind = errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR


class SignatureMismatch(AgentError):
    """The agent's functions or ``Codec`` do not take the contract's parameters (expected vs actual)."""

    kind = errors_pb2.ERROR_KIND_SIGNATURE_MISMATCH


class AgentException(AgentError):
    """Agent code raised; the error carries the exception type, message and agent frames."""

    kind = errors_pb2.ERROR_KIND_AGENT_EXCEPTION


class InvalidOutput(AgentError):
    """The agent returned something the contract does not allow (expected vs actual)."""

    kind = errors_pb2.ERROR_KIND_INVALID_OUTPUT


class Timeout(AgentError):
    """A phase ran past its limit; the error carries the phase, the limit and the elapsed time."""

    kind = errors_pb2.ERROR_KIND_TIMEOUT


class MemoryLimit(AgentError):
    """The agent ran out of its memory limit (MemoryError, CUDA out of memory, the cgroup)."""

    kind = errors_pb2.ERROR_KIND_MEMORY_LIMIT


class SandboxCrash(AgentError):
    """The agent process died (exit code or signal) without answering."""

    kind = errors_pb2.ERROR_KIND_SANDBOX_CRASH


class Cancelled(CodecbenchError):
    """The experiment was cancelled by a client."""

    kind = errors_pb2.ERROR_KIND_CANCELLED


class WorkerLost(CodecbenchError):
    """The worker running the experiment went away; running it again may help."""

    kind = errors_pb2.ERROR_KIND_WORKER_LOST


class InternalError(CodecbenchError):
    """A bug or failure of codecbench itself, not the agent's; retryable."""

    kind = errors_pb2.ERROR_KIND_INTERNAL


class Unschedulable(CodecbenchError):
    """No registered worker could run the experiment (device, build) before its queue timeout."""

    kind = errors_pb2.ERROR_KIND_UNSCHEDULABLE


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (``google.rpc.BadRequest.FieldViolation``).

    Attributes:
        field: the field's path in the request, e.g. ``agent.files[2].path``.
        description: what is wrong, with the limit when there is one.
    """

    field: str
    description: str


class RequestError(CodecbenchError):
    """The call is refused (bad request, missing resource, no capacity now); no experiment ran.

    ``str(exc)`` is the status message: ``"<field>: <problem>"`` when a field is named.

    Attributes:
        field: the request field at fault, or ``""``.
        problem: the message without the field.
        metadata: ``google.rpc.ErrorInfo`` metadata (``field`` included when named).
        violations: ``google.rpc.BadRequest`` field violations (invalid arguments).
    """

    kind = errors_pb2.ERROR_KIND_UNSPECIFIED
    # Whether sending the same call again later can succeed (capacity, reachability).
    retryable_by_default = False

    def __init__(
        self,
        problem: str,
        *,
        field: str = "",
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
        self._reason = reason or self.code.name
        self.metadata: dict[str, str] = {**({"field": field} if field else {}), **(metadata or {})}
        self.violations: list[FieldViolation] = []
        self.error.retryable = self.retryable_by_default if retryable is None else retryable

    @property
    def reason(self) -> str:
        """The ``google.rpc.ErrorInfo`` reason, e.g. ``"INVALID_ARGUMENT"`` or ``"NO_FREE_SLOT"``."""
        return self._reason


class InvalidArgument(RequestError):
    """A request field is malformed or out of its limits: ``InvalidArgument("page_size", "must be 0..1000")``."""

    def __init__(
        self,
        field: str,
        problem: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(problem, field=field, reason=reason, metadata=metadata)
        self.violations = list(violations) or [FieldViolation(field, problem)]


class NotFound(RequestError):
    """The experiment, worker or blob the request names does not exist."""


class AlreadyExists(RequestError):
    """The request would create something that exists with other content."""


class FailedPrecondition(RequestError):
    """The request is well-formed, but the service's state does not allow it (e.g. no GPU here)."""


class ResourceExhausted(RequestError):
    """No capacity for the call now (reason ``NO_FREE_SLOT``: retry later) or a size limit hit."""


class OutOfRange(RequestError):
    """A position past the end of what exists (``after_sequence`` beyond an experiment's last event)."""


class Unauthenticated(RequestError):
    """The call carries no valid credentials."""


class PermissionDenied(RequestError):
    """The caller may not do this."""


class Unavailable(RequestError):
    """The service cannot be reached or is shutting down (the client's view); retrying may help."""

    retryable_by_default = True


# The one table: which gRPC status a call failing with each error carries. A class not listed
# takes the entry of its nearest listed base (see :func:`status_code_of`).
_STATUS_OF: dict[type[CodecbenchError], grpc.StatusCode] = {
    # Every agent failure of a unary call (the worker's Encode and Decode) is FAILED_PRECONDITION:
    # the call cannot succeed until the agent is fixed. Rejected: ABORTED, DEADLINE_EXCEEDED and
    # RESOURCE_EXHAUSTED, which generic gRPC retry policies retry (the same agent fails again),
    # and which a client reads as its own deadline or the service's capacity. The kind travels in
    # the codecbench.v1.Error detail and as the ErrorInfo reason.
    AgentError: grpc.StatusCode.FAILED_PRECONDITION,
    WorkerLost: grpc.StatusCode.UNAVAILABLE,
    Cancelled: grpc.StatusCode.CANCELLED,
    Unschedulable: grpc.StatusCode.FAILED_PRECONDITION,
    CodecbenchError: grpc.StatusCode.INTERNAL,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

_CLASS_OF_KIND: dict[errors_pb2.ErrorKind.ValueType, type[CodecbenchError]] = {
    cls.kind: cls
    for cls in (
        AgentLoadError, SignatureMismatch, AgentException, InvalidOutput, Timeout, MemoryLimit,
        SandboxCrash, Cancelled, WorkerLost, InternalError, Unschedulable,
    )
}
# A status without a codecbench.v1.Error detail is a request error; each code has one class.
_REQUEST_ERROR_OF_CODE: dict[grpc.StatusCode, type[RequestError]] = {
    code: cls for cls, code in _STATUS_OF.items() if issubclass(cls, RequestError)
}


def status_code_of(cls: type[CodecbenchError]) -> grpc.StatusCode:
    """The gRPC status code of a call failing with an error of class ``cls`` (the one table)."""
    for base in cls.__mro__:
        if base in _STATUS_OF:
            return _STATUS_OF[base]
    return grpc.StatusCode.INTERNAL


def grpc_status_code(kind: errors_pb2.ErrorKind.ValueType) -> grpc.StatusCode:
    """The gRPC status code that a unary call failing with ``kind`` returns."""
    return status_code_of(_CLASS_OF_KIND.get(kind, InternalError))


def request_error_class(code: grpc.StatusCode) -> type[RequestError] | None:
    """The request error a status ``code`` stands for (``NOT_FOUND`` -> :class:`NotFound`), if any."""
    return _REQUEST_ERROR_OF_CODE.get(code)


def from_proto(error: errors_pb2.Error) -> CodecbenchError:
    """Wraps a protocol ``Error`` (e.g. from a sandbox child) in the matching exception class."""
    cls = _CLASS_OF_KIND.get(error.kind, InternalError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, error.message)
    exc.error = errors_pb2.Error()
    exc.error.CopyFrom(error)
    return exc


def error_from_rpc(exc: grpc.RpcError) -> errors_pb2.Error | None:
    """The ``codecbench.v1.Error`` in a failed call's rich status details, if it has one."""
    # An AioRpcError is no grpc.Call, but has the trailing_metadata() that from_call reads.
    status = rich_status.from_call(cast(grpc.Call, exc)) if hasattr(exc, "trailing_metadata") else None
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
    message = error.message
    if error.exception_type and f"{error.exception_type}:" not in message:  # said once, where the message puts it
        message = f"{error.exception_type}: {message}"
    return f"{head}: {message}"


__all__ = [
    "DOMAIN", "REASON_BLOB_MISSING", "REASON_DATASET_UNKNOWN", "REASON_IMAGE_UNDECODABLE", "REASON_NO_FREE_SLOT",
    "REASON_NO_GPU", "REASON_REQUEST_ID_REUSED", "REASON_STANDBY",
    "REASON_REQUEST_UNDECODABLE", "REASON_TENSOR_MALFORMED", "REASON_VALUE_UNCONVERTIBLE",
    "AgentError", "AgentException", "AgentLoadError", "AlreadyExists", "Cancelled", "CodecbenchError",
    "FailedPrecondition", "FieldViolation", "InternalError", "InvalidArgument", "InvalidOutput", "MemoryLimit",
    "NotFound", "OutOfRange", "PermissionDenied",
    "RequestError", "ResourceExhausted", "SandboxCrash", "SignatureMismatch",
    "Timeout", "Unauthenticated", "Unschedulable", "Unavailable", "WorkerLost", "describe", "echo", "error_from_rpc",
    "from_proto", "grpc_status_code", "kind_name", "phase_name", "request_error_class", "status_code_of",
]
