"""The orchestrator's gRPC server: store, ledger, scheduler and service wired together.

:func:`start_orchestrator` binds (port 0 picks a free port), recovers experiments a previous
process left RUNNING, starts the scheduler and returns a handle with ``port`` and ``stop()``.

On PostgreSQL several orchestrators may share the database, one leading and the others standing by
(:mod:`orchestrator_svc.leadership`): a standby binds and answers health (NOT_SERVING), and does the
start-up work (recovery, built-in dataset, admin token) only once it leads. On SQLite the data
directory's lock keeps a second orchestrator out, as before.

Files: the data directory is 0700, the SQLite database (and SQLite's WAL and SHM files, which take
its mode) and blobs 0600; the enrollment secret (``enroll.token``) and an admin token file are 0600.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health as grpc_health

from codecbench import auth, build, bundles, datasets, logs, rpc
from codecbench.blobs import BlobStore
from codecbench.status import ErrorBoundary
from codecbench.telemetry import MetricsServer, serve_metrics
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from orchestrator_svc.access import OrchestratorGuard
from orchestrator_svc.disk import DataDir, collect_garbage, lock_data_dir, unlock_data_dir
from orchestrator_svc.leadership import Leadership
from orchestrator_svc.ledger import Ledger
from orchestrator_svc.scheduler import Scheduler
from orchestrator_svc.service import MAX_DATASET_BYTES, OrchestratorServicer
from orchestrator_svc.store import Store
from orchestrator_svc.telemetry import OrchestratorTelemetry
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
        max_dataset_bytes: the most bytes one dataset upload may have in all (default MAX_DATASET_BYTES, 4 GiB).
        call_slack_s: how long past an experiment's own limit (which the worker enforces) the
            orchestrator waits for the worker's stream before it calls the worker lost.
        tls: server certificate and key; with a CA, clients and workers must present certificates
            it signed (mutual TLS), and the orchestrator presents its certificate to workers.
        insecure: allow plaintext on a non-loopback address.
        enroll_token_file: the enrollment secret workers register with; default
            ``<data_dir>/enroll.token``, made (random, 0600) when missing.
        admin_token_file: when set, an admin token is made into this file (0600) if it does not
            exist, and the token in it is registered as admin ``admin_name`` (``codecbench up``).
        admin_name: the user name of that admin token.
        probe_interval_s: pause between attempts to reach a PENDING worker.
        lost_worker_ttl_s: how long a LOST worker stays in the worker list before it is pruned.
        owner_weights: experiments per fair-share turn by owner name (others: 1); see
            :mod:`orchestrator_svc.scheduler`.
        metrics_port: serve Prometheus metrics at ``http://metrics_host:metrics_port/metrics``
            (0 picks a free port); None (default): no metrics endpoint. See docs/metrics.md.
        metrics_host: the address the metrics endpoint binds (plain HTTP, no authentication: keep
            it on loopback or a network only Prometheus reaches).
        leader_poll_s: on PostgreSQL, how often a standby tries the leader lock and the leader
            checks it still holds it (:mod:`orchestrator_svc.leadership`).
        metrics_refresh_s: seconds between two reads of the store for the metrics' live-state
            snapshot (:class:`orchestrator_svc.telemetry.LiveState`).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    store_url: str = ""
    expected_build: str = ""
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 15.0
    max_bundle_bytes: int = 32 * 1024 * 1024
    max_dataset_bytes: int = MAX_DATASET_BYTES
    call_slack_s: float = 120.0
    tls: rpc.TlsConfig = rpc.NO_TLS
    insecure: bool = False
    enroll_token_file: Path | None = None
    admin_token_file: Path | None = None
    admin_name: str = "admin"
    probe_interval_s: float = 0.5
    lost_worker_ttl_s: float = 3600.0
    owner_weights: dict[str, int] = field(default_factory=dict)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    leader_poll_s: float = 1.0
    metrics_refresh_s: float = 5.0

    @property
    def uses_sqlite(self) -> bool:
        """Whether the store is SQLite (the default file in the data directory, or a ``sqlite:`` URL)."""
        return not self.store_url or self.store_url.startswith("sqlite")


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
    """A running orchestrator: its server, store, scheduler and workers.

    Attributes:
        enroll_secret: the secret a worker presents to register (the enrollment token file's content).
    """

    server: grpc.aio.Server
    port: int
    address: str
    store: Store
    scheduler: Scheduler
    registry: WorkerRegistry
    servicer: OrchestratorServicer
    health: grpc_health.aio.HealthServicer
    data: DataDir
    enroll_secret: str = field(default="", repr=False)
    # The data directory's lock (disk.lock_data_dir), held while the service runs; -1: released.
    lock_fd: int = -1
    telemetry: OrchestratorTelemetry = field(default_factory=OrchestratorTelemetry)
    # The /metrics endpoint (config.metrics_port); None when it is off.
    metrics: MetricsServer | None = None
    # On PostgreSQL: the leader lock (None on SQLite).
    leadership: Leadership | None = None

    @property
    def leading(self) -> bool:
        """Whether this orchestrator serves: always on SQLite, while it holds the leader lock on PostgreSQL."""
        return self.leadership is None or self.leadership.held

    async def stop(self, grace_s: float = 2.0) -> None:
        """NOT_SERVING, then stop serving, then stop dispatching (RUNNING rows stay for recovery),
        then hand the leader lock on (PostgreSQL)."""
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)  # joins the HTTP thread
            self.metrics = None
        if self.telemetry.live is not None:
            await self.telemetry.live.stop()
        await rpc.set_serving(self.health, [SERVICE_NAME], serving=False)
        await self.server.stop(grace_s)
        await self.scheduler.stop()
        await self.registry.close()
        if self.leadership is not None:
            await self.leadership.close()
        self.store.close()
        if self.lock_fd >= 0:
            unlock_data_dir(self.lock_fd)
            self.lock_fd = -1


async def start_orchestrator(config: OrchestratorConfig) -> OrchestratorHandle:
    """Starts an orchestrator on ``config.host:config.port`` (0 picks a free port).

    Raises:
        rpc.BindError: the address could not be bound (an OSError).
        OSError: a secret file could not be read or made.
        ValueError: a non-loopback address without TLS or ``insecure``; an empty secret file.
        DataDirBusy: another orchestrator, or ``gc``, holds the data directory (SQLite only: on
            PostgreSQL the orchestrators of one database may share it, and the leader lock decides).
    """
    rpc.check_listen_security(config.host, config.tls, config.insecure)
    private_dir(config.data_dir)
    lock_fd = lock_data_dir(config.data_dir, "the orchestrator") if config.uses_sqlite else -1
    try:
        return await _start(config, lock_fd)
    except BaseException:
        if lock_fd >= 0:
            unlock_data_dir(lock_fd)
        raise


async def _start(config: OrchestratorConfig, lock_fd: int) -> OrchestratorHandle:
    if not config.store_url:
        private_file(config.data_dir / "codecbench.db")
    data = DataDir(config.data_dir)
    url = config.store_url or f"sqlite:///{config.data_dir / 'codecbench.db'}"
    try:
        store = Store(url)
    except Exception as exc:
        # On a full disk SQLite cannot make its WAL files ("disk I/O error"): the reserve file makes
        # the room; when it is used up (a second start on the still full disk), the service starts
        # with the database read-only, and opens it for writing once space returns.
        if data.release_reserve():
            store = Store(url)
        elif not config.store_url and data.no_room(exc):
            store = Store.open_read_only(config.data_dir / "codecbench.db")
            data.on_writable.append(store.reopen_writable)
        else:
            raise
        data.mark_full()
    data.keep_reserve()
    blobs = BlobStore(config.data_dir / "blobs")
    enroll_secret = auth.ensure_secret_file(config.enroll_token_file or config.data_dir / auth.ENROLL_TOKEN_FILE)
    ledger = Ledger(store)
    expected = config.expected_build or build.build_id()
    registry = WorkerRegistry(expected, config.tls, config.probe_interval_s)
    stats = OrchestratorTelemetry()
    scheduler = Scheduler(store, ledger, registry, config.heartbeat_timeout_s, config.call_slack_s,
                          config.lost_worker_ttl_s, data, config.owner_weights, stats, blobs)
    registry.on_ready = scheduler.wake.set
    data.on_writable.append(scheduler.settle_unstored)
    leadership = Leadership(store, config.leader_poll_s) if store.is_postgresql else None

    async def take_office() -> None:
        try:
            # Writes at start: on a full disk the service starts anyway, serving reads (NOT_SERVING)
            # and settling these once it can write (data.on_writable).
            collect_garbage(store, blobs)
            if store.find_dataset(datasets.PHOTOS) != builtin_photos():
                store.put_dataset(builtin_photos())
            if config.admin_token_file is not None:
                ensure_admin_token(store, config.admin_token_file, config.admin_name)
            await scheduler.recover()
        except Exception as exc:
            if not data.no_room(exc):
                raise
            data.mark_full()

    leading = leadership is None or leadership.try_acquire()
    if leading:
        await take_office()
    servicer = OrchestratorServicer(
        store,
        ledger,
        scheduler,
        registry,
        blobs,
        config.max_bundle_bytes,
        config.heartbeat_interval_s,
        config.max_dataset_bytes,
    )
    guard = OrchestratorGuard(store, enroll_secret)
    if not leading:
        guard.standby = "this orchestrator is a standby: another one holds the database's leader lock"
    server = grpc.aio.server(options=rpc.server_options(),
                             interceptors=[stats.rpcs, ErrorBoundary(guard, data.translate)])
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)
    health = rpc.add_health_and_reflection(server, [SERVICE_NAME])
    data.health, data.service_names = health, [SERVICE_NAME]
    port = rpc.bind(server, config.host, config.port, config.tls)
    metrics = None
    if config.metrics_port is not None:
        stats.watch(store, registry, lambda: leadership is None or leadership.held, config.metrics_refresh_s)
        metrics = serve_metrics(stats.registry, config.metrics_host, config.metrics_port)
    await server.start()
    await rpc.set_serving(health, [SERVICE_NAME], serving=leading and not data.full)
    log = logs.get_logger("orchestrator")
    address = f"{config.host}:{port}"
    if leading:
        scheduler.start()
    if leadership is not None:

        async def on_acquired() -> None:
            await take_office()
            guard.standby = ""
            scheduler.start()
            await rpc.set_serving(health, [SERVICE_NAME], serving=not data.full)
            log.info("orchestrator.leading", address=address)

        async def on_lost() -> None:
            guard.standby = "this orchestrator lost the database's leader lock and stepped down"
            await rpc.set_serving(health, [SERVICE_NAME], serving=False)
            await scheduler.stop()

        leadership.start(on_acquired, on_lost)
    log.info(
        "orchestrator.started",
        address=address,
        expected_build=expected,
        store=store.engine.url.render_as_string(hide_password=True),
        role="leader" if leading else "standby",
        tls="mutual" if config.tls.ca else ("server" if config.tls.enabled else "off"),
        metrics=metrics.url if metrics else "off",
    )
    return OrchestratorHandle(server, port, address, store, scheduler, registry, servicer, health, data, enroll_secret,
                              lock_fd, stats, metrics, leadership)


def private_dir(path: Path) -> None:
    """Creates ``path`` (and missing parents) and makes it 0700: only the service's user enters it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Creates ``path`` empty with mode 0600 when missing, else sets its mode to 0600 (a database
    file, before SQLite opens it: SQLite gives its WAL and SHM files the database file's mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def create_token(store: Store, name: str, admin: bool = False) -> str:
    """Makes a new API token for user ``name``; only its hash is stored.

    Args:
        store: the orchestrator's store.
        name: the user's name (1-200 characters).
        admin: role ``admin`` (sees everything, shares datasets, drains workers) instead of ``user``.

    Returns:
        The token (shown once; it cannot be recovered from the store).

    Raises:
        ValueError: a bad name.
    """
    if not name or len(name) > 200 or name == "*":
        raise ValueError(f"user name {name!r} must have 1-200 characters and not be '*'")
    token = auth.new_token()
    store.add_token(auth.token_hash(token), name, auth.ROLE_ADMIN if admin else auth.ROLE_USER)
    return token


def ensure_admin_token(store: Store, path: Path, name: str) -> None:
    """Makes an admin token in ``path`` (0600) when the file is missing, and registers the token in
    it as admin ``name`` when the store does not know it (a fresh store under an old data dir).

    Raises:
        OSError: the file cannot be read or made.
        ValueError: the file is empty.
    """
    token = auth.ensure_secret_file(path)
    if store.find_token(auth.token_hash(token)) is None:
        store.add_token(auth.token_hash(token), name, auth.ROLE_ADMIN)
