"""Unschedulable work says so: a waiting reason, and an optional queue timeout (issue 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import AGENTS, agent_bundle, eventually
from helpers.services import attach_worker, orchestrator
from rich.console import Console
from typer.testing import CliRunner, Result

from codecbench import errors
from codecbench.cli import app, follow, views
from codecbench.client import Client
from codecbench.states import FAILED, QUEUED, SUCCEEDED
from codecbench.v1 import errors_pb2

pytestmark = pytest.mark.timeout(120)


def _rendered(renderable: object) -> str:
    console = Console(record=True, width=300)
    console.print(renderable)
    return console.export_text()


async def test_cuda_work_without_a_cuda_worker_says_why_and_fails_after_its_queue_timeout(tmp_path: Path) -> None:
    """``device="cuda"`` with no CUDA worker used to stay QUEUED forever with no explanation."""
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        before = await client.submit(agent_bundle("jpeg"), device="cuda")
        assert before.waiting_reason == "no worker is registered"
        worker = await attach_worker(orch, tmp_path / "w", use_bwrap=False)
        try:
            await eventually(lambda: orch.registry.takeable_devices() != set(), what="the CPU worker is READY")
            waiting = await client.get(before.experiment_id)
            assert waiting.state == QUEUED and "offers a CUDA device" in waiting.waiting_reason
            listed = {e.experiment_id: e for e in await client.list()}
            assert listed[before.experiment_id].waiting_reason == waiting.waiting_reason
            assert "offers a CUDA device" in _rendered(views.experiment_view(waiting))
            assert "offers a CUDA device" in _rendered(views.experiments_table([waiting], title="t"))

            timed = await client.submit(agent_bundle("jpeg"), device="cuda", queue_timeout_s=0.5)
            cpu = await client.submit(agent_bundle("jpeg"), queue_timeout_s=0.5)
            failed = await client.wait(timed.experiment_id)
            assert failed.state == FAILED and failed.error.kind == errors_pb2.ERROR_KIND_UNSCHEDULABLE
            assert "CUDA" in failed.error.message and "0.5 s" in failed.error.message
            assert isinstance(errors.from_proto(failed.error), errors.Unschedulable)
            assert (await client.wait(cpu.experiment_id)).state == SUCCEEDED  # a worker could run it
            assert (await client.get(before.experiment_id)).state == QUEUED  # no timeout: it keeps waiting
        finally:
            await worker.stop()


async def test_queue_timeout_must_be_finite_and_in_range(tmp_path: Path) -> None:
    async with orchestrator(tmp_path) as orch, Client(orch.address) as client:
        for bad in (-1.0, float("nan"), 1e12):
            with pytest.raises(errors.InvalidArgument) as info:
                await client.submit(agent_bundle("jpeg"), queue_timeout_s=bad)
            assert info.value.field == "queue_timeout_s"


async def test_run_and_watch_say_why_a_queued_experiment_waits(tmp_path: Path) -> None:
    """`run --device cuda` with no CUDA worker used to show only "queued"; `watch` only "created"."""
    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, ["--server", orch.address, *args])

    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        ran = await asyncio.to_thread(cli, "run", str(AGENTS / "jpeg"), "--device", "cuda", "--queue-timeout-s", "5")
        assert ran.exit_code == 1, ran.output
        assert "waiting: no worker is registered; it fails as UNSCHEDULABLE if no worker can run it within 5 s " \
               "(--queue-timeout-s)" in ran.stdout
        assert "UNSCHEDULABLE" in ran.stdout

        queued = await client.submit(agent_bundle("jpeg"), device="cuda", queue_timeout_s=5)
        watched = await asyncio.to_thread(cli, "watch", queued.experiment_id)
        assert watched.exit_code == 1, watched.output
        assert "waiting: no worker is registered" in watched.stdout and "UNSCHEDULABLE" in watched.stdout

        waiting = await client.submit(agent_bundle("jpeg"), device="cuda")
        rendered = _rendered(follow.waiting_text(waiting))
        assert "--queue-timeout-s N" in rendered and f"codecbench cancel {waiting.experiment_id}" in rendered

        last = (await client.get(queued.experiment_id)).last_sequence
        past = await asyncio.to_thread(cli, "watch", queued.experiment_id, "--after", str(last + 4))
        assert past.exit_code == 2
        assert f"is at sequence {last}" in past.stderr and f"use --after {last} or less" in past.stderr
