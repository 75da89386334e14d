"""Issue 20, the result cache, with a real orchestrator and worker on 127.0.0.1: an identical
candidate completes from the cache without reaching a worker (the worker is gone by then); a
changed parameter, ``no_cache``, another owner, a non-deterministic failure or another worker
build are evaluated again."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent_bundle
from helpers.services import attach_worker, orchestrator, write_images

from codecbench.client import Client
from codecbench.states import FAILED, QUEUED, SUCCEEDED
from codecbench.v1 import errors_pb2
from orchestrator_svc.server import create_token

pytestmark = pytest.mark.timeout(240)


async def test_identical_candidates_come_from_the_cache_and_changed_ones_do_not(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 40), (24, 30)])
    async with orchestrator(tmp_path / "orch") as orch:
        bob_token = create_token(orch.store, "bob")
        worker = await attach_worker(orch, tmp_path / "w", slots=2)
        async with Client(orch.address) as client:
            await client.upload_dataset("tiny", images)
            await client.share_dataset("tiny")
            first = await client.wait((await client.submit(
                agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}])).experiment_id)
            broken = await client.wait((await client.submit(
                agent_bundle("load_syntax_error"), dataset="tiny")).experiment_id)
            raising = await client.wait((await client.submit(
                agent_bundle("exc_encode"), dataset="tiny")).experiment_id)
            assert first.state == SUCCEEDED, first.error
            assert broken.error.kind == errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR
            assert raising.error.kind == errors_pb2.ERROR_KIND_AGENT_EXCEPTION
            # No worker from here on: whatever finishes, finishes without one.
            await worker.stop()

            again = await client.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}],
                                        labels={"note": "labels do not matter"}, priority=5)
            assert again.state == SUCCEEDED and again.cached_from == first.experiment_id
            assert again.result == first.result and again.worker_id == ""
            kinds = [e.WhichOneof("event") async for e in client.watch(again.experiment_id)]
            assert kinds == ["state_change", "log", "result"]
            # A copy of a copy names the original.
            third = await client.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}])
            assert third.cached_from == first.experiment_id

            changed = await client.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 51}])
            opted_out = await client.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}],
                                            no_cache=True)
            for exp in (changed, opted_out):
                assert exp.state == QUEUED and exp.cached_from == ""

            # A deterministic failure is reused; an exception on an image is evaluated again.
            load_again = await client.submit(agent_bundle("load_syntax_error"), dataset="tiny")
            assert load_again.state == FAILED and load_again.cached_from == broken.experiment_id
            assert load_again.error == broken.error
            raise_again = await client.submit(agent_bundle("exc_encode"), dataset="tiny")
            assert raise_again.state == QUEUED and raise_again.cached_from == ""

        async with Client(orch.address, token=bob_token) as bob:  # only one's own results are reused
            theirs = await bob.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}])
            assert theirs.state == QUEUED and theirs.cached_from == ""

    # A new worker build invalidates the cache: the same store, another expected build.
    async with orchestrator(tmp_path / "orch", expected_build="a-newer-build") as orch, Client(orch.address) as client:
        rebuilt = await client.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}])
        assert rebuilt.state == QUEUED and rebuilt.cached_from == ""
