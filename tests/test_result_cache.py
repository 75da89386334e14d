"""Issue 20, the result cache, with a real orchestrator and worker on 127.0.0.1: an identical
candidate completes from the cache without reaching a worker (the worker is gone by then); a
changed parameter, ``no_cache``, another owner, a non-deterministic failure or another worker
build are evaluated again."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent_bundle
from helpers.services import attach_worker, orchestrator, write_images

from codecbench import errors
from codecbench.client import Client
from codecbench.states import FAILED, QUEUED, SUCCEEDED
from codecbench.timeouts import default_timeouts
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2, types_pb2
from orchestrator_svc import cache
from orchestrator_svc.server import create_token
from orchestrator_svc.store import Store

pytestmark = pytest.mark.timeout(240)


@pytest.mark.usefixtures("orchestrator_backend")
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
            # One load error may be chance: it is evaluated again, and the second alike is reused.
            broken_again = await client.submit(agent_bundle("load_syntax_error"), dataset="tiny")
            assert broken_again.cached_from == ""
            broken_again = await client.wait(broken_again.experiment_id)
            assert broken_again.error.kind == errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR
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
            assert load_again.state == FAILED and load_again.cached_from == broken_again.experiment_id
            assert load_again.error == broken_again.error
            raise_again = await client.submit(agent_bundle("exc_encode"), dataset="tiny")
            assert raise_again.state == QUEUED and raise_again.cached_from == ""

        async with Client(orch.address, token=bob_token) as bob:  # only one's own results are reused
            theirs = await bob.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}])
            assert theirs.state == QUEUED and theirs.cached_from == ""

    # A new worker build invalidates the cache: the same store, another expected build.
    async with orchestrator(tmp_path / "orch", expected_build="a-newer-build") as orch, Client(orch.address) as client:
        rebuilt = await client.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 50}])
        assert rebuilt.state == QUEUED and rebuilt.cached_from == ""


def _finished(experiment_id: str, state: int, kind: int = 0, line: int = 3,
              cached_from: str = "") -> orchestrator_pb2.Experiment:
    exp = orchestrator_pb2.Experiment(experiment_id=experiment_id, state=state, cached_from=cached_from)
    if state == FAILED:
        exp.error.CopyFrom(errors_pb2.Error(kind=kind, exception_type="ImportError",
                                           location=f"codec.py:{line}"))
    return exp


LOAD = errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR


def test_a_success_wins_and_a_load_error_is_reused_only_once_it_happened_twice_alike() -> None:
    """Hostile test: a flaky import failure was cached as deterministic, and the newest entry won
    over an older success."""
    ok = _finished("exp-ok", SUCCEEDED)
    assert cache.choose([_finished("exp-new", FAILED, LOAD), ok]) is ok
    assert cache.choose([_finished("exp-1", FAILED, LOAD)]) is None
    assert cache.choose([_finished("exp-2", FAILED, LOAD, line=4), _finished("exp-1", FAILED, LOAD)]) is None
    # A copy is no second evaluation.
    assert cache.choose([_finished("exp-2", FAILED, LOAD, cached_from="exp-1"), _finished("exp-1", FAILED, LOAD)]) \
        is None
    twice = [_finished("exp-2", FAILED, LOAD), _finished("exp-1", FAILED, LOAD)]
    assert cache.choose(twice) is twice[0]
    assert cache.choose([_finished("exp-x", FAILED, errors_pb2.ERROR_KIND_AGENT_EXCEPTION)] * 3) is None


def test_a_no_cache_experiment_is_an_entry_only_when_it_succeeded(store_url: str) -> None:
    store = Store(store_url)
    created = experiment_pb2.ExperimentEvent(state_change=experiment_pb2.StateChange(state=QUEUED, reason="created"))
    for experiment_id, state, no_cache in (("exp-ok", SUCCEEDED, False), ("exp-nc-fail", FAILED, True),
                                           ("exp-nc-ok", SUCCEEDED, True)):
        exp = _finished(experiment_id, state, LOAD)
        exp.owner = "alice"
        exp.create_time.GetCurrentTime()
        exp.end_time.GetCurrentTime()
        if state == SUCCEEDED:
            exp.result.SetInParent()
        store.create_experiment(exp, created, cache_key="k" * 64, no_cache=no_cache)
    assert [e.experiment_id for e in store.cached("k" * 64, "alice")] == ["exp-nc-ok", "exp-ok"]


def test_the_resolved_timeouts_are_part_of_the_key() -> None:
    """Hostile test: a 0.5 s encode limit got the cached success of a 2 s one."""
    def key(**timeouts: float) -> str:
        exp = orchestrator_pb2.Experiment(agent=agent_bundle("jpeg"), timeouts=types_pb2.Timeouts(**timeouts))
        return cache.cache_key(exp, "d" * 64, "build")

    assert key(encode_s=0.5) != key(encode_s=2.0)
    assert key() == key(encode_s=default_timeouts().encode_s)


async def test_a_result_an_admin_shares_is_reused_by_every_users_identical_submission(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 40)])
    candidate = {"dataset": "tiny", "points": [{"quality": 50}]}
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as admin:
        tokens = {user: create_token(orch.store, user) for user in ("bob", "carol", "dave")}
        worker = await attach_worker(orch, tmp_path / "w", slots=1)
        await admin.upload_dataset("tiny", images)
        await admin.share_dataset("tiny")
        async with Client(orch.address, token=tokens["bob"]) as bob:
            baseline = await bob.wait((await bob.submit(agent_bundle("jpeg"), **candidate)).experiment_id)
        assert baseline.state == SUCCEEDED, baseline.error
        await worker.stop()  # whatever finishes from here on, finishes without a worker

        async with Client(orch.address, token=tokens["carol"]) as carol:
            before = await carol.submit(agent_bundle("jpeg"), **candidate)
            assert before.state == QUEUED and before.cached_from == ""  # bob's result is bob's
            await carol.cancel(before.experiment_id)
            with pytest.raises(errors.PermissionDenied):
                await carol.share_result(baseline.experiment_id)

            assert (await admin.share_result(baseline.experiment_id)).experiment_id == baseline.experiment_id
            shared = await carol.submit(agent_bundle("jpeg"), **candidate)
            assert shared.state == SUCCEEDED and shared.cached_from == baseline.experiment_id
            assert shared.result == baseline.result and shared.owner == "carol"
            changed = await carol.submit(agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 51}])
            assert changed.state == QUEUED and changed.cached_from == ""

        # Only evaluated successes can be shared: not a copy (the original is named), not a failure.
        with pytest.raises(errors.FailedPrecondition, match=f"share {baseline.experiment_id} instead"):
            await admin.share_result(shared.experiment_id)
        with pytest.raises(errors.FailedPrecondition, match="CANCELLED"):
            await admin.share_result(before.experiment_id)
        with pytest.raises(errors.NotFound):
            await admin.share_result("no-such-experiment")

        await admin.share_result(baseline.experiment_id, shared=False)
        async with Client(orch.address, token=tokens["dave"]) as dave:
            withdrawn = await dave.submit(agent_bundle("jpeg"), **candidate)
            assert withdrawn.state == QUEUED and withdrawn.cached_from == ""
