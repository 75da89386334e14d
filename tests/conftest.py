"""Shared fixtures: a real worker server on 127.0.0.1 (port 0) for the session.

Shared functions (paths, agent bundles, the bounded poll, starting services) are in the
:mod:`helpers` package, not here: test modules import from ``helpers``, never from ``conftest``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from helpers import TEST_ADMIN_TOKEN, worker_channel

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
