"""The one boundary between codecbench's error tree and gRPC status, on both sides.

Server side: :class:`ErrorBoundary`, a ``grpc.aio`` server interceptor that both services install.
It wraps every handler (unary and streaming, requests and responses) and turns what the handler
raises into ``context.abort_with_status`` with a rich status (:func:`to_status`)::

    errors.RequestError    -> its code; ErrorInfo(reason, domain, metadata) [+ BadRequest] [+ RetryInfo]
    other CodecbenchError  -> its code; ErrorInfo(reason = kind name) + the codecbench.v1.Error detail
    ImageDecodeError, TensorFormatError, ValueConversionError -> INVALID_ARGUMENT
    BlobMissing            -> FAILED_PRECONDITION
    an undecodable request body -> INVALID_ARGUMENT (reason REQUEST_UNDECODABLE), not UNKNOWN
    anything else          -> INTERNAL with a short message; the exception is logged

No servicer calls ``context.abort`` itself: handlers raise, this module answers. The boundary
also runs the service's :data:`Guard` (authentication) first, inside the same ``try``, so a missing
token is UNAUTHENTICATED through the same table (one mechanism, not a second interceptor). Status messages
are bounded (:data:`MAX_STATUS_MESSAGE`) because they travel in a header.

Client side: :func:`from_rpc_error` turns a failed call (``grpc.aio.AioRpcError``) back into the
same tree; :class:`codecbench.Client` and the orchestrator's scheduler use it.

The status details follow https://google.aip.dev/193 (``google.rpc.ErrorInfo`` with a reason
that is a constant, ``google.rpc.BadRequest`` for invalid fields), built with grpcio-status.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from codecbench import auth, errors, logs
from codecbench.v1 import errors_pb2, orchestrator_pb2

# Authenticates a call before its handler runs: ``guard(full_method, invocation_metadata)`` returns
# the caller (made :func:`codecbench.auth.current` for the handler) or None for an open method, and
# raises errors.Unauthenticated / errors.PermissionDenied.
Guard = Callable[[str, Any], "auth.Principal | None"]
# A service's translation of an exception outside the tree into a request error (None: not one it knows).
Translate = Callable[[BaseException], "errors.CodecbenchError | None"]
# What the boundary runs around each handler: the guard and the service's translation.
_Hooks = tuple["Guard | None", "Translate | None"]

# Status messages travel in the grpc-message header; details in grpc-status-details-bin. gRPC
# caps the metadata of a response (16 KiB by default), so both are bounded.
MAX_STATUS_MESSAGE = 1024
_MAX_FIELD_CHARS = 300
_MAX_METADATA_VALUE_CHARS = 300
_MAX_ERROR_DETAIL_BYTES = 6 * 1024

# Exceptions of lower layers that a handler may let through, with the request error each is.
# Looked up by module in sys.modules, not imported: an exception of a module that was never
# imported cannot have been raised, and importing codecbench.tensors/values here would load torch
# into the orchestrator (issue 10, light imports).
_FOREIGN: tuple[tuple[str, str, type[errors.RequestError], str], ...] = (
    ("codecbench.datasets", "ImageDecodeError", errors.InvalidArgument, errors.REASON_IMAGE_UNDECODABLE),
    ("codecbench.tensors", "TensorFormatError", errors.InvalidArgument, errors.REASON_TENSOR_MALFORMED),
    ("codecbench.values", "ValueConversionError", errors.InvalidArgument, errors.REASON_VALUE_UNCONVERTIBLE),
    ("codecbench.blobs", "BlobMissing", errors.FailedPrecondition, errors.REASON_BLOB_MISSING),
)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- exceptions -> the tree ----------------------------------------------------------------------


def request_error(exc: BaseException, field: str = "") -> errors.CodecbenchError | None:
    """The tree's error for ``exc``: itself when it is one, the request error a lower layer's
    exception stands for (image, tensor, value, blob, protobuf decoding), else None.

    Args:
        exc: what a handler raised.
        field: the request field the failing input came from, when the caller knows it.
    """
    if isinstance(exc, errors.CodecbenchError):
        return exc
    if isinstance(exc, DecodeError):
        return errors.InvalidArgument(field or "request", f"not a decodable protobuf message ({exc})",
                                      reason=errors.REASON_REQUEST_UNDECODABLE)
    for module_name, class_name, cls, reason in _FOREIGN:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            if cls is errors.InvalidArgument:
                return errors.InvalidArgument(field or "request", str(exc), reason=reason)
            return cls(str(exc), field=field, reason=reason)
    return None


@contextlib.contextmanager
def in_field(field: str) -> Iterator[None]:
    """Names the request field whose input the block processes, in the errors of lower layers.

    ``with in_field("dataset.images"): decode(...)`` turns an ``ImageDecodeError`` into
    ``InvalidArgument("dataset.images", ...)``; other exceptions pass unchanged.

    Raises:
        errors.RequestError: a lower layer's exception known to :func:`request_error`.
    """
    try:
        yield
    except errors.CodecbenchError:
        raise
    except Exception as exc:
        translated = request_error(exc, field)
        if translated is None:
            raise
        raise translated from exc


# -- the tree -> a rich status ---------------------------------------------------------------


def _error_info(reason: str, metadata: dict[str, str]) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(
        reason=reason,
        domain=errors.DOMAIN,
        metadata={_cut(k, 64): _cut(v, _MAX_METADATA_VALUE_CHARS) for k, v in metadata.items()},
    )


def _packed(message: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def _bounded_error(error: errors_pb2.Error) -> errors_pb2.Error:
    packed = errors_pb2.Error()
    packed.CopyFrom(error)
    while packed.ByteSize() > _MAX_ERROR_DETAIL_BYTES and packed.frames:
        del packed.frames[0]
    if packed.ByteSize() > _MAX_ERROR_DETAIL_BYTES:
        packed.message = packed.message[: _MAX_ERROR_DETAIL_BYTES // 2] + "..."
    return packed


def to_status(exc: errors.CodecbenchError) -> grpc.Status:
    """The rich gRPC status of a call that fails with ``exc`` (for ``abort_with_status``).

    Request errors carry ``ErrorInfo`` (and ``BadRequest`` for invalid arguments, ``RetryInfo``
    when the same call may succeed later); experiment
    errors carry ``ErrorInfo`` and the ``codecbench.v1.Error`` that :func:`errors.error_from_rpc`
    reads back.
    """
    code = exc.code
    if isinstance(exc, errors.RequestError):
        message = str(exc)
        details = [_packed(_error_info(exc.reason, exc.metadata))]
        if exc.violations:
            details.append(_packed(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_cut(v.field, _MAX_FIELD_CHARS), description=_cut(v.description, MAX_STATUS_MESSAGE)
                )
                for v in exc.violations
            ])))
        if exc.retryable:
            # google.rpc.RetryInfo is the standard mark of "the same call may succeed later".
            details.append(_packed(error_details_pb2.RetryInfo()))
    else:
        error = exc.to_proto()
        message = f"{errors.kind_name(error.kind)}: {error.message}"
        details = [_packed(_error_info(exc.reason, {})), _packed(_bounded_error(error))]
    status = status_pb2.Status(code=code.value[0], message=_cut(message, MAX_STATUS_MESSAGE), details=details)
    return rpc_status.to_status(status)


def spec_error(exc: errors.RequestError) -> orchestrator_pb2.SpecError:
    """The refusal of one spec of a batch (``CreateExperiments``): what its own call's status would say.

    :func:`from_spec_error` reads it back into the tree.
    """
    return orchestrator_pb2.SpecError(code=exc.code.name, reason=exc.reason, field=_cut(exc.field, _MAX_FIELD_CHARS),
                                      message=_cut(str(exc), MAX_STATUS_MESSAGE))


def from_spec_error(error: orchestrator_pb2.SpecError) -> errors.RequestError:
    """The tree's request error for one refused spec of a batch (``errors.InvalidArgument`` with its field, ...)."""
    code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    cls = errors.request_error_class(code) or errors.RequestError
    problem = error.message.removeprefix(f"{error.field}: ") if error.field else error.message
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(error.field, problem, reason=error.reason)
    return cls(problem, field=error.field, reason=error.reason)


def _internal(exc: BaseException, method: str) -> errors.InternalError:
    # The logger is looked up here, not at import: a logger bound before logs.configure() keeps
    # structlog's default console renderer, which renders huge locals slowly in the event loop.
    logs.get_logger("rpc").error("rpc.internal_error", method=method, error=_cut(f"{type(exc).__name__}: {exc}", 2000),
               exc_info=exc)
    return errors.InternalError(f"{method} failed unexpectedly ({type(exc).__name__}); see the service log")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception, method: str,
                 translate: Translate | None) -> NoReturn:
    if isinstance(exc, NotImplementedError):
        # The generated base servicer's answer for a method that has no implementation.
        status = rpc_status.to_status(status_pb2.Status(
            code=grpc.StatusCode.UNIMPLEMENTED.value[0], message=f"{method} is not implemented",
            details=[_packed(_error_info(grpc.StatusCode.UNIMPLEMENTED.name, {}))],
        ))
    else:
        status = to_status(request_error(exc) or (translate(exc) if translate else None) or _internal(exc, method))
    await context.abort_with_status(status)
    raise AssertionError("abort_with_status returned")  # it always raises


# -- the interceptor -----------------------------------------------------------------------------


class _Undecodable:
    """Stands for a request body that did not parse; the handler wrapper raises on it."""

    def __init__(self, type_name: str, exc: Exception) -> None:
        self.type_name = type_name
        self.exc = exc


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # gRPC runs the deserializer before the handler and answers UNKNOWN when it raises; a marker
    # lets the wrapped handler answer INVALID_ARGUMENT instead. (Rejected: checking the body in
    # intercept_service, which runs before the body arrives.)
    if deserializer is None:
        return None
    message_class = getattr(deserializer, "__self__", None)
    type_name = (message_class.DESCRIPTOR.full_name
                 if message_class is not None and hasattr(message_class, "DESCRIPTOR") else "request")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or what protobuf raises on odd input
            return _Undecodable(type_name, exc)

    return deserialize


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise errors.InvalidArgument(
            "request", f"the body is not a decodable {request.type_name} ({type(request.exc).__name__}: "
            f"{_cut(str(request.exc), 200)})", reason=errors.REASON_REQUEST_UNDECODABLE,
        ) from request.exc
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


def _authenticate(guard: Guard | None, full_method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if guard is not None and (principal := guard(full_method, context.invocation_metadata())) is not None:
        auth.set_current(principal)


def _wrap_unary_response(
    behavior: Callable[..., Awaitable[Any]], method: str, stream_in: bool, hooks: _Hooks, full_method: str
) -> Callable[..., Any]:
    guard, translate = hooks

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            _authenticate(guard, full_method, context)
            request = _decoded_stream(request) if stream_in else _decoded(request)
            return await behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - the boundary: every exception becomes a status
            if isinstance(exc, grpc.aio.AbortError):
                raise  # what context.abort raised (by a library handler) ends the call as it is
            await _abort(context, exc, method, translate)

    return handler


def _wrap_stream_response(
    behavior: Callable[..., Any], method: str, stream_in: bool, hooks: _Hooks, full_method: str
) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):
        # A handler that writes with context.write() (grpc_health's Watch) is a plain coroutine.
        return _wrap_unary_response(behavior, method, stream_in, hooks, full_method)
    guard, translate = hooks

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            _authenticate(guard, full_method, context)
            request = _decoded_stream(request) if stream_in else _decoded(request)
            async for response in behavior(request, context):
                yield response
        except Exception as exc:  # noqa: BLE001 - the boundary: every exception becomes a status
            if isinstance(exc, grpc.aio.AbortError):
                raise  # what context.abort raised (by a library handler) ends the call as it is
            await _abort(context, exc, method, translate)

    return handler


class ErrorBoundary(grpc.aio.ServerInterceptor):
    """Maps every exception of every handler to a rich status; see the module docstring.

    Install it with ``grpc.aio.server(interceptors=[ErrorBoundary(guard)])``.

    Args:
        guard: authenticates every call before its handler runs (see :data:`Guard`); None: no
            authentication (tests of the boundary alone).
        translate: the service's own translation of exceptions the tree does not know (the
            orchestrator's: a full disk is RESOURCE_EXHAUSTED); None, or None returned: INTERNAL.
    """

    def __init__(self, guard: Guard | None = None, translate: Translate | None = None) -> None:
        self.guard = guard
        self.translate = translate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the handler of the called method (None: no such method, passed on as is)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method
        method = full_method.rsplit("/", 1)[-1]
        guard, wrap_unary, wrap_stream = (self.guard, self.translate), _wrap_unary_response, _wrap_stream_response
        deserializer = _tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap_unary(handler.unary_unary, method, False, guard, full_method), deserializer, serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream, method, False, guard, full_method), deserializer, serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap_unary(handler.stream_unary, method, True, guard, full_method), deserializer, serializer)
        assert handler.stream_stream is not None  # a method handler has one of the four behaviours
        return grpc.stream_stream_rpc_method_handler(
            wrap_stream(handler.stream_stream, method, True, guard, full_method), deserializer, serializer)


# -- client side: a failed call -> the tree ----------------------------------------------------


def _unpacked(status: status_pb2.Status, message_class: type[Any]) -> list[Any]:
    found = []
    for detail in status.details:
        if detail.Is(message_class.DESCRIPTOR):
            message = message_class()
            detail.Unpack(message)
            found.append(message)
    return found


def from_rpc_error(exc: grpc.RpcError) -> errors.CodecbenchError:
    """The tree's error for a failed call: ``NOT_FOUND`` -> :class:`errors.NotFound`, ...

    An experiment error (a ``codecbench.v1.Error`` in the details, as the worker's Encode and
    Decode send for agent errors) becomes its class via :func:`errors.from_proto`. The
    ``ErrorInfo`` reason and metadata and the ``BadRequest`` field violations are kept on the
    exception. A status from elsewhere (a proxy, the transport) maps by its code alone.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else "") or code.name
    try:
        status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None  # type: ignore[arg-type]
    except ValueError:  # details whose code disagrees with the call's: trust the call
        status = None
    if status is not None:
        for error in _unpacked(status, errors_pb2.Error):
            return errors.from_proto(error)
    infos = _unpacked(status, error_details_pb2.ErrorInfo) if status is not None else []
    info = next((i for i in infos if i.domain == errors.DOMAIN), None)
    reason = info.reason if info else ""
    metadata = dict(info.metadata) if info else {}
    violations = [
        errors.FieldViolation(v.field, v.description)
        for bad in (_unpacked(status, error_details_pb2.BadRequest) if status is not None else [])
        for v in bad.field_violations
    ]
    retryable = status is not None and bool(_unpacked(status, error_details_pb2.RetryInfo))
    # A deadline the client set ran out: the service did not answer in time, as good as unreachable.
    cls = errors.request_error_class(grpc.StatusCode.UNAVAILABLE if code == grpc.StatusCode.DEADLINE_EXCEEDED
                                     else code)
    if cls is None:
        if code == grpc.StatusCode.CANCELLED:
            return errors.Cancelled(message)
        return errors.InternalError(f"{code.name}: {message}")
    field = metadata.get("field", "") or (violations[0].field if violations else "")
    problem = message.removeprefix(f"{field}: ") if field else message
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(field, problem, reason=reason, metadata=metadata, violations=violations)
    return cls(problem, field=field, reason=reason, metadata=metadata, retryable=retryable or None)


__all__ = ["MAX_STATUS_MESSAGE", "ErrorBoundary", "Guard", "from_rpc_error", "from_spec_error", "in_field",
           "request_error", "spec_error", "to_status"]
