"""Shared fixtures: real servers on 127.0.0.1, ephemeral ports, and polling helpers."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from codecbench import bundles, logs, rpc
from codecbench.v1 import worker_pb2_grpc
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

REPO = Path(__file__).resolve().parent.parent
AGENTS = REPO / "agents"
TEST_AGENTS = Path(__file__).resolve().parent / "agents"

logs.configure("warning")

# Tests of what bubblewrap does (namespaces, the filesystem view, the agent's uid) need it; the rest
# of the suite runs without it, with the worker in process isolation.
requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: install the package 'bubblewrap' (make setup does, as root with apt)",
)


def agent_bundle(name: str):
    """A bundle of a reference agent (``agents/NAME``) or a test agent (``tests/agents/NAME``)."""
    folder = AGENTS / name if (AGENTS / name).is_dir() else TEST_AGENTS / name
    return bundles.bundle_from_dir(folder)


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 20.0, what: str = "") -> None:
    """Polls ``check`` until it is true (no sleeps as synchronisation: a bounded poll)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {what or check}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="session")
async def worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerHandle]:
    """A real worker server on 127.0.0.1 (port 0), shared by the session."""
    handle = await start_worker(WorkerConfig(data_dir=tmp_path_factory.mktemp("worker"), slots=2))
    yield handle
    await handle.stop(0)


@pytest_asyncio.fixture(scope="session")
async def worker_stub(worker: WorkerHandle) -> AsyncIterator[worker_pb2_grpc.WorkerServiceStub]:
    channel = rpc.insecure_channel(worker.address)
    yield worker_pb2_grpc.WorkerServiceStub(channel)
    await channel.close()
