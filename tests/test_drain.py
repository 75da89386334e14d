"""Graceful drain for rolling upgrades (issue 16, point 5): SIGTERM on a worker tells the
orchestrator it drains, lets running experiments finish within ``--drain-grace-s``, then stops;
what still runs then is requeued with a new attempt that does not count against the limit."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from helpers import TEST_ADMIN_TOKEN, agent_bundle, eventually
from helpers.services import AttachedWorker, admin_token_file, attach_worker, orchestrator, write_images
from helpers.worker import agent_processes

from codecbench import rpc
from codecbench.client import Client
from codecbench.local import LocalService, spawn_service, worker_isolation_args
from codecbench.v1 import experiment_pb2, orchestrator_pb2, types_pb2
from codecbench.v1.orchestrator_pb2_grpc import OrchestratorServiceStub
from orchestrator_svc.ledger import MAX_UNCOUNTED_DRAIN_REQUEUES, Ledger
from orchestrator_svc.server import OrchestratorHandle
from orchestrator_svc.store import Store

pytestmark = pytest.mark.timeout(240)

SUCCEEDED = experiment_pb2.EXPERIMENT_STATE_SUCCEEDED


async def _events(client: Client, experiment_id: str) -> list[experiment_pb2.ExperimentEvent]:
    return [event async for event in client.watch(experiment_id)]


async def test_a_grace_period_shorter_than_the_experiment_requeues_it_without_spending_an_attempt(
    tmp_path: Path,
) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        workers = [await attach_worker(orch, tmp_path / name) for name in ("a", "b")]
        try:
            for worker in workers:
                await _ready(orch, worker.handle.info.worker_id)
            # A worker drains itself only.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await workers[0].link.stub.DrainWorker(
                    orchestrator_pb2.DrainWorkerRequest(worker_id=workers[1].handle.info.worker_id))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                # max_attempts 1: were the stopped attempt counted, the experiment would fail.
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="one", points=[{"delay_s": 4}],
                                          max_attempts=1)
                async for event in client.watch(exp.experiment_id):
                    if event.WhichOneof("event") == "progress" and event.progress.phase == types_pb2.PHASE_ENCODE:
                        break
                first, second = workers if exp.experiment_id in workers[0].handle.servicer.running else workers[::-1]
                assert exp.experiment_id in first.handle.servicer.running
                stopped = await first.link.drain(first.handle, grace_s=0.2)
                assert stopped == 1
                assert not first.handle.servicer.running and not agent_processes(first.handle.info.pid)
                entry = orch.registry.get(first.handle.info.worker_id)
                assert entry is not None and entry.state == orchestrator_pb2.WORKER_STATE_DRAINING
                assert entry.lost_reason == ""  # a deliberate stop, not a lost worker

                done = await client.wait(exp.experiment_id)
                assert done.state == SUCCEEDED, done.error
                assert (done.attempt, done.max_attempts, done.worker_id) == (2, 2, second.handle.info.worker_id)
                events = await _events(client, exp.experiment_id)
                requeues = [e.state_change for e in events if e.WhichOneof("event") == "state_change"
                            and e.state_change.state == experiment_pb2.EXPERIMENT_STATE_QUEUED]
                assert [r.attempt for r in requeues] == [1, 2]
                assert "draining" in requeues[1].reason and "WORKER_DRAINING" not in requeues[1].reason
                assert sum(e.WhichOneof("event") == "result" for e in events) == 1
                # the drained worker counted it as drained, not as succeeded or failed
                registry = first.handle.servicer.stats.registry
                counted = {outcome: registry.get_sample_value("codecbench_worker_experiments_total",
                                                              {"outcome": outcome, "error_kind": "none"})
                           for outcome in ("drained", "succeeded")}
                assert counted == {"drained": 1.0, "succeeded": None}
        finally:
            for worker in workers:
                await worker.stop()


async def _spawn_worker(orch: OrchestratorHandle, tmp_path: Path, name: str) -> LocalService:
    return await spawn_service(
        "worker_svc", "--port", "0", "--orchestrator", orch.address, "--slots", "1",
        "--enroll-token-file", str(tmp_path / "orch" / "enroll.token"), "--data-dir", str(tmp_path / name),
        "--drain-grace-s", "60", *worker_isolation_args(), log_path=tmp_path / f"{name}.log", name=name)


def _worker_id(service: LocalService) -> str:
    return service.ready_line.split()[2]  # "codecbench worker ID listening on HOST:PORT"


async def _ready(orch: OrchestratorHandle, worker_id: str) -> None:
    async def reached() -> bool:
        entry = orch.registry.get(worker_id)
        return entry is not None and entry.state in (orchestrator_pb2.WORKER_STATE_READY,
                                                     orchestrator_pb2.WORKER_STATE_BUSY)

    await eventually(reached, timeout_s=60, what=f"worker {worker_id} registered and reached")


async def _sigterm_while_running(orch: OrchestratorHandle, service: LocalService) -> None:
    """SIGTERMs the worker once it runs an experiment, and waits for its exit (status 0)."""
    worker_id = _worker_id(service)

    def busy() -> bool:
        entry = orch.registry.get(worker_id)
        return entry is not None and bool(entry.running)

    await eventually(busy, timeout_s=60, what=f"worker {service.name} running an experiment")
    service.send_signal(signal.SIGTERM)
    entry = orch.registry.get(worker_id)
    assert entry is not None
    await eventually(lambda: entry.draining, timeout_s=10, what=f"worker {service.name} announced its drain")
    assert await service.process.wait() == 0


async def test_a_rolling_replacement_of_two_workers_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Workers A and B are processes that get a real SIGTERM; their replacements C and D run in this
    process (they are never signalled, and start in a fraction of a process's time)."""
    images = write_images(tmp_path / "imgs", [(24, 24)])
    async with orchestrator(tmp_path / "orch", admin_token_file=admin_token_file(tmp_path)) as orch:
        services: list[LocalService] = []
        replacements: list[AttachedWorker] = []
        try:
            started = await asyncio.gather(*(_spawn_worker(orch, tmp_path, name) for name in ("a", "b")),
                                           return_exceptions=True)
            services += [s for s in started if isinstance(s, LocalService)]
            assert len(services) == 2, started
            a, b = services
            for service in services:
                await _ready(orch, _worker_id(service))
            async with Client(orch.address) as client:
                await client.upload_dataset("tiny", images)
                submitted = await client.submit_many([agent_bundle("slow_lossless")] * 50, dataset="tiny",
                                                     points=[{"delay_s": 0.3}], no_cache=True)
                ids = [s.experiment.experiment_id for s in submitted]
                assert len(set(ids)) == 50

                replacements.append(c := await attach_worker(orch, tmp_path / "c"))
                await _ready(orch, c.handle.info.worker_id)
                await _sigterm_while_running(orch, a)
                replacements.append(d := await attach_worker(orch, tmp_path / "d"))
                await _ready(orch, d.handle.info.worker_id)
                await _sigterm_while_running(orch, b)

                finished = [await client.wait(i) for i in ids]
                assert [e.state for e in finished] == [SUCCEEDED] * 50, [e.error for e in finished if e.error.kind]
                ran_on = {e.worker_id for e in finished}
                assert {_worker_id(a), _worker_id(b), c.handle.info.worker_id, d.handle.info.worker_id} <= ran_on
                for experiment_id in ids:
                    events = await _events(client, experiment_id)
                    kinds = [e.WhichOneof("event") for e in events]
                    assert kinds.count("result") == 1 and kinds.count("error") == 0, (experiment_id, kinds)
                    reasons = [e.state_change.reason for e in events if e.WhichOneof("event") == "state_change"]
                    assert not any("lost" in r for r in reasons), (experiment_id, reasons)
        finally:
            for service in services:
                await service.stop(timeout_s=30)
            for worker in replacements:
                await worker.stop()


async def test_a_drain_refusal_the_orchestrator_was_not_told_of_spends_the_attempt(tmp_path: Path) -> None:
    """Issue 16 fix 4: a worker that refuses with WORKER_DRAINING without having announced a drain
    (DrainWorker) gets no free attempt: with max_attempts 1 the experiment fails instead of being
    requeued with one more attempt each time."""
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            await _ready(orch, worker.handle.info.worker_id)
            worker.handle.servicer.draining = True  # refuses every experiment WORKER_DRAINING, unannounced
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                exp = await client.submit(agent_bundle("zlib_lossless"), dataset="one", max_attempts=1)
                done = await client.wait(exp.experiment_id)
            assert done.state == experiment_pb2.EXPERIMENT_STATE_FAILED
            assert (done.attempt, done.max_attempts) == (1, 1)
            assert "never announced" in done.error.message
        finally:
            await worker.stop()


async def test_drain_requeues_spare_the_attempt_at_most_three_times(tmp_path: Path) -> None:
    """Issue 16 fix 4: each drain stop of a known-draining worker gives the attempt back, but only
    MAX_UNCOUNTED_DRAIN_REQUEUES times per experiment; after that drains count, so it ends FAILED."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ledger = Ledger(store)
    exp = orchestrator_pb2.Experiment(experiment_id="exp-1", state=experiment_pb2.EXPERIMENT_STATE_QUEUED,
                                      attempt=1, max_attempts=2, dataset="photos", owner="alice")
    exp.create_time.GetCurrentTime()
    await ledger.create(exp)
    spared = []
    for _ in range(20):  # bounded: without the cap every drain would requeue it
        current = store.get_experiment("exp-1")
        assert current is not None
        if current.state != experiment_pb2.EXPERIMENT_STATE_QUEUED:
            break
        assert await ledger.dispatched("exp-1", current.attempt, "w-hostile")
        spared.append(await ledger.requeue_stopped("exp-1", current.attempt, "worker w-hostile is draining"))
    assert spared == [True] * MAX_UNCOUNTED_DRAIN_REQUEUES + [False, False]
    final = store.get_experiment("exp-1")
    assert final is not None and final.state == experiment_pb2.EXPERIMENT_STATE_FAILED
    assert (final.attempt, final.max_attempts) == (2 + MAX_UNCOUNTED_DRAIN_REQUEUES,) * 2
    assert ledger.uncounted_drain_requeues("exp-1") == MAX_UNCOUNTED_DRAIN_REQUEUES
    store.close()


async def test_a_second_sigterm_ends_the_grace_period_at_once_and_the_worker_leaves_the_list(tmp_path: Path) -> None:
    """Issue 16 fixes 5 and 6: an operator need not wait out --drain-grace-s (60 s here): a second
    SIGTERM stops the running experiment at once, which is requeued as at the end of the grace
    period; the drained worker then tells the orchestrator it exits and leaves the worker list."""
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        service = await _spawn_worker(orch, tmp_path, "a")
        try:
            await _ready(orch, _worker_id(service))
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="one", points=[{"delay_s": 120}],
                                          max_attempts=1)
                await _sigterm_while_running_then_again(orch, service)
                def requeued() -> bool:
                    now = orch.store.get_experiment(exp.experiment_id)
                    return now is not None and now.state == experiment_pb2.EXPERIMENT_STATE_QUEUED

                await eventually(requeued, what="the stopped experiment back in the queue")
                events = orch.store.events_after(exp.experiment_id, 0)  # (a watch waits for its end)
                requeues = [e.state_change for e in events if e.WhichOneof("event") == "state_change"
                            and e.state_change.state == experiment_pb2.EXPERIMENT_STATE_QUEUED]
                assert [r.attempt for r in requeues] == [1, 2] and "draining" in requeues[1].reason
                again = await client.get(exp.experiment_id)
                assert (again.state, again.attempt, again.max_attempts) == (
                    experiment_pb2.EXPERIMENT_STATE_QUEUED, 2, 2)  # requeued, the attempt not counted
        finally:
            await service.stop(timeout_s=30)


async def _sigterm_while_running_then_again(orch: OrchestratorHandle, service: LocalService) -> None:
    """SIGTERM once it runs an experiment, a second SIGTERM once its drain is announced; waits for
    its exit, well inside the 60 s grace period the first SIGTERM alone would wait out."""
    worker_id = _worker_id(service)
    entry = orch.registry.get(worker_id)
    assert entry is not None
    await eventually(lambda: bool(entry.running), timeout_s=60, what=f"worker {service.name} running")
    service.send_signal(signal.SIGTERM)
    await eventually(lambda: entry.draining, timeout_s=10, what=f"worker {service.name} announced its drain")
    service.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.wait(), timeout=30) == 0
    # Issue 16 fix 6: it said it exits, so it left the worker list at once (never LOST).
    assert orch.registry.get(worker_id) is None and not entry.lost_reason


async def test_only_a_worker_says_it_exits(tmp_path: Path) -> None:
    """DrainWorker ``exiting`` removes a worker from the list: an admin may drain, not remove."""
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            worker_id = worker.handle.info.worker_id
            async with rpc.channel(orch.address, TEST_ADMIN_TOKEN) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await OrchestratorServiceStub(channel).DrainWorker(
                        orchestrator_pb2.DrainWorkerRequest(worker_id=worker_id, exiting=True))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "exiting" in (refused.value.details() or "")
            assert orch.registry.get(worker_id) is not None
            await worker.link.stub.DrainWorker(orchestrator_pb2.DrainWorkerRequest(worker_id=worker_id, exiting=True))
            assert orch.registry.get(worker_id) is None
        finally:
            await worker.stop()
