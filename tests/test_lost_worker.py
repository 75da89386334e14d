"""A worker the orchestrator declares LOST stops the attempt it was running (red-team H1): the
orchestrator cancels the worker's RunExperiment stream, so the worker kills the sandbox and frees
the slot instead of running on after the experiment was failed or requeued."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent_bundle, eventually
from helpers.services import attach_worker, orchestrator, write_images
from helpers.worker import agent_processes

from codecbench.client import Client
from codecbench.v1 import errors_pb2, experiment_pb2, types_pb2

pytestmark = pytest.mark.timeout(120)


async def test_a_worker_marked_lost_stops_the_attempt_it_was_running(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="one", points=[{"delay_s": 600}],
                                          max_attempts=1)
                async for event in client.watch(exp.experiment_id):
                    if event.WhichOneof("event") == "progress" and event.progress.phase == types_pb2.PHASE_ENCODE:
                        break
                assert exp.experiment_id in worker.handle.servicer.running and agent_processes()
                entry = orch.registry.get(worker.handle.info.worker_id)
                assert entry is not None
                orch.scheduler.mark_lost(entry, "declared lost by the test")

                async def failed() -> bool:
                    return (await client.get(exp.experiment_id)).state == experiment_pb2.EXPERIMENT_STATE_FAILED

                await eventually(failed, timeout_s=10, what="the experiment FAILED as WORKER_LOST")
                assert (await client.get(exp.experiment_id)).error.kind == errors_pb2.ERROR_KIND_WORKER_LOST
                # The worker learnt of it through the cancelled stream: the attempt is over there too.
                await eventually(lambda: exp.experiment_id not in worker.handle.servicer.running, timeout_s=10,
                                 what="the worker to stop the attempt")
                await eventually(lambda: not agent_processes(), timeout_s=10, what="sandbox processes gone")
                assert worker.handle.servicer.slots_in_use == 0
        finally:
            await worker.stop()
