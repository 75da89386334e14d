"""Prometheus telemetry shared by both services: the ``/metrics`` endpoint and the RPC interceptor.

"Telemetry", not "metrics": in codecbench *metrics* are the trusted rate–distortion figures
(``worker_svc/metrics.py``); this module is about the services' own operation.

Each service makes its own :class:`prometheus_client.CollectorRegistry` (never the library's
global one), so a test can run an orchestrator and several workers in one process and scrape
each separately. Names follow the Prometheus conventions
(https://prometheus.io/docs/practices/naming/): base units (seconds), ``_total`` for counters,
and a per-service prefix, ``codecbench_orchestrator_`` or ``codecbench_worker_``, chosen over a
``service`` label because each service has its own endpoint and its own metrics (a label would
promise series that one of the two never has). The table of every metric is in
``docs/metrics.md``.

The endpoint is prometheus-client's own threaded HTTP server (``start_http_server``); values
that must be read from a service's live state are read on its event loop
(:func:`on_loop`), never from the HTTP thread, so a scrape sees no half-updated dict.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import start_http_server

from codecbench import rpc

T = TypeVar("T")

#: The prefix of every metric name.
NAMESPACE = "codecbench"
#: How long a scrape waits for the event loop to read the live state before it gives up.
SCRAPE_TIMEOUT_S = 5.0
#: Buckets (seconds) of RPC durations: from a cache hit to a long RunExperiment stream.
RPC_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                 1800.0)
#: Buckets (seconds) of experiment-scale durations: queue waits, experiments, sandbox starts.
LONG_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                  14400.0)


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint.

    Attributes:
        host: the address it is bound to.
        port: its port (the one picked when 0 was asked for).
    """

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-host``, the same on both services."""
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics at http://METRICS_HOST:PORT/metrics (0 picks a free port and "
                        "prints it); off by default")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address of the metrics endpoint (default 127.0.0.1; plain HTTP without authentication)")


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serves ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    Args:
        registry: the service's own registry.
        host: address to bind (the services default to 127.0.0.1).
        port: port to bind; 0 picks a free one (see :attr:`MetricsServer.port`).

    Raises:
        rpc.BindError: the address could not be bound.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise rpc.BindError(f"could not bind the metrics endpoint {host}:{port} ({exc.strerror or exc})") from exc
    return MetricsServer(host, int(server.server_port), server, thread)


def on_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs ``read()`` on the service's event loop and returns its value (called from the HTTP
    thread of a scrape, so the live state is read where it is written).

    Raises:
        TimeoutError: the loop did not answer within :data:`SCRAPE_TIMEOUT_S`.
    """
    return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=SCRAPE_TIMEOUT_S)


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Counts every RPC and times it, by method and status code: ``<prefix>_rpcs_total`` and
    ``<prefix>_rpc_duration_seconds`` (a histogram; from the handler's start to its end, a stream's
    whole life for streaming methods).

    Install it first (outermost) in ``grpc.aio.server(interceptors=[RpcMetrics(...), ErrorBoundary(...)])``
    so that it sees the status the error boundary chose. Health and reflection calls count too.

    Args:
        registry: the service's registry.
        subsystem: ``orchestrator`` or ``worker`` (the middle of the metric names).
    """

    def __init__(self, registry: CollectorRegistry, subsystem: str) -> None:
        self.calls = Counter("rpcs", "RPCs handled, by method and status code", ["method", "code"],
                             namespace=NAMESPACE, subsystem=subsystem, registry=registry)
        self.duration = Histogram("rpc_duration_seconds", "Time from an RPC's start to its end, by method and code",
                                  ["method", "code"], namespace=NAMESPACE, subsystem=subsystem, registry=registry,
                                  buckets=RPC_BUCKETS_S)

    def _observe(self, method: str, context: grpc.aio.ServicerContext[Any, Any], started: float,
                 failure: BaseException | None) -> None:
        code = cast(grpc.StatusCode | None, context.code())  # None until a status is set
        if code is not None:
            name = code.name
        elif isinstance(failure, asyncio.CancelledError):
            name = grpc.StatusCode.CANCELLED.name  # the client went away (or the server stopped)
        elif failure is not None:
            name = grpc.StatusCode.UNKNOWN.name  # what grpc answers for an exception that escaped
        else:
            name = grpc.StatusCode.OK.name
        self.calls.labels(method, name).inc()
        self.duration.labels(method, name).observe(time.perf_counter() - started)

    def _unary(self, behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, failure = time.perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._observe(method, context, started, failure)

        return handler

    def _stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started, failure = time.perf_counter(), None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._observe(method, context, started, failure)

        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the handler of the called method (None: no such method, passed on as is)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        deserializer, serializer = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), deserializer,
                                                       serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, method), deserializer,
                                                        serializer)
        behavior = handler.unary_stream or handler.stream_stream
        assert behavior is not None  # a method handler has one of the four behaviours
        # A streaming handler that writes with context.write() (grpc_health's Watch) is a coroutine.
        wrapped = (self._stream(behavior, method) if inspect.isasyncgenfunction(behavior)
                   else self._unary(cast(Callable[..., Awaitable[Any]], behavior), method))
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrapped, deserializer, serializer)
        return grpc.stream_stream_rpc_method_handler(wrapped, deserializer, serializer)


__all__ = ["LONG_BUCKETS_S", "NAMESPACE", "MetricsServer", "RpcMetrics", "add_metrics_arguments", "on_loop",
           "serve_metrics"]
