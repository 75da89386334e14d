"""Worker list hygiene: LOST workers leave the list after a TTL; their history stays (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent_bundle, eventually
from helpers.services import attach_worker, orchestrator

from codecbench.client import Client
from codecbench.states import SUCCEEDED
from codecbench.v1 import orchestrator_pb2

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
