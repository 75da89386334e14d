"""gRPC plumbing shared by the services and their clients: message limits, health, reflection,
TLS and bearer tokens on channels.

Message limits are set explicitly on both sides (64 MiB) so a too-large payload is refused with
a RESOURCE_EXHAUSTED status that states the limit, instead of a library default that differs
between server and client.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Large payloads (dataset images, agent files, blobs) move in chunks of at most this size.
CHUNK_BYTES = 1024 * 1024

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


# HTTP/2 keepalive: a client pings a quiet connection every KEEPALIVE_TIME_MS while a call is open
# and calls the connection dead when no answer comes within KEEPALIVE_TIMEOUT_MS, so a stream over a
# dead peer (a watch, a RunExperiment, a blob read) ends with UNAVAILABLE instead of waiting forever.
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000


def server_options() -> list[tuple[str, int]]:
    """Channel arguments of every codecbench server.

    SO_REUSEPORT is off: gRPC turns it on by default, so a second service started on a port in use
    would bind too and the kernel would split the clients between two databases; off, it fails.
    The server accepts the clients' keepalive pings (its default minimum is 5 minutes between pings
    without data; more often, it would close the connection with "too many pings").
    """
    return [
        *_OPTIONS,
        ("grpc.so_reuseport", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def channel_options() -> list[tuple[str, int]]:
    """Channel arguments of every codecbench client channel (message limits, keepalive on calls)."""
    return [
        *_OPTIONS,
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def insecure_channel(address: str) -> grpc.aio.Channel:
    """An asyncio channel to ``host:port`` with codecbench's message limits and no credentials."""
    return grpc.aio.insecure_channel(address, options=channel_options())


@dataclass(frozen=True)
class TlsConfig:
    """PEM files of one side of a TLS connection.

    Attributes:
        cert: this side's certificate chain (a server's, or a client's for mutual TLS).
        key: its private key.
        ca: the CA that signs the peers' certificates. On a server it makes TLS mutual: every
            client must present a certificate that this CA signed. On a client it verifies the server.
    """

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def enabled(self) -> bool:
        """Whether TLS is on: a certificate or a CA is given."""
        return bool(self.cert or self.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        """``grpc.ssl_server_credentials``: mutual (client certificates required) when ``ca`` is set.

        Raises:
            ValueError: ``cert`` or ``key`` is missing.
            OSError: a file cannot be read.
        """
        if self.cert is None or self.key is None:
            raise ValueError("a TLS server needs --tls-cert and --tls-key")
        root = self.ca.read_bytes() if self.ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=root,
            require_client_auth=root is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """``grpc.ssl_channel_credentials``: verifies the server with ``ca`` (the system's roots when
        unset) and presents ``cert``/``key`` when given (mutual TLS).

        Raises:
            OSError: a file cannot be read.
        """
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes() if self.key and self.cert else None,
            certificate_chain=self.cert.read_bytes() if self.key and self.cert else None,
        )


NO_TLS = TlsConfig()


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert/--tls-key/--tls-ca`` and ``--insecure``, as both services spell them."""
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate of this service (enables TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--tls-ca", type=Path,
                        help="PEM CA: callers must present a certificate it signed (mutual TLS), and the services "
                        "this one calls are verified with it")
    parser.add_argument("--insecure", action="store_true",
                        help="allow plaintext on a non-loopback --host (refused by default)")


def tls_from_args(args: argparse.Namespace) -> TlsConfig:
    """The TLS settings of arguments parsed with :func:`add_tls_arguments`."""
    return TlsConfig(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without port) is this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(address: str) -> str:
    """``"127.0.0.1:50051"`` -> ``"127.0.0.1"``; ``"[::1]:5"`` -> ``"::1"``."""
    return address.rsplit(":", 1)[0].strip("[]")


def check_listen_security(host: str, tls: TlsConfig, insecure: bool) -> None:
    """Refuses a plaintext listener beyond loopback unless ``insecure`` says so.

    Raises:
        ValueError: ``host`` is not a loopback address, TLS is off and ``insecure`` is False.
    """
    if not is_loopback(host) and not tls.enabled and not insecure:
        raise ValueError(
            f"refusing to listen on {host} without TLS: tokens and agent code would cross the network in "
            "plaintext; give --tls-cert/--tls-key (and --tls-ca for mutual TLS), or --insecure to accept that"
        )


class _Bearer:
    """Adds ``authorization: Bearer <token>`` to every call; ``token()`` is asked on each call, so
    a credential that changes (a worker's, at re-registration) needs no new channel.

    One subclass per call kind: grpc.aio files an interceptor under the first kind it implements
    only (an ``if``/``elif`` in ``grpc.aio.Channel``), so one class for all four would add the
    token to unary calls alone.
    """

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        token = self._token()
        if not token:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {token}")
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)


class _BearerUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def _bearer_interceptors(token: Callable[[], str]) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that add the bearer token to calls of every kind."""
    return [kind(token) for kind in (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)]


def channel(address: str, token: str | Callable[[], str] = "", tls: TlsConfig = NO_TLS) -> grpc.aio.Channel:
    """A channel to ``host:port`` that sends ``authorization: Bearer <token>`` on every call.

    The channel is TLS when ``tls`` is set; to a loopback address without TLS it uses
    ``local_channel_credentials(LOCAL_TCP)`` (which the server needs no change for: the local
    handshake exchanges nothing); to another host without TLS (a service started with
    ``--insecure``) it is plaintext. The token is added by a client interceptor, not as gRPC call
    credentials: gRPC runs a call-credentials plugin on a new thread for every call (about 1 ms of
    a thread start and a lock wait each, measured in the orchestrator's dispatch profile, issue 15),
    where an interceptor adds the metadata in the calling coroutine.

    Args:
        address: ``host:port``.
        token: the bearer token, or a function returning the current one; ``""``: none sent.
        tls: TLS settings; plaintext when not enabled.
    """
    current = token if callable(token) else (lambda: token)
    interceptors = _bearer_interceptors(current)
    if tls.enabled:
        return grpc.aio.secure_channel(address, tls.channel_credentials(), options=channel_options(),
                                       interceptors=interceptors)
    if is_loopback(host_of(address)):
        local = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        return grpc.aio.secure_channel(address, local, options=channel_options(), interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=channel_options(), interceptors=interceptors)


def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> health.aio.HealthServicer:
    """Adds ``grpc.health.v1.Health`` (every service SERVING) and server reflection.

    Returns:
        The health servicer, so the caller can flip it to NOT_SERVING before shutdown.
    """
    names = list(service_names)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, service_names: Iterable[str],
                      serving: bool) -> None:
    """Sets the overall (``""``) and each named service's health status."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


# The health "service" a liveness probe asks for: SERVING for as long as the process answers at
# all. The overall status ("") turns NOT_SERVING on a standby orchestrator, a draining worker or a
# full disk, which is for readiness: a liveness probe on it would restart a healthy standby forever.
# A gRPC check (rather than a TCP connect, which the kernel accepts even while the event loop is
# stuck) proves the service's event loop still runs.
LIVENESS_SERVICE = "liveness"


async def start_health_server(host: str, port: int, health_servicer: health.aio.HealthServicer) -> grpc.aio.Server:
    """A plaintext server on ``host:port`` with ``grpc.health.v1.Health`` only, answering from the
    service's own ``health_servicer`` (so it turns NOT_SERVING with the service).

    For probes that cannot do TLS, such as Kubernetes' native ``grpc:`` probe (the kubelet neither
    presents a client certificate nor, in the Kubernetes versions deploy/ is checked against, speaks
    TLS). It tells only SERVING or NOT_SERVING, so it needs no token and no certificate; every other
    RPC stays on the service's own port behind TLS. A TLS-less main port was the alternative, rejected.
    It also answers the service name :data:`LIVENESS_SERVICE`, always SERVING (for a liveness probe).

    Raises:
        BindError: the address could not be bound.
    """
    server = grpc.aio.server(options=server_options())
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bind(server, host, port)
    await server.start()
    return server


def add_health_port_argument(parser: argparse.ArgumentParser) -> None:
    """``--health-port``, as both services spell it (see :func:`start_health_server`)."""
    parser.add_argument("--health-port", type=int, default=0,
                        help="also serve grpc.health.v1 alone, in plaintext, on this port of --host (for "
                        "probes without TLS, such as Kubernetes' grpc probe); 0: not served")


class BindError(OSError):
    """A service could not bind its address (the port is in use, or the host is not this machine's)."""


# The exit status of a service main that was given an address it cannot bind (argparse's for usage errors).
EXIT_BIND_FAILED = 2


def bind(server: grpc.aio.Server, host: str, port: int, tls: TlsConfig = NO_TLS) -> int:
    """Binds ``host:port`` (port 0 picks a free one), with TLS when ``tls`` is enabled, and returns
    the bound port.

    Raises:
        BindError: the address could not be bound.
    """
    address = f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, tls.server_credentials()) if tls.enabled
                 else server.add_insecure_port(address))
    except RuntimeError:  # grpcio raises where older releases returned 0
        bound = 0
    if bound == 0:
        raise BindError(f"could not bind {host}:{port} (in use by another process, or not an address of this host)")
    return bound


def run_service(prog: str, serve: Coroutine[Any, Any, None]) -> int:
    """Runs a service main's ``serve`` coroutine (``python -m orchestrator_svc``, ``worker_svc``) to its end.

    An address it cannot bind is a mistake in its arguments, not a crash: one line on stderr that
    says what to change, and exit status :data:`EXIT_BIND_FAILED` (no traceback).

    Returns:
        The exit status: 0, or :data:`EXIT_BIND_FAILED`.
    """
    try:
        asyncio.run(serve)
    except BindError as exc:
        print(f"{prog}: error: {exc}; choose another --port (--port 0 picks a free one)", file=sys.stderr,
              flush=True)
        return EXIT_BIND_FAILED
    return 0


async def wait_for_termination() -> None:
    """Returns when the process receives SIGINT or SIGTERM (for ``python -m`` service mains)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
