"""The orchestrator's gRPC server: store, ledger, scheduler and service wired together.

:func:`start_orchestrator` binds (port 0 picks a free port), recovers experiments a previous
process left RUNNING, starts the scheduler and returns a handle with ``port`` and ``stop()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from codecbench import build, bundles, datasets, logs, rpc
from codecbench.blobs import BlobStore
from codecbench.status import ErrorBoundary
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from orchestrator_svc.ledger import Ledger
from orchestrator_svc.scheduler import Scheduler
from orchestrator_svc.service import OrchestratorServicer
from orchestrator_svc.store import Store
from orchestrator_svc.workers import WorkerRegistry

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


@dataclass(frozen=True)
class OrchestratorConfig:
    """Settings of the orchestrator.

    Attributes:
        data_dir: holds the SQLite file (``codecbench.db``) and the blob store (``blobs/``).
        store_url: SQLAlchemy URL; default ``sqlite:///<data_dir>/codecbench.db``.
        expected_build: build id a worker must report to get work; default: this code's own.
        heartbeat_interval_s: how often workers are asked to send heartbeats.
        heartbeat_timeout_s: silence after which a worker is LOST.
        max_bundle_bytes: largest agent bundle accepted.
        call_slack_s: how long past an experiment's own limit (which the worker enforces) the
            orchestrator waits for the worker's stream before it calls the worker lost.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    store_url: str = ""
    expected_build: str = ""
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 15.0
    max_bundle_bytes: int = 32 * 1024 * 1024
    call_slack_s: float = 120.0


def builtin_photos() -> orchestrator_pb2.Dataset:
    """The ``photos`` dataset record: workers resolve its images locally, by name."""
    images = [
        types_pb2.BlobRef(name=name, sha256=bundles.sha256_hex(data), size_bytes=len(data))
        for name, data in datasets.photo_files()
    ]
    return orchestrator_pb2.Dataset(
        name=datasets.PHOTOS,
        digest=datasets.dataset_digest([(i.name, i.sha256) for i in images]),
        images=images,
        builtin=True,
    )


@dataclass
class OrchestratorHandle:
    server: grpc.aio.Server
    port: int
    address: str
    store: Store
    scheduler: Scheduler
    registry: WorkerRegistry
    servicer: OrchestratorServicer
    health: object

    async def stop(self, grace_s: float = 2.0) -> None:
        """NOT_SERVING, then stop serving, then stop dispatching (RUNNING rows stay for recovery)."""
        await rpc.set_serving(self.health, [SERVICE_NAME], serving=False)  # type: ignore[arg-type]
        await self.server.stop(grace_s)
        await self.scheduler.stop()
        await self.registry.close()
        self.store.close()


async def start_orchestrator(config: OrchestratorConfig) -> OrchestratorHandle:
    """Starts an orchestrator on ``config.host:config.port`` (0 picks a free port).

    Raises:
        OSError: the address could not be bound.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.store_url or f"sqlite:///{config.data_dir / 'codecbench.db'}")
    store.put_dataset(builtin_photos())
    ledger = Ledger(store)
    expected = config.expected_build or build.build_id()
    registry = WorkerRegistry(expected)
    scheduler = Scheduler(store, ledger, registry, config.heartbeat_timeout_s, config.call_slack_s)
    await scheduler.recover()
    servicer = OrchestratorServicer(
        store,
        ledger,
        scheduler,
        registry,
        BlobStore(config.data_dir / "blobs"),
        config.max_bundle_bytes,
        config.heartbeat_interval_s,
    )
    server = grpc.aio.server(options=rpc.server_options(), interceptors=[ErrorBoundary()])
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)
    health = rpc.add_health_and_reflection(server, [SERVICE_NAME])
    port = rpc.bind(server, config.host, config.port)
    await server.start()
    await rpc.set_serving(health, [SERVICE_NAME], serving=True)
    scheduler.start()
    address = f"{config.host}:{port}"
    logs.get_logger("orchestrator").info(
        "orchestrator.started",
        address=address,
        expected_build=expected,
        store=store.engine.url.render_as_string(hide_password=True),
    )
    return OrchestratorHandle(server, port, address, store, scheduler, registry, servicer, health)
