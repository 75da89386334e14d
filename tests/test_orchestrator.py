"""Integration tests of the orchestrator with real workers on 127.0.0.1 (issue 3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from helpers import agent_bundle, eventually, worker_channel
from helpers.services import (
    admin_token_file,
    attach_worker,
    database_args,
    free_port,
    orchestrator,
    sqlite_only,
    write_images,
)
from helpers.worker import agent_processes
from PIL import Image

from codecbench import datasets, errors, rpc, values
from codecbench.client import Client
from codecbench.local import spawn_service, worker_isolation_args
from codecbench.states import SUCCEEDED
from codecbench.v1 import (
    errors_pb2,
    experiment_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    types_pb2,
    worker_pb2,
    worker_pb2_grpc,
)

RUNNING = experiment_pb2.EXPERIMENT_STATE_RUNNING
CANCELLED = experiment_pb2.EXPERIMENT_STATE_CANCELLED
# Every test on SQLite and on a fresh PostgreSQL database (conftest's orchestrator_backend, issue 16).
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("orchestrator_backend")]


def terminal_events(events: list[experiment_pb2.ExperimentEvent]) -> list[experiment_pb2.ExperimentEvent]:
    return [e for e in events if e.WhichOneof("event") in ("result", "error")]


async def all_events(client: Client, experiment_id: str, after: int = 0) -> list[experiment_pb2.ExperimentEvent]:
    return [e async for e in client.watch(experiment_id, after_sequence=after)]


async def test_results_through_orchestrator_equal_direct_worker_results(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(48, 64), (200, 180)])
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w1")
        try:
            async with Client(orch.address) as client:
                dataset = await client.upload_dataset("tiny", images)
                exp = await client.submit(
                    agent_bundle("jpeg"), dataset="tiny", points=[{"quality": 30}, {"quality": 80}]
                )
                done = await client.wait(exp.experiment_id)
            assert done.state == SUCCEEDED, done.error
            assert done.attempt == 1 and done.worker_id == worker.handle.info.worker_id

            request = worker_pb2.RunExperimentRequest(
                experiment_id="direct",
                attempt=1,
                agent=agent_bundle("jpeg"),
                device=types_pb2.DEVICE_CPU,
                points=[values.params_from_python({"quality": q}) for q in (30, 80)],
                dataset=types_pb2.DatasetRef(
                    name="tiny",
                    images=[
                        types_pb2.BlobRef(name=img.name, content=(images / img.name).read_bytes())
                        for img in dataset.images
                    ],
                ),
            )
            channel = worker_channel(worker.handle.address)
            direct = [r.event async for r in worker_pb2_grpc.WorkerServiceStub(channel).RunExperiment(request)]
            await channel.close()
            direct_result = direct[-1].result
            for via, straight in zip(done.result.points, direct_result.points, strict=True):
                for a, b in zip(via.images, straight.images, strict=True):
                    assert a.image_name == b.image_name
                    assert (a.metrics.bytes, a.metrics.psnr_db, a.metrics.bitstream_sha256) == (
                        b.metrics.bytes,
                        b.metrics.psnr_db,
                        b.metrics.bitstream_sha256,
                    )
                    assert a.metrics.HasField("ms_ssim") == b.metrics.HasField("ms_ssim")
        finally:
            await worker.stop()


async def test_worker_killed_mid_experiment_reruns_on_other_worker_as_attempt_2(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)] * 4)
    async with orchestrator(tmp_path / "orch") as orch:
        args = ("--port", "0", "--orchestrator", orch.address, "--enroll-token-file",
                str(tmp_path / "orch" / "enroll.token"), *worker_isolation_args())
        w1 = await spawn_service("worker_svc", *args, "--data-dir", str(tmp_path / "w1"), log_path=tmp_path / "w1.log")
        w2 = await spawn_service("worker_svc", *args, "--data-dir", str(tmp_path / "w2"), log_path=tmp_path / "w2.log")
        try:
            async with Client(orch.address) as client:
                await eventually(lambda: _count_ready(client, 2), timeout_s=60, what="two workers registered")
                await client.upload_dataset("four", images)
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="four", points=[{"delay_s": 0.4}])
                # Mid-run: the second of four encodes has started (a point's images are all
                # encoded before its decoder starts, so no image result exists yet).
                mid_run = None
                async for event in client.watch(exp.experiment_id):
                    if (event.WhichOneof("event") == "progress" and event.progress.phase == types_pb2.PHASE_ENCODE
                            and event.progress.image_index == 1):
                        mid_run = event
                        break
                assert mid_run is not None
                running = await client.get(exp.experiment_id)
                assert running.state == RUNNING
                victim = w1 if running.worker_id == await _worker_id(client, w1.address) else w2
                victim.kill()
                done = await client.wait(exp.experiment_id)
                assert done.state == SUCCEEDED, done.error
                assert done.attempt == 2
                assert done.worker_id != running.worker_id
                assert len(done.result.points[0].images) == 4
                events = await all_events(client, exp.experiment_id)
                assert len(terminal_events(events)) == 1
                requeue = [
                    e.state_change
                    for e in events
                    if e.WhichOneof("event") == "state_change"
                    and e.state_change.state == experiment_pb2.EXPERIMENT_STATE_QUEUED
                    and e.state_change.attempt == 2
                ]
                assert requeue and running.worker_id in requeue[0].reason
                statuses = {w.info.worker_id: w for w in await client.workers()}
                assert statuses[running.worker_id].state == orchestrator_pb2.WORKER_STATE_LOST
        finally:
            for w in (w1, w2):
                await w.stop()


async def _count_ready(client: Client, n: int) -> bool:
    return sum(w.state == orchestrator_pb2.WORKER_STATE_READY for w in await client.workers()) >= n


async def _worker_id(client: Client, address: str) -> str:
    return next(w.info.worker_id for w in await client.workers() if w.info.address == address)


async def test_orchestrator_killed_and_restarted_mid_queue_finishes_everything_once(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)] * 2)
    port = free_port()
    data_dir = tmp_path / "orch"
    orch_args = ("--port", str(port), "--data-dir", str(data_dir), "--admin-token-file",
                 str(admin_token_file(tmp_path)), *database_args())
    orch = await spawn_service("orchestrator_svc", *orch_args, log_path=tmp_path / "orchestrator.log")
    worker = await spawn_service("worker_svc", "--port", "0", "--orchestrator", orch.address, "--data-dir",
                                 str(tmp_path / "w"), "--enroll-token-file", str(data_dir / "enroll.token"),
                                 *worker_isolation_args(), log_path=tmp_path / "worker.log")
    try:
        async with Client(orch.address) as client:
            await eventually(lambda: _count_ready(client, 1), what="worker registered")
            await client.upload_dataset("two", images)
            ids = [
                (
                    await client.submit(
                        agent_bundle("slow_lossless"), dataset="two", points=[{"delay_s": 0.3}], request_id=f"job-{i}"
                    )
                ).experiment_id
                for i in range(4)
            ]

            async def first_running() -> bool:
                return any(e.state == RUNNING for e in await client.list())

            await eventually(first_running, what="an experiment running")
        orch.kill()
        await orch.process.wait()
        orch = await spawn_service("orchestrator_svc", *orch_args, log_path=tmp_path / "orchestrator-restarted.log")
        async with Client(orch.address) as client:
            finished = [await client.wait(i) for i in ids]
            assert [e.state for e in finished] == [SUCCEEDED] * 4
            assert len(await client.list(limit=100)) == 4
            for exp in finished:
                assert len(terminal_events(await all_events(client, exp.experiment_id))) == 1
            assert max(e.attempt for e in finished) == 2  # the one that was running went back to the queue
        logged = [json.loads(line) for line in orch.log_lines() if line.startswith("{")]
        dispatched = [entry for entry in logged if entry.get("event") == "experiments.dispatched"]
        assert dispatched and all(len(entry["experiment_ids"]) == len(entry["attempts"]) and entry["worker_id"]
                                  for entry in dispatched)
        assert {i for entry in dispatched for i in entry["experiment_ids"]} == set(ids)
    finally:
        await worker.stop()
        await orch.stop()


@sqlite_only
async def test_stale_worker_gets_no_work_and_says_why(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        stale = await attach_worker(orch, tmp_path / "stale", build_id="0ld0ld0ld0ld0ld0")
        good = await attach_worker(orch, tmp_path / "good")
        try:
            async with Client(orch.address) as client:
                await eventually(lambda: _count_ready(client, 1), what="good worker registered")
                status = {w.info.worker_id: w for w in await client.workers()}
                stale_status = status[stale.handle.info.worker_id]
                assert stale_status.state == orchestrator_pb2.WORKER_STATE_STALE
                assert "0ld0ld0ld0ld0ld0" in stale_status.state_reason and "expected build" in stale_status.state_reason
                await client.upload_dataset("one", images)
                exps = [
                    await client.submit(agent_bundle("jpeg"), dataset="one", points=[{"quality": 50}]) for _ in range(3)
                ]
                done = [await client.wait(e.experiment_id) for e in exps]
                assert {d.worker_id for d in done} == {good.handle.info.worker_id}
        finally:
            await stale.stop()
            await good.stop()


async def test_request_id_repeat_creates_nothing(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        first = await client.submit(agent_bundle("jpeg"), points=[{"quality": 50}], request_id="once")
        second = await client.submit(agent_bundle("jpeg"), points=[{"quality": 50}], request_id="once")
        assert first.experiment_id == second.experiment_id
        assert [e.experiment_id for e in await client.list()] == [first.experiment_id]


async def test_watcher_resumes_from_last_sequence_without_gaps_or_repeats(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)] * 3)
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client:
                await client.upload_dataset("three", images)
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="three", points=[{"delay_s": 0.2}])
                seen: list[experiment_pb2.ExperimentEvent] = []
                async for event in client.watch(exp.experiment_id):
                    seen.append(event)
                    if event.WhichOneof("event") == "image_result":
                        break  # disconnect mid-run
                resumed = await all_events(client, exp.experiment_id, after=seen[-1].sequence)
                replay = await all_events(client, exp.experiment_id)
                combined = [e.sequence for e in seen + resumed]
                assert combined == [e.sequence for e in replay] == list(range(1, len(replay) + 1))
                assert [e.SerializeToString() for e in seen + resumed] == [e.SerializeToString() for e in replay]
                assert replay[-1].WhichOneof("event") == "result"
        finally:
            await worker.stop()


async def test_cancel_running_experiment_kills_its_sandbox_children(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="one", points=[{"delay_s": 600}])
                async for event in client.watch(exp.experiment_id):
                    if event.WhichOneof("event") == "progress" and event.progress.phase == types_pb2.PHASE_ENCODE:
                        break
                assert agent_processes(), "the experiment's sandbox processes should be running"
                cancelled = await client.cancel(exp.experiment_id)
                assert cancelled.state == CANCELLED
                assert cancelled.error.kind == errors_pb2.ERROR_KIND_CANCELLED
                await eventually(lambda: not agent_processes(), timeout_s=5, what="sandbox children gone")
                final = await client.get(exp.experiment_id)
                assert final.state == CANCELLED and not final.HasField("result")
                assert (
                    terminal_events(await all_events(client, exp.experiment_id))[0].error.kind
                    == errors_pb2.ERROR_KIND_CANCELLED
                )
        finally:
            await worker.stop()


async def test_heartbeat_silence_marks_worker_lost_and_drain_stops_new_work(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch", heartbeat_timeout_s=1.0) as orch:
        silent = await attach_worker(orch, tmp_path / "silent")
        draining = await attach_worker(orch, tmp_path / "draining")
        try:
            async with Client(orch.address) as client:
                await eventually(lambda: _count_ready(client, 2), timeout_s=60, what="two workers registered")
                silent.task.cancel()  # stops its heartbeats, the server keeps running
                await client.drain(draining.handle.info.worker_id)

                async def states() -> dict[str, int]:
                    return {w.info.worker_id: w.state for w in await client.workers()}

                async def lost() -> bool:
                    return (await states())[silent.handle.info.worker_id] == orchestrator_pb2.WORKER_STATE_LOST

                await eventually(lost, timeout_s=10, what="silent worker LOST")
                assert (await states())[draining.handle.info.worker_id] == orchestrator_pb2.WORKER_STATE_DRAINING
                exp = await client.submit(agent_bundle("jpeg"), points=[{"quality": 50}])
                await orch.scheduler.dispatch_queued()  # one full pass over the queue
                assert (await client.get(exp.experiment_id)).state == experiment_pb2.EXPERIMENT_STATE_QUEUED
                assert not orch.scheduler.running
        finally:
            await silent.stop()
            await draining.stop()


@sqlite_only
@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.agent.ClearField("files"), "agent.files"),
        (lambda r: setattr(r.agent, "entry_module", ""), "agent.entry_module"),
        (lambda r: setattr(r.agent, "entry_module", "nothere"), "agent.entry_module"),
        (lambda r: setattr(r.agent.files[0], "name", "../escape.py"), "agent.files[0].name"),
        (lambda r: setattr(r, "dataset", "no-such-dataset"), "dataset"),
        (lambda r: setattr(r.timeouts, "encode_s", -1), "timeouts.encode_s"),
        (lambda r: setattr(r.timeouts, "load_s", float("nan")), "timeouts.load_s"),
        (lambda r: setattr(r, "device", 99), "device"),
        (lambda r: setattr(r, "max_attempts", 99), "max_attempts"),
        (lambda r: r.agent.files.add(name="big.bin", content=b"\0" * (33 * 1024 * 1024)), "agent.files"),
    ],
)
async def test_malformed_create_requests_name_the_field(tmp_path: Path, mutate, field: str) -> None:  # noqa: ANN001
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        request = orchestrator_pb2.CreateExperimentRequest(agent=agent_bundle("jpeg"), dataset="photos")
        mutate(request)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreateExperiment(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(field), info.value.details()
        assert await client.list() == []  # nothing was created, and the service still answers
        assert [d.name for d in await client.datasets()] == ["photos"]


async def test_a_nul_character_in_stored_or_looked_up_text_is_invalid_argument_on_every_store(tmp_path: Path) -> None:
    """PostgreSQL text cannot hold NUL: a request id, label or experiment id with one used to reach
    the database and fail INTERNAL there; it is refused naming the field, on SQLite alike."""
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        for mutate, field in [(lambda r: setattr(r, "request_id", "a\0b"), "request_id"),
                              (lambda r: r.labels.update({"run": "a\0b"}), "labels['run']")]:
            request = orchestrator_pb2.CreateExperimentRequest(agent=agent_bundle("jpeg"), dataset="photos")
            mutate(request)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.stub.CreateExperiment(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith(field) and "NUL" in info.value.details(), info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.GetExperiment(orchestrator_pb2.GetExperimentRequest(experiment_id="x\0"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await client.list() == []


@sqlite_only
async def test_store_is_sqlite_wal_with_recorded_migrations(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch:
        # 2: tokens, credentials, owners; 3: queue deadline; 4: cache key; 5: request ids per owner;
        # 6: shared result-cache entries
        assert orch.store.schema_version() == 6
        with orch.store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (tmp_path / "orch" / "codecbench.db").exists()


async def test_blobs_are_content_addressed_deduplicated_and_sent_to_a_worker_once(tmp_path: Path) -> None:
    first = write_images(tmp_path / "a", [(32, 32), (40, 24)])
    second = write_images(tmp_path / "b", [(32, 32)])  # the same bytes as a/img0.png
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client:
                a = await client.upload_dataset("a", first)
                b = await client.upload_dataset("b", second)
                assert b.images[0].sha256 == a.images[0].sha256
                stored = [p.name for p in (tmp_path / "orch" / "blobs").rglob("*") if p.is_file()]
                assert sorted(stored) == sorted(img.sha256 for img in a.images)
                for _ in range(2):
                    exp = await client.submit(agent_bundle("jpeg"), dataset="a", points=[{"quality": 50}])
                    assert (await client.wait(exp.experiment_id)).state == SUCCEEDED
                exp = await client.submit(agent_bundle("jpeg"), dataset=b.digest, points=[{"quality": 50}])
                assert (await client.wait(exp.experiment_id)).state == SUCCEEDED
            reads = orch.servicer.blob_reads
            agent_digest = agent_bundle("jpeg").files[0].sha256
            assert reads[agent_digest] == 1
            assert {img.sha256: reads[img.sha256] for img in a.images} == {img.sha256: 1 for img in a.images}
        finally:
            await worker.stop()


@sqlite_only
@pytest.mark.timeout(300)
async def test_a_24mp_photo_uploads_and_runs_by_digest(tmp_path: Path) -> None:
    """A camera-sized image (6000x4000, within the 32 MiP limit) is accepted by the upload and reaches
    the worker and its sandbox by digest; its float32 reconstruction is measured (issue 13)."""
    folder = tmp_path / "camera"
    folder.mkdir()
    Image.new("RGB", (6000, 4000), (30, 90, 210)).save(folder / "camera.png")
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client:
                dataset = await client.upload_dataset("camera", folder)
                exp = await client.submit(agent_bundle("flat_float32"), dataset="camera")
                done = await client.wait(exp.experiment_id)
            assert done.state == SUCCEEDED, done.error
            (image,) = done.result.points[0].images
            assert (image.metrics.width, image.metrics.height, image.metrics.lossless) == (6000, 4000, True)
            assert orch.servicer.blob_reads[dataset.images[0].sha256] == 1  # fetched by digest, not inline
        finally:
            await worker.stop()


@sqlite_only
async def test_an_image_file_over_the_file_limit_is_refused_naming_it(tmp_path: Path) -> None:
    chunk = b"\0" * rpc.CHUNK_BYTES
    count = datasets.MAX_FILE_BYTES // rpc.CHUNK_BYTES + 1
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:

        async def stream():  # noqa: ANN202
            yield _header("huge")
            for i in range(count):
                yield _chunk(chunk, last=i == count - 1)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreateDataset(stream())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == f"chunk.data: image 'x.png' exceeds {datasets.MAX_FILE_BYTES} bytes"


def _header(name: str) -> orchestrator_pb2.CreateDatasetRequest:
    return orchestrator_pb2.CreateDatasetRequest(header=orchestrator_pb2.CreateDatasetHeader(name=name))


def _chunk(data: bytes, last: bool = True) -> orchestrator_pb2.CreateDatasetRequest:
    return orchestrator_pb2.CreateDatasetRequest(
        chunk=orchestrator_pb2.ImageChunk(image_name="x.png", data=data, last=last)
    )


@sqlite_only
@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([_chunk(b"1", last=False)], "header"),
        ([_header("photos"), _chunk(b"1")], "header.name"),
        ([_header("d"), _chunk(b"\0" * (1024 * 1024 + 1))], "chunk.data"),
        ([_header("d"), _chunk(b"not an image")], "chunk.data"),
        ([_header("d"), _chunk(b"1", last=False)], "chunk.last"),
    ],
)
async def test_malformed_dataset_uploads_name_the_field(tmp_path: Path, messages, field: str) -> None:  # noqa: ANN001
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:

        async def stream():  # noqa: ANN202
            for message in messages:
                yield message

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreateDataset(stream())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(field), info.value.details()
        assert [d.name for d in await client.datasets()] == ["photos"]


async def test_list_filters_by_state_and_label_newest_first_with_pages(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        created = [
            await client.submit(agent_bundle("jpeg"), points=[{"quality": 50}], labels={"sweep": "a" if i % 2 else "b"})
            for i in range(5)
        ]
        await client.cancel(created[0].experiment_id)
        newest_first = [e.experiment_id for e in reversed(created)]

        pages, token = [], ""
        while True:
            page = await client.stub.ListExperiments(
                orchestrator_pb2.ListExperimentsRequest(page_size=2, page_token=token)
            )
            pages.append([e.experiment_id for e in page.experiments])
            token = page.next_page_token
            if not token:
                break
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
        assert [e.experiment_id for e in await client.list(labels={"sweep": "a"})] == [
            e.experiment_id for e in reversed(created) if e.labels["sweep"] == "a"
        ]
        assert [e.experiment_id for e in await client.list(states=[CANCELLED])] == [created[0].experiment_id]
        queued = await client.list(states=[experiment_pb2.EXPERIMENT_STATE_QUEUED], labels={"sweep": "b"})
        assert [e.experiment_id for e in queued] == [created[4].experiment_id, created[2].experiment_id]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.ListExperiments(orchestrator_pb2.ListExperimentsRequest(page_token="garbage!"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in info.value.details()


async def test_worker_id_registered_again_from_another_address_releases_its_running_experiment(tmp_path: Path) -> None:
    """The holder of the worker's credential moves it; see tests/test_auth.py for a takeover without it."""
    images = write_images(tmp_path / "imgs", [(32, 32)] * 2)
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client, rpc.channel(orch.address, orch.enroll_secret) as enroll:
                await client.upload_dataset("two", images)
                exp = await client.submit(agent_bundle("slow_lossless"), dataset="two", points=[{"delay_s": 600}])
                await eventually(lambda: _state_is(client, exp.experiment_id, RUNNING), what="running")
                moved = worker_pb2.WorkerInfo()
                moved.CopyFrom(worker.handle.info)
                moved.address = f"127.0.0.1:{free_port()}"
                await orchestrator_pb2_grpc.OrchestratorServiceStub(enroll).RegisterWorker(
                    orchestrator_pb2.RegisterWorkerRequest(worker=moved, worker_credential=worker.link.credential))
                await eventually(
                    lambda: _state_is(client, exp.experiment_id, RUNNING, negate=True), what="no longer RUNNING"
                )
                assert (await client.get(exp.experiment_id)).attempt >= 2
                await client.cancel(exp.experiment_id)
                events = await all_events(client, exp.experiment_id)
                requeued = [
                    e.state_change.reason
                    for e in events
                    if e.WhichOneof("event") == "state_change" and e.state_change.attempt == 2
                ]
                assert requeued and "registered again" in requeued[0]
        finally:
            await worker.stop()


async def _state_is(client: Client, experiment_id: str, state: int, negate: bool = False) -> bool:
    return ((await client.get(experiment_id)).state == state) != negate


class _HungWorker(worker_pb2_grpc.WorkerServiceServicer):
    """Accepts RunExperiment and never answers (a worker that hangs but keeps heartbeating)."""

    def __init__(self) -> None:
        self.requests: list[worker_pb2.RunExperimentRequest] = []
        self.info = worker_pb2.WorkerInfo()

    async def GetWorkerInfo(  # noqa: N802 - answers the orchestrator's reachability probe
        self, request, context
    ) -> worker_pb2.GetWorkerInfoResponse:
        return worker_pb2.GetWorkerInfoResponse(worker=self.info)

    async def RunExperiment(self, request, context) -> AsyncIterator[worker_pb2.RunExperimentResponse]:  # noqa: N802
        self.requests.append(request)
        await asyncio.Event().wait()
        yield worker_pb2.RunExperimentResponse()


@pytest.mark.parametrize("limit_from", ["request", "worker defaults"])
async def test_hung_worker_call_times_out_and_the_experiment_does_not_stay_running(
    tmp_path: Path, limit_from: str
) -> None:
    from codecbench import build

    hung = _HungWorker()
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(hung, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # The worker's defaults decide the orchestrator's deadline when the experiment sets none.
    defaults = types_pb2.Timeouts(load_s=7, encode_s=8, decode_s=9, experiment_s=0.5 if limit_from != "request" else 60)
    info = worker_pb2.WorkerInfo(worker_id="w-hung", build_id=build.build_id(), slots=1, address=f"127.0.0.1:{port}",
                                 default_timeouts=defaults)
    hung.info = info
    requested = types_pb2.Timeouts(experiment_s=0.5) if limit_from == "request" else types_pb2.Timeouts()
    try:
        async with orchestrator(tmp_path / "orch", call_slack_s=0.5) as orch, Client(orch.address) as client:
            async with rpc.channel(orch.address, orch.enroll_secret) as enroll:
                await orchestrator_pb2_grpc.OrchestratorServiceStub(enroll).RegisterWorker(
                    orchestrator_pb2.RegisterWorkerRequest(worker=info))
            exp = await client.submit(
                agent_bundle("jpeg"), points=[{"quality": 50}], max_attempts=1, timeouts=requested
            )
            done = await client.wait(exp.experiment_id)
            assert done.state == experiment_pb2.EXPERIMENT_STATE_FAILED
            assert done.error.kind == errors_pb2.ERROR_KIND_WORKER_LOST and "DEADLINE_EXCEEDED" in done.error.message
            # The worker was sent explicit limits: the request's where given, else the worker's own defaults.
            sent = hung.requests[0].timeouts
            assert (sent.load_s, sent.encode_s, sent.decode_s, sent.experiment_s) == (7, 8, 9, 0.5)
    finally:
        await server.stop(0)


async def test_backlog_for_an_absent_gpu_does_not_block_cpu_experiments(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        for _ in range(600):  # more than one scheduler pass reads
            await client.submit(agent_bundle("jpeg"), points=[{"quality": 50}], device="cuda")
        images = write_images(tmp_path / "imgs", [(32, 32)])
        await client.upload_dataset("one", images)
        cpu = await client.submit(agent_bundle("jpeg"), dataset="one", points=[{"quality": 50}])
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            assert (await client.wait(cpu.experiment_id)).state == SUCCEEDED
        finally:
            await worker.stop()


async def test_watch_resumed_after_the_terminal_event_ends_at_once(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        exp = await client.submit(agent_bundle("jpeg"), points=[{"quality": 50}])
        await client.cancel(exp.experiment_id)
        events = await all_events(client, exp.experiment_id)
        assert events[-1].error.kind == errors_pb2.ERROR_KIND_CANCELLED
        assert await all_events(client, exp.experiment_id, after=events[-1].sequence) == []
        with pytest.raises(errors.OutOfRange):  # past the last event: documented in orchestrator.proto
            await all_events(client, exp.experiment_id, after=events[-1].sequence + 5)


async def test_dataset_names_are_immutable_and_uploads_idempotent(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        first = await client.upload_dataset("set", write_images(tmp_path / "a", [(32, 32)]))
        again = await client.upload_dataset("set", tmp_path / "a")
        assert again.digest == first.digest
        with pytest.raises(errors.AlreadyExists) as info:
            await client.upload_dataset("set", write_images(tmp_path / "b", [(40, 40)]))
        assert info.value.field == "header.name"
        assert (await client.datasets())[-1].digest == first.digest
