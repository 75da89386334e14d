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

The endpoint is prometheus-client's WSGI app on a threaded HTTP server that serves at most
:data:`MAX_CONCURRENT_SCRAPES` scrapes at once (prometheus-client's ``start_http_server`` starts a
thread per connection without bound); further connections wait in the listen backlog. A scrape
never waits for a service's event loop: what must be read from the live state is read by the
service itself into a snapshot (or is a plain counter read), so a slow store or a busy loop cannot
be made slower by scraping.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import make_wsgi_app

from codecbench import rpc

#: The prefix of every metric name.
NAMESPACE = "codecbench"
#: The most scrapes served at once; a further connection waits (up to :data:`SCRAPE_WAIT_S`, then
#: it is closed unanswered).
MAX_CONCURRENT_SCRAPES = 4
#: How long a connection waits for a scrape slot.
SCRAPE_WAIT_S = 5.0
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
        server = make_server(host, port, make_wsgi_app(registry), _BoundedServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise rpc.BindError(f"could not bind the metrics endpoint {host}:{port} ({exc.strerror or exc})") from exc
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(host, int(server.server_port), server, thread)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr (the services log JSON lines)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per scrape, at most :data:`MAX_CONCURRENT_SCRAPES` at once (module docstring)."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT_SCRAPES)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Starts the scrape's thread once a slot is free; closes the connection when none frees in time."""
        if not self.slots.acquire(timeout=SCRAPE_WAIT_S):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serves one scrape, then frees its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


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


__all__ = ["LONG_BUCKETS_S", "MAX_CONCURRENT_SCRAPES", "NAMESPACE", "MetricsServer", "RpcMetrics",
           "add_metrics_arguments", "serve_metrics"]
