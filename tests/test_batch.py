"""Issue 20, batch submission: CreateExperiments with partial success, WatchExperiments over a label
selector, shared agent files uploaded once; with a real orchestrator and worker on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from helpers import agent_bundle
from helpers.services import attach_worker, orchestrator, write_images

from codecbench import errors
from codecbench.client import Client
from codecbench.states import SUCCEEDED
from codecbench.status import from_rpc_error
from codecbench.v1 import experiment_pb2, orchestrator_pb2

pytestmark = pytest.mark.timeout(240)


def _spec(request_id: str, dataset: str = "tiny", **fields: object) -> orchestrator_pb2.CreateExperimentRequest:
    return orchestrator_pb2.CreateExperimentRequest(
        agent=agent_bundle("jpeg"), dataset=dataset, request_id=request_id, labels={"run": "b200"},
        **fields)  # type: ignore[arg-type]


async def test_batch_of_200_with_invalid_specs_partly_succeeds_and_names_each_error(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 40)])
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        await client.upload_dataset("tiny", images)
        specs = [_spec(f"r{i}") for i in range(200)]
        bad = {
            7: ("dataset", _spec("r7", dataset="no-such-dataset")),
            42: ("max_attempts", _spec("r42", max_attempts=99)),
            99: ("request_id", _spec("")),
            150: ("request_id", _spec("r3")),  # repeats an earlier spec's id
            199: ("agent.files[0].name", _spec("r199")),
        }
        bad[199][1].agent.files[0].name = "../escape.py"
        for index, (_, spec) in bad.items():
            specs[index] = spec
        results = await client.create_many(specs)
        assert len(results) == 200
        for index, result in enumerate(results):
            if index in bad:
                assert result.experiment is None and isinstance(result.error, errors.InvalidArgument), index
                assert result.error.field == bad[index][0], (index, result.error)
            else:
                assert result.error is None and result.experiment is not None, (index, result.error)
                assert result.experiment.request_id == f"r{index}"
        created = [r.experiment for r in results if r.experiment is not None]
        assert len({e.experiment_id for e in created}) == 195
        # The agent's file travelled once: every later spec named it by digest alone (the
        # service found it in the batch), yet each experiment lists it.
        assert [i for i, spec in enumerate(specs) if spec.agent.files[0].content] == [0]
        assert all(e.agent.files[0].sha256 == created[0].agent.files[0].sha256 for e in created)
        # Idempotent per spec: the same batch again creates nothing new.
        again = await client.create_many([_spec(f"r{i}") for i in range(5)])
        assert [r.experiment.experiment_id for r in again if r.experiment] == [
            results[i].experiment.experiment_id for i in range(5) if results[i].experiment]
        assert len(await client.list(labels={"run": "b200"}, limit=1000)) == 195


async def test_batch_refuses_an_empty_or_oversized_request(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        spec = orchestrator_pb2.CreateExperimentRequest(dataset="photos")
        for specs in ([], [spec] * 1001):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.stub.CreateExperiments(orchestrator_pb2.CreateExperimentsRequest(requests=specs))
            refusal = from_rpc_error(raised.value)
            assert isinstance(refusal, errors.InvalidArgument) and refusal.field == "requests", refusal
        assert "1000" in str(refusal)


async def test_submit_many_then_watch_many_interleaves_and_resumes(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 40)])
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w", slots=2)
        try:
            async with Client(orch.address) as client:
                await client.upload_dataset("tiny", images)
                agents = [agent_bundle("jpeg"), agent_bundle("jpeg_padded"), agent_bundle("jpeg")]
                submitted = await client.submit_many(agents, dataset="tiny", points=[{"quality": 50}],
                                                     labels={"run": "w1"}, no_cache=True)
                ids = {s.experiment.experiment_id for s in submitted if s.experiment}
                assert len(ids) == 3
                seen: dict[str, list[int]] = {i: [] for i in ids}
                first: list[experiment_pb2.ExperimentEvent] = []
                async for event in client.watch_many({"run": "w1"}):
                    first.append(event)
                    if len(first) == 4:
                        break  # a broken-off stream ...
                for event in first:
                    seen[event.experiment_id].append(event.sequence)
                resume = {k: v[-1] for k, v in seen.items() if v}
                async for event in client.watch_many({"run": "w1"}, after_sequences=resume):
                    seen[event.experiment_id].append(event.sequence)  # ... resumes where it was
                for experiment_id, sequences in seen.items():
                    assert sequences == list(range(1, len(sequences) + 1)), experiment_id
                    final = await client.get(experiment_id)
                    assert final.state == SUCCEEDED and final.last_sequence == sequences[-1]
                with pytest.raises(errors.InvalidArgument) as raised:
                    async for _ in client.watch_many({}):
                        pass
                assert raised.value.field == "labels"
        finally:
            await worker.stop()


async def test_watch_many_refuses_a_resume_sequence_past_the_last_event(tmp_path: Path) -> None:
    """Hostile test: the stream waited forever for an event that never existed, even once the
    experiment had ended; WatchExperiment answers OUT_OF_RANGE, and so does this now."""
    images = write_images(tmp_path / "imgs", [(32, 40)])
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        await client.upload_dataset("tiny", images)
        ended = await client.cancel((await client.submit(agent_bundle("jpeg"), dataset="tiny",
                                                         labels={"run": "past"})).experiment_id)
        last = (await client.get(ended.experiment_id)).last_sequence
        request = orchestrator_pb2.WatchExperimentsRequest(
            labels={"run": "past"}, after_sequences={ended.experiment_id: last + 5})
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in client.stub.WatchExperiments(request, timeout=20):
                pass
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        refusal = from_rpc_error(raised.value)
        assert refusal.field == f"after_sequences[{errors.echo(ended.experiment_id)}]" and str(last) in str(refusal)
        # A queued one too (it used to wait there forever, its terminal event included).
        queued = await client.submit(agent_bundle("jpeg"), dataset="tiny", labels={"run": "queued"})
        request = orchestrator_pb2.WatchExperimentsRequest(
            labels={"run": "queued"}, after_sequences={queued.experiment_id: queued.last_sequence + 1})
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in client.stub.WatchExperiments(request, timeout=10):
                pass
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        # Resuming at the last event itself ends at once, as before.
        request = orchestrator_pb2.WatchExperimentsRequest(labels={"run": "past"})
        request.after_sequences[ended.experiment_id] = last
        assert [r async for r in client.stub.WatchExperiments(request, timeout=20)] == []
