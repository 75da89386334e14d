"""Issue 20 (hostile test): request ids are idempotency keys of one owner and one spec: a reuse with
other content is refused, and one user's ids never find, reveal or block another user's."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from helpers import agent_bundle
from helpers.services import orchestrator, write_images
from sqlalchemy import text

from codecbench import errors
from codecbench.client import Client
from codecbench.status import from_rpc_error
from codecbench.v1 import orchestrator_pb2, types_pb2
from orchestrator_svc.server import create_token
from orchestrator_svc.store import Store

pytestmark = pytest.mark.timeout(120)


def _spec(request_id: str, quality: int, dataset: str = "tiny") -> orchestrator_pb2.CreateExperimentRequest:
    return orchestrator_pb2.CreateExperimentRequest(
        agent=agent_bundle("jpeg"), dataset=dataset, request_id=request_id,
        points=[types_pb2.ParameterPoint(params={"quality": types_pb2.Value(int_value=quality)})])


@pytest.mark.usefixtures("orchestrator_backend")
async def test_a_request_id_reused_with_another_spec_is_refused_naming_the_first_experiment(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 40)])
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        await client.upload_dataset("tiny", images)
        first = (await client.stub.CreateExperiment(_spec("dup-x", 11))).experiment
        # The same spec again (content by digest only counts as the same): the same experiment.
        by_digest = _spec("dup-x", 11)
        by_digest.agent.files[0].ClearField("content")
        assert (await client.stub.CreateExperiment(by_digest)).experiment.experiment_id == first.experiment_id
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.stub.CreateExperiment(_spec("dup-x", 77))
        refusal = from_rpc_error(raised.value)
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert isinstance(refusal, errors.AlreadyExists) and refusal.field == "request_id"
        assert refusal.reason == errors.REASON_REQUEST_ID_REUSED and first.experiment_id in str(refusal)
        # In a batch: that spec alone is refused, the others go on.
        results = await client.create_many([_spec("dup-x", 77), _spec("fresh", 77)])
        assert isinstance(results[0].error, errors.AlreadyExists) and results[0].error.field == "request_id"
        assert first.experiment_id in str(results[0].error)
        assert results[1].experiment is not None and results[1].experiment.experiment_id != first.experiment_id
        assert len(await client.list(limit=100)) == 2


@pytest.mark.usefixtures("orchestrator_backend")
async def test_request_ids_are_per_owner(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 40)])
    async with orchestrator(tmp_path / "orch") as orch:  # noqa: SIM117 - the tokens need the store
        async with Client(orch.address, token=create_token(orch.store, "alice")) as alice, \
                Client(orch.address, token=create_token(orch.store, "bob")) as bob:
            await alice.upload_dataset("tiny", images)
            await bob.upload_dataset("tinyb", images)
            alices = (await alice.stub.CreateExperiment(_spec("shared-rid", 11))).experiment
            # bob's same id, same or other content, is his own new experiment; nothing of alice's shows.
            bobs = (await bob.stub.CreateExperiment(_spec("shared-rid", 11, "tinyb"))).experiment
            assert bobs.owner == "bob" and bobs.experiment_id != alices.experiment_id
            results = await bob.create_many([_spec("shared-rid", 11, "tinyb"), _spec("other", 50, "tinyb")])
            assert results[0].experiment is not None and results[0].experiment.experiment_id == bobs.experiment_id
            assert results[1].experiment is not None
            # alice's reuse with other content names only her own experiment.
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await alice.stub.CreateExperiment(_spec("shared-rid", 99))
            assert alices.experiment_id in raised.value.details()
            assert bobs.experiment_id not in raised.value.details()
            assert (await alice.stub.CreateExperiment(_spec("shared-rid", 11))).experiment.experiment_id == \
                alices.experiment_id


def test_migration_5_keeps_old_request_ids_per_owner(store_url: str) -> None:
    url = store_url
    store = Store(url)
    with store.engine.begin() as conn:  # an experiment stored by version 4, its id in experiments.request_id
        conn.execute(text("DROP TABLE request_ids"))
        conn.execute(text("DELETE FROM schema_migrations WHERE version = 5"))
        conn.execute(text(
            "INSERT INTO experiments (experiment_id, request_id, state, attempt, max_attempts, priority, device, "
            "worker_id, create_time, last_sequence, spec) "
            "VALUES ('exp-old', 'r1', 1, 1, 3, 0, 'cpu', '', 0, 1, :spec)"), {"spec": b""})
        conn.execute(text("INSERT INTO experiment_owners (experiment_id, owner) VALUES ('exp-old', 'alice')"))
    store.close()
    reopened = Store(url)
    assert reopened.schema_version() == 6
    record = reopened.find_by_request_id("alice", "r1")
    assert record is not None and record.experiment_id == "exp-old" and record.fingerprint is None
    assert reopened.find_by_request_id("bob", "r1") is None
