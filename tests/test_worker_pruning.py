"""Worker list hygiene: LOST workers leave the list after a TTL; their history stays (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent_bundle, eventually
from helpers.services import attach_worker, orchestrator

from codecbench import devices
from codecbench.client import Client
from codecbench.states import SUCCEEDED
from codecbench.v1 import orchestrator_pb2, worker_pb2
from orchestrator_svc.workers import PENDING, WorkerEntry, WorkerRegistry

pytestmark = pytest.mark.timeout(120)


async def test_lost_workers_are_pruned_after_the_ttl_and_stay_in_the_event_history(tmp_path: Path) -> None:
    """Dead workers were never removed (34 LOST entries after a chaos run)."""
    async with orchestrator(tmp_path / "orch", lost_worker_ttl_s=1.0) as orch, Client(orch.address) as client:
        worker = await attach_worker(orch, tmp_path / "w", use_bwrap=False)
        worker_id = worker.handle.info.worker_id
        exp = await client.submit(agent_bundle("jpeg"))
        assert (await client.wait(exp.experiment_id)).state == SUCCEEDED
        await worker.stop()
        # Only now a short heartbeat timeout: under load a 1 s one could lose the worker mid-run.
        orch.scheduler.heartbeat_timeout_s = 1.0

        async def states() -> list[int]:
            return [w.state for w in await client.workers() if w.info.worker_id == worker_id]

        async def lost() -> bool:
            return await states() == [orchestrator_pb2.WORKER_STATE_LOST]

        async def pruned() -> bool:
            return await states() == []

        await eventually(lost, what="the stopped worker is LOST")
        await eventually(pruned, what="the LOST worker leaves the list after its TTL")
        events = [e async for e in client.watch(exp.experiment_id)]
        assert any(e.state_change.worker_id == worker_id for e in events)
        assert (await client.get(exp.experiment_id)).worker_id == worker_id


def _info(worker_id: str) -> worker_pb2.WorkerInfo:
    return worker_pb2.WorkerInfo(worker_id=worker_id, address="127.0.0.1:9", build_id="build-x", slots=1)


async def test_a_worker_that_registers_again_during_a_prune_keeps_its_fresh_entry() -> None:
    """prune_lost deleted by id after awaiting a channel close: a worker that registered again in
    between lost its fresh entry."""
    registry = WorkerRegistry("build-x", probe_interval_s=60)
    try:
        first = await registry.register(_info("w-a"), "cred-a")
        second = await registry.register(_info("w-b"), "cred-b")
        for entry in (first, second):
            entry.lost_reason, entry.lost_time = "lost: test", 1.0
        fresh: list[WorkerEntry] = []
        close = first.channel.close

        async def close_while_w_b_registers_again(grace: float | None = None) -> None:
            await close(grace)
            fresh.append(await registry.register(_info("w-b"), "cred-b"))

        first.channel.close = close_while_w_b_registers_again  # type: ignore[method-assign]
        assert await registry.prune_lost(before=10.0) == ["w-a"]
        assert fresh and registry.get("w-b") is fresh[0] and registry.get("w-a") is None
    finally:
        await registry.close()


async def test_a_pending_worker_counts_as_able_at_the_queue_deadline() -> None:
    """A registered worker not yet reached (PENDING) made queued work UNSCHEDULABLE at its deadline."""
    registry = WorkerRegistry("build-x", probe_interval_s=60)
    try:
        entry = await registry.register(_info("w-p"), "cred")
        assert entry.state == PENDING
        assert registry.unschedulable_reason(devices.CPU) == ""
    finally:
        await registry.close()
