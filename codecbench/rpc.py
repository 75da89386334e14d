"""gRPC plumbing shared by the services and their clients: message limits, health, reflection.

Message limits are set explicitly on both sides (64 MiB) so a too-large payload is refused with
a RESOURCE_EXHAUSTED status that states the limit, instead of a library default that differs
between server and client.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable

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


def server_options() -> list[tuple[str, int]]:
    """Channel arguments of every codecbench server.

    SO_REUSEPORT is off: gRPC turns it on by default, so a second service started on a port in use
    would bind too and the kernel would split the clients between two databases; off, it fails.
    """
    return [*_OPTIONS, ("grpc.so_reuseport", 0)]


def channel_options() -> list[tuple[str, int]]:
    """Channel arguments of every codecbench client channel."""
    return list(_OPTIONS)


def insecure_channel(address: str) -> grpc.aio.Channel:
    """An asyncio channel to ``host:port`` with codecbench's message limits."""
    return grpc.aio.insecure_channel(address, options=channel_options())


def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> health.HealthServicer:
    """Adds ``grpc.health.v1.Health`` (every service SERVING) and server reflection.

    Returns:
        The health servicer, so the caller can flip it to NOT_SERVING before shutdown.
    """
    names = list(service_names)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return health_servicer


async def set_serving(health_servicer: health.HealthServicer, service_names: Iterable[str], serving: bool) -> None:
    """Sets the overall (``""``) and each named service's health status."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


def bind(server: grpc.aio.Server, host: str, port: int) -> int:
    """Binds ``host:port`` (port 0 picks a free one) and returns the bound port.

    Raises:
        OSError: the address could not be bound.
    """
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises where older releases returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind {host}:{port} (in use by another process, or not an address of this host)")
    return bound


async def wait_for_termination() -> None:
    """Returns when the process receives SIGINT or SIGTERM (for ``python -m`` service mains)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
