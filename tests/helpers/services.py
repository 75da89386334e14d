"""Starting real codecbench services in the test's process (an orchestrator, workers that register
with it), and test data for them. Services as child processes that a test can SIGKILL are
:func:`codecbench.local.spawn_service`, the launcher's own helper.

Authentication: the test session has one admin token, :data:`TEST_ADMIN_TOKEN`, in
``$CODECBENCH_TOKEN`` (so every ``Client()`` of the tests sends it); every orchestrator these
helpers start accepts it (:func:`admin_token_file`), and workers attach with the
orchestrator's enrollment secret.

Store: the orchestrators start on :data:`database_url` when it is set (the ``orchestrator_backend``
fixture sets it to a fresh PostgreSQL database), else on their default SQLite file; a spawned one
takes :func:`database_args`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from codecbench import auth
from helpers import TEST_ADMIN_TOKEN
from helpers.worker import png_bytes
from orchestrator_svc.server import OrchestratorConfig, OrchestratorHandle, start_orchestrator
from worker_svc.registration import OrchestratorLink
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

# The store URL of the orchestrators the current test starts ("": their default SQLite file).
database_url = ""


# For a test of an orchestrator module that runs on both backends but is about something the store
# takes no part in (request validation, image decoding, build ids) or about SQLite itself: SQLite only.
sqlite_only = pytest.mark.parametrize("orchestrator_backend", ["sqlite"], indirect=True)


def database_args() -> list[str]:
    """The command-line arguments that put a spawned orchestrator on :data:`database_url`."""
    return ["--database-url", database_url] if database_url else []


def admin_token_file(folder: Path) -> Path:
    """A 0600 file holding :data:`TEST_ADMIN_TOKEN` (for ``--admin-token-file`` of a spawned orchestrator)."""
    path = folder / "test-admin.token"
    if not path.exists():
        auth.write_secret_file(path, TEST_ADMIN_TOKEN)
    return path


def free_port() -> int:
    """A port that was free a moment ago (for a service that must come back on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        (folder / f"img{i}.png").write_bytes(png_bytes(h, w, seed=i + 1))
    return folder


@dataclass
class AttachedWorker:
    handle: WorkerHandle
    link: OrchestratorLink
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.handle.stop(0)
        await self.link.close()


async def attach_worker(
    orchestrator: OrchestratorHandle | str, data_dir: Path, enroll_secret: str = "", **config: object
) -> AttachedWorker:
    """An in-process worker that registers with the orchestrator and sends heartbeats.

    Args:
        orchestrator: an in-process orchestrator, or the address of one (then ``enroll_secret`` is needed).
        data_dir: the worker's data directory.
        enroll_secret: the enrollment secret; default: the in-process orchestrator's.
        config: more :class:`WorkerConfig` fields.
    """
    if isinstance(orchestrator, str):
        address = orchestrator
    else:
        address, enroll_secret = orchestrator.address, enroll_secret or orchestrator.enroll_secret
    link = OrchestratorLink(address, enroll_secret)
    config.setdefault("admin_token", TEST_ADMIN_TOKEN)
    handle = await start_worker(WorkerConfig(data_dir=data_dir, **config), link.read_blob)  # type: ignore[arg-type]
    return AttachedWorker(handle, link, asyncio.create_task(link.keep_registered(handle)))


@asynccontextmanager
async def orchestrator(data_dir: Path, **config: object) -> AsyncIterator[OrchestratorHandle]:
    """An in-process orchestrator that accepts :data:`TEST_ADMIN_TOKEN` as an admin token."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config.setdefault("admin_token_file", admin_token_file(data_dir))
    config.setdefault("store_url", database_url)
    handle = await start_orchestrator(OrchestratorConfig(data_dir=data_dir, **config))  # type: ignore[arg-type]
    try:
        yield handle
    finally:
        await handle.stop(0)
