"""Two orchestrators on one PostgreSQL database run active-standby (issue 16, orchestrator_svc.leadership):
the leader dispatches, the standby reports NOT_SERVING and refuses calls; no experiment is dispatched
twice; when the leader is killed (SIGKILL) or loses its database session, the standby takes over,
recovers what the leader left RUNNING and finishes everything once; gc keeps out of a leader's way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import TEST_ADMIN_TOKEN, agent_bundle, eventually
from helpers.services import admin_token_file, attach_worker, database_args, free_port, orchestrator, write_images
from sqlalchemy import text
from test_telemetry import scrape, value
from typer.testing import CliRunner

from chaos import postgres
from codecbench import rpc
from codecbench.cli import app
from codecbench.client import Client
from codecbench.local import LocalService, spawn_service
from codecbench.states import SUCCEEDED
from codecbench.v1 import experiment_pb2, orchestrator_pb2
from codecbench.v1.orchestrator_pb2_grpc import OrchestratorServiceStub
from orchestrator_svc.__main__ import gc_main
from orchestrator_svc.server import OrchestratorHandle
from worker_svc.server import WorkerHandle

RUNNING = experiment_pb2.EXPERIMENT_STATE_RUNNING
pytestmark = [pytest.mark.timeout(180), pytest.mark.parametrize("orchestrator_backend", ["postgresql"], indirect=True)]


async def _health(address: str) -> int:
    async with rpc.channel(address, "") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


async def _serving(address: str) -> bool:
    return await _health(address) == health_pb2.HealthCheckResponse.SERVING


async def _dispatches(client: Client, experiment_id: str) -> list[experiment_pb2.StateChange]:
    return [e.state_change async for e in client.watch(experiment_id)
            if e.WhichOneof("event") == "state_change" and e.state_change.state == RUNNING]


async def _finished_once(client: Client, ids: list[str]) -> list[experiment_pb2.StateChange]:
    """Waits for every experiment; asserts each SUCCEEDED with one terminal event and at most one
    dispatch per attempt; returns all dispatches."""
    dispatches = []
    for experiment_id in ids:
        assert (await client.wait(experiment_id)).state == SUCCEEDED
        events = [e async for e in client.watch(experiment_id)]
        assert len([e for e in events if e.WhichOneof("event") in ("result", "error")]) == 1
        runs = await _dispatches(client, experiment_id)
        assert len({r.attempt for r in runs}) == len(runs), f"{experiment_id} dispatched twice in one attempt"
        dispatches += runs
    return dispatches

@dataclass
class _Work:
    """A leader in a process of its own, a standby in this one, a worker on each, and four slow
    experiments submitted to the leader, one of them running on its worker."""

    leader: LocalService
    standby: OrchestratorHandle
    standby_worker: WorkerHandle
    ids: list[str]


@contextlib.asynccontextmanager
async def _leader_process_running_work(tmp_path: Path) -> AsyncIterator[_Work]:
    images = write_images(tmp_path / "imgs", [(32, 32)] * 2)
    data_dir = tmp_path / "orch"
    data_dir.mkdir()
    leader = await spawn_service("orchestrator_svc", "--port", "0", "--data-dir", str(data_dir), "--admin-token-file",
                                 str(admin_token_file(data_dir)), *database_args(), log_path=tmp_path / "leader.log")
    try:
        async with orchestrator(data_dir, leader_poll_s=0.2) as standby:
            assert not standby.leading
            enroll = (data_dir / "enroll.token").read_text().strip()
            first = await attach_worker(leader.address, tmp_path / "wa", enroll)
            second = await attach_worker(standby, tmp_path / "wb")
            try:
                async with Client(leader.address) as client:
                    await client.upload_dataset("two", images)
                    ids = [(await client.submit(agent_bundle("slow_lossless"), dataset="two",
                                                points=[{"delay_s": 0.3}])).experiment_id for _ in range(4)]

                    async def one_running() -> bool:
                        return any(e.state == RUNNING for e in await client.list())

                    await eventually(one_running, what="an experiment running on the leader")
                yield _Work(leader, standby, second.handle, ids)
            finally:
                await first.stop()
                await second.stop()
    finally:
        if leader.process.returncode is None:
            os.kill(leader.process.pid, signal.SIGCONT)  # a stopped leader must be able to stop
        await leader.stop()


async def _requeued_on_the_standbys_worker(work: _Work) -> None:
    """Every experiment ended once per attempt, and what ran on the leader ran again (attempt 2) on
    the standby's worker."""
    async with Client(work.standby.address) as client:
        dispatches = await _finished_once(client, work.ids)
        finished = [await client.get(i) for i in work.ids]
    assert max(e.attempt for e in finished) == 2
    assert {d.worker_id for d in dispatches if d.attempt == 2} == {work.standby_worker.info.worker_id}



@pytest.mark.usefixtures("orchestrator_backend")
async def test_the_standby_dispatches_nothing_and_takes_over_when_the_leader_loses_its_session(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    data_dir = tmp_path / "orch"  # shared, as a fleet's orchestrators share a volume (README)
    async with orchestrator(data_dir, leader_poll_s=0.2) as leader, \
            orchestrator(data_dir, leader_poll_s=0.2) as standby:
        assert leader.leading and not standby.leading
        assert await _health(leader.address) == health_pb2.HealthCheckResponse.SERVING
        assert await _health(standby.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with rpc.channel(standby.address, TEST_ADMIN_TOKEN) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await OrchestratorServiceStub(channel).ListExperiments(orchestrator_pb2.ListExperimentsRequest())
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "standby" in (refused.value.details() or "")
        on_leader_worker = await attach_worker(leader, tmp_path / "wa", slots=2)
        on_standby_worker = await attach_worker(standby, tmp_path / "wb", slots=2)  # retries until it leads
        try:
            async with Client(leader.address) as client:
                await client.upload_dataset("one", images)
                ids = [(await client.submit(agent_bundle("jpeg"), dataset="one", points=[{"quality": 50}]))
                       .experiment_id for _ in range(6)]
                dispatches = await _finished_once(client, ids)
            assert len(dispatches) == 6
            assert {d.worker_id for d in dispatches} == {on_leader_worker.handle.info.worker_id}
            assert standby.scheduler.running == {} and not standby.registry.workers

            # The leader's database session ends (a network cut, a database restart): the lock goes
            # with it, the leader steps down and the standby takes office.
            with leader.store.engine.connect() as admin:
                # The one advisory lock held in this database now: the leader's.
                ended = admin.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).scalars().all()
                admin.commit()
            assert ended == [True]
            await eventually(lambda: _serving(standby.address), timeout_s=30, what="the standby serving")
            assert leader.leadership is not None and leader.leadership.lost.is_set()
            assert await _health(leader.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            async with Client(standby.address) as client:
                exp = await client.submit(agent_bundle("jpeg"), dataset="one", points=[{"quality": 60}])
                [dispatch] = await _finished_once(client, [exp.experiment_id])
            assert dispatch.worker_id == on_standby_worker.handle.info.worker_id
        finally:
            await on_leader_worker.stop()
            await on_standby_worker.stop()


@pytest.mark.usefixtures("orchestrator_backend")
async def test_the_standby_takes_over_when_the_leader_is_killed_and_finishes_everything_once(tmp_path: Path) -> None:
    async with _leader_process_running_work(tmp_path) as work:
        work.leader.kill()
        await work.leader.process.wait()
        await eventually(lambda: _serving(work.standby.address), timeout_s=30, what="the standby serving")
        await _requeued_on_the_standbys_worker(work)


@pytest.mark.usefixtures("orchestrator_backend")
async def test_gc_refuses_while_an_orchestrator_leads_the_database(tmp_path: Path, capsys) -> None:
    """With PostgreSQL the data directory is not locked: gc takes the leader lock instead."""
    data_dir = tmp_path / "orch"
    gc_args = ["--data-dir", str(data_dir), *database_args()]
    async with orchestrator(data_dir) as leader:
        assert leader.leading
        assert gc_main(gc_args) == 1
        assert "an orchestrator leads this database" in capsys.readouterr().err
    assert gc_main(gc_args) == 0
    assert "removed 0 unreferenced blob(s)" in capsys.readouterr().out


def _server_processes(postmaster_pid: int) -> list[int]:
    """The postmaster and its children (the backends that serve the open sessions), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == postmaster_pid:  # field 4 of proc(5): the parent's pid
            children.append(int(stat.parent.name))
    return [postmaster_pid, *children]


@pytest.mark.usefixtures("orchestrator_backend")
async def test_a_hung_database_makes_the_leader_step_down_while_health_keeps_answering(tmp_path: Path) -> None:
    # A server of its own: the session's server must not hang under the other tests.
    server = postgres.start_embedded()
    try:
        url = server.create_database()
        assert server.postmaster_pid is not None
        async with orchestrator(tmp_path / "orch", store_url=url, leader_poll_s=0.2) as leader:
            assert leader.leading and leader.leadership is not None
            assert await _health(leader.address) == health_pb2.HealthCheckResponse.SERVING
            # Every server process stopped: the sessions stay open (the kernel keeps the socket) and
            # nothing answers, the way a stopped server or a black-holed network looks.
            stopped = _server_processes(server.postmaster_pid)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            try:
                lost = leader.leadership.lost
                await eventually(lambda: lost.is_set(), timeout_s=60, what="the leader stepping down")
                # The event loop was never blocked: health answers, and says the leader stepped down.
                assert await _health(leader.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            finally:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
    finally:
        server.stop()


@pytest.mark.usefixtures("orchestrator_backend")
async def test_a_standby_is_not_ready_but_alive_on_the_health_port(tmp_path: Path) -> None:
    # deploy/kubernetes: readiness asks for the overall status, liveness for rpc.LIVENESS_SERVICE; a
    # standby must fail the first (no traffic) and pass the second (no restart loop).
    async with orchestrator(tmp_path / "orch", leader_poll_s=0.2) as leader, \
            orchestrator(tmp_path / "orch", leader_poll_s=0.2) as standby:
        assert leader.leading and not standby.leading
        port = free_port()
        probes = await rpc.start_health_server("127.0.0.1", port, standby.health)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                ready = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                alive = await stub.Check(health_pb2.HealthCheckRequest(service=rpc.LIVENESS_SERVICE), timeout=5)
            assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert alive.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await probes.stop(0)


@pytest.mark.usefixtures("orchestrator_backend")
async def test_a_stopped_leader_is_deposed_by_its_lease_and_exits_when_resumed_with_everything_done_once(
    tmp_path: Path,
) -> None:
    # SIGSTOP keeps the leader's database session (and so its advisory lock) open: only the lease
    # expiring lets the standby end that session and take office.
    async with _leader_process_running_work(tmp_path) as work:
        os.kill(work.leader.process.pid, signal.SIGSTOP)
        await eventually(lambda: _serving(work.standby.address), timeout_s=60, what="the standby serving")
        os.kill(work.leader.process.pid, signal.SIGCONT)
        assert await asyncio.wait_for(work.leader.process.wait(), 60) == 1  # stepped down
        await _requeued_on_the_standbys_worker(work)  # each once per attempt, none lost
@pytest.mark.usefixtures("orchestrator_backend")
async def test_a_standby_exports_no_store_derived_gauges_and_the_cli_points_at_the_leader(tmp_path: Path) -> None:
    """Issue 16 fixes 2 and 7: the leader's gauges summed with a standby's would count every
    experiment twice; the CLI against a standby says so instead of "start one with codecbench up"."""
    data_dir = tmp_path / "orch"
    async with orchestrator(data_dir, leader_poll_s=0.2, metrics_port=0, metrics_refresh_s=0.05) as leader, \
            orchestrator(data_dir, leader_poll_s=0.2, metrics_port=0, metrics_refresh_s=0.05) as standby:
        assert leader.metrics is not None and standby.metrics is not None
        o = "codecbench_orchestrator_"

        async def leader_counts() -> bool:
            return (o + "queue_depth", ()) in await scrape(leader.metrics.url)  # type: ignore[union-attr]

        await eventually(leader_counts, what="the leader's store-derived gauges")
        assert value(await scrape(leader.metrics.url), o + "leader") == 1
        on_standby = await scrape(standby.metrics.url)
        assert value(on_standby, o + "leader") == 0 and (o + "leader", ()) in on_standby
        assert not any(name.startswith((o + "experiments", o + "queue_depth", o + "owner_", o + "oldest"))
                       for name, _ in on_standby)

        result = await asyncio.to_thread(CliRunner().invoke, app, ["--server", standby.address, "ls"])
        said = " ".join(result.stderr.split())  # rich wraps long lines
        assert result.exit_code == 2
        assert said.startswith("error: this orchestrator is a standby"), said
        assert f"({standby.address}); point --server / CODECBENCH_SERVER at the leader" in said
        assert "codecbench up" not in said
