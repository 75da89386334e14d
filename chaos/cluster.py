"""The services a chaos run attacks: an orchestrator and real workers as child processes, each of
which can be SIGKILLed and started again (the orchestrator on the same port and data directory,
so its clients and workers reconnect to it).

Workers sandbox agents as they do by default (bubblewrap, when installed): their agent processes
are then forked from a warm template (~0.1 s an experiment); without bubblewrap each agent process
is a fresh interpreter (~3 s), and a chaos run takes proportionally longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path

from codecbench import auth, errors, local
from codecbench.client import Client
from codecbench.local import LocalService
from codecbench.v1 import orchestrator_pb2

STARTUP_S = 180.0  # a worker imports torch; on a loaded 2-core machine that takes a while


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago (the orchestrator comes back on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    """An orchestrator and workers under ``root``; see :meth:`start`.

    Attributes:
        root: working directory: ``orchestrator/`` (data), ``w<N>/`` (worker data), ``logs/``.
        port: the orchestrator's port (kept across restarts).
        heartbeat_timeout_s: the orchestrator's ``--heartbeat-timeout-s``: a killed worker is LOST
            this long after its last heartbeat.
        slots: slots per worker.
        orchestrator_args: more orchestrator arguments.
        orchestrator_data: the orchestrator's data directory (default ``root/orchestrator``).
        log_dir: where the services' logs go (default ``root/logs``).
    """

    root: Path
    port: int = field(default_factory=free_port)
    heartbeat_timeout_s: float = 3.0
    slots: int = 2
    orchestrator_args: list[str] = field(default_factory=list)
    orchestrator_data: Path | None = None
    log_dir: Path | None = None
    orchestrator: LocalService | None = None
    workers: list[LocalService] = field(default_factory=list)
    started_workers: int = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the orchestrator."""
        return f"127.0.0.1:{self.port}"

    @property
    def token_file(self) -> Path:
        """The admin token (0600) the orchestrator accepts."""
        return self.root / "admin.token"

    @property
    def data_dir(self) -> Path:
        """The orchestrator's data directory."""
        return self.orchestrator_data or self.root / "orchestrator"

    @property
    def logs(self) -> Path:
        """The services' log folder."""
        return self.log_dir or self.root / "logs"

    def client(self) -> Client:
        """A client of the orchestrator with the admin token."""
        return Client(self.address, token_file=self.token_file)

    async def start_orchestrator(self) -> LocalService:
        """Starts (or restarts) the orchestrator on :attr:`port` and waits for its listening line."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.orchestrator = await local.spawn_service(
            "orchestrator_svc", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--admin-token-file", str(self.token_file), "--heartbeat-timeout-s", str(self.heartbeat_timeout_s),
            *self.orchestrator_args, log_path=self.logs / "orchestrator.log", name="orchestrator",
            startup_s=STARTUP_S,
        )
        return self.orchestrator

    async def start_worker(self) -> LocalService:
        """Starts one more worker registered with the orchestrator (its own data directory)."""
        index = self.started_workers
        self.started_workers += 1
        worker = await local.spawn_service(
            "worker_svc", "--port", "0", "--orchestrator", self.address, "--slots", str(self.slots),
            "--data-dir", str(self.root / f"w{index}"), "--log-level", "warning",
            "--enroll-token-file", str(self.data_dir / auth.ENROLL_TOKEN_FILE),
            "--admin-token-file", str(self.token_file),
            *local.worker_isolation_args(),
            log_path=self.logs / f"worker{index}.log", name=f"worker {index}", startup_s=STARTUP_S,
        )
        self.workers.append(worker)
        return worker

    async def start(self, workers: int) -> None:
        """Starts the orchestrator and ``workers`` workers, and waits until all are READY."""
        await self.start_orchestrator()
        await asyncio.gather(*(self.start_worker() for _ in range(workers)))  # each imports torch: in parallel
        await self.wait_ready(workers)

    async def wait_ready(self, count: int, timeout_s: float = STARTUP_S) -> None:
        """Waits until the orchestrator lists ``count`` READY workers.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        async with self.client() as client:

            async def ready() -> bool:
                try:
                    listed = await client.workers()
                except errors.CodecbenchError:
                    return False
                return sum(w.state == orchestrator_pb2.WORKER_STATE_READY for w in listed) >= count

            await local.eventually(ready, timeout_s, what=f"{count} READY workers", interval_s=0.2)

    def alive_workers(self) -> list[LocalService]:
        """The workers whose process still runs."""
        return [w for w in self.workers if w.process.returncode is None]

    async def kill(self, service: LocalService) -> None:
        """SIGKILLs a service and reaps it."""
        service.kill()
        await service.process.wait()

    async def stop(self) -> None:
        """Stops every service still running (workers first)."""
        for service in [*self.workers, *([self.orchestrator] if self.orchestrator else [])]:
            with contextlib.suppress(ProcessLookupError):
                await service.stop(10.0)

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def database_args(database_url: str) -> list[str]:
    """The orchestrator arguments that put its store on ``database_url`` ("": its SQLite file)."""
    return ["--database-url", database_url] if database_url else []


async def await_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancels and awaits ``tasks`` (helpers of a run that ended early)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
