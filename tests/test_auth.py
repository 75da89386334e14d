"""Issue 12's attacks, each tried against real servers with real gRPC credentials, and refused.

Users authenticate with bearer tokens and see only what they own; workers enrol with a secret and
then use a per-worker credential; only the orchestrator (or a local admin token) may call a
worker's experiment RPCs; files are private to the services' user.
"""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import agent_bundle, eventually, worker_channel
from helpers.services import attach_worker, free_port, orchestrator, write_images
from helpers.worker import request as worker_request

from codecbench import auth, build, errors, rpc, status
from codecbench.client import Client
from codecbench.states import QUEUED, SUCCEEDED
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc, worker_pb2, worker_pb2_grpc
from orchestrator_svc.server import create_token, start_orchestrator

pytestmark = pytest.mark.timeout(180)
PENDING = orchestrator_pb2.WORKER_STATE_PENDING


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_missing_or_wrong_token_is_unauthenticated_and_health_stays_open(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch:
        async with rpc.channel(orch.address) as bare:  # no token at all
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await orchestrator_pb2_grpc.OrchestratorServiceStub(bare).ListExperiments(
                    orchestrator_pb2.ListExperimentsRequest())
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "CODECBENCH_TOKEN" in raised.value.details()
            health = await health_pb2_grpc.HealthStub(bare).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with Client(orch.address, token="not-a-token") as client:
            with pytest.raises(errors.Unauthenticated):
                await client.list()
            with pytest.raises(errors.Unauthenticated):
                await client.submit(agent_bundle("jpeg"))
        # The enrollment secret registers workers and does nothing else.
        async with Client(orch.address, token=orch.enroll_secret) as enrollee:
            with pytest.raises(errors.PermissionDenied):
                await enrollee.list()


async def test_two_authorization_entries_are_refused_not_resolved_to_one(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch:
        alice_token, bob_token = create_token(orch.store, "alice"), create_token(orch.store, "bob")
        async with rpc.channel(orch.address) as bare:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(bare)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListExperiments(orchestrator_pb2.ListExperimentsRequest(), metadata=[
                    ("authorization", f"Bearer {bob_token}"), ("authorization", f"Bearer {alice_token}")])
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "2 authorization entries" in raised.value.details()


async def test_users_see_watch_cancel_and_read_only_their_own(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        alice_token, bob_token = create_token(orch.store, "alice"), create_token(orch.store, "bob")
        async with Client(orch.address, token=alice_token) as alice, Client(orch.address, token=bob_token) as bob, \
                Client(orch.address) as admin:
            dataset = await alice.upload_dataset("alices", images)
            assert dataset.owner == "alice" and not dataset.shared
            exp = await alice.submit(agent_bundle("jpeg"), dataset="alices", points=[{"quality": 50}])
            assert exp.owner == "alice"
            for attempt in (bob.get(exp.experiment_id), bob.cancel(exp.experiment_id)):
                with pytest.raises(errors.PermissionDenied):
                    await attempt
            with pytest.raises(errors.PermissionDenied):
                async for _ in bob.watch(exp.experiment_id):
                    pass
            assert await bob.list() == []
            assert [e.experiment_id for e in await admin.list()] == [exp.experiment_id]
            assert (await alice.get(exp.experiment_id)).state == QUEUED  # bob's cancel did nothing
            # alice's agent file and image: bob reads neither (and cannot reuse them by digest)
            agent_file = exp.agent.files[0].sha256
            image = dataset.images[0].sha256
            for digest in (agent_file, image):
                with pytest.raises(errors.NotFound):
                    await _read_blob(bob, digest)
            assert await _read_blob(alice, image) == (images / "img0.png").read_bytes()
            with pytest.raises(errors.InvalidArgument) as by_digest:
                await bob.submit(exp.agent)  # the same files by digest, without content
            assert by_digest.value.reason == errors.REASON_BLOB_MISSING
            assert [d.name for d in await bob.datasets()] == ["photos"]
            with pytest.raises(errors.InvalidArgument) as unknown:
                await bob.submit(agent_bundle("jpeg"), dataset="alices")
            assert unknown.value.reason == errors.REASON_DATASET_UNKNOWN
            # an admin shares it: bob now sees it, reads its images and runs on it
            with pytest.raises(errors.PermissionDenied):
                await bob.share_dataset("alices")
            assert (await admin.share_dataset("alices")).shared
            assert "alices" in [d.name for d in await bob.datasets()]
            assert await _read_blob(bob, image)
            await bob.submit(agent_bundle("jpeg"), dataset="alices")
            await admin.share_dataset("alices", shared=False)
            with pytest.raises(errors.NotFound):
                await _read_blob(bob, image)
            # workers: admins see addresses and builds, users counts and devices; only admins drain
            worker = await attach_worker(orch, tmp_path / "w")
            try:
                await eventually(lambda: _listed(admin, worker.handle.info.worker_id), what="worker listed")
                seen = (await bob.workers())[0]
                assert seen.info.worker_id and seen.info.slots == 1 and seen.info.devices
                assert not (seen.info.address or seen.info.build_id or seen.info.host or seen.info.pid)
                full = (await admin.workers())[0]
                assert full.info.address == worker.handle.address and full.info.build_id == build.build_id()
                with pytest.raises(errors.PermissionDenied):
                    await bob.drain(worker.handle.info.worker_id)
                # a user token is no worker credential
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await bob.stub.Heartbeat(orchestrator_pb2.HeartbeatRequest(worker_id=worker.handle.info.worker_id))
                assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                await worker.stop()


async def _read_blob(client: Client, sha256: str) -> bytes:
    """ReadBlob (the client has no method for it: workers call it), with errors as the tree's."""
    try:
        return b"".join([r.data async for r in client.stub.ReadBlob(orchestrator_pb2.ReadBlobRequest(sha256=sha256))])
    except grpc.aio.AioRpcError as exc:
        raise status.from_rpc_error(exc) from exc


async def _listed(client: Client, worker_id: str) -> bool:
    return any(w.info.worker_id == worker_id for w in await client.workers())


async def _ready(client: Client, worker_id: str) -> bool:
    return any(w.info.worker_id == worker_id and w.state == orchestrator_pb2.WORKER_STATE_READY
               for w in await client.workers())


async def test_worker_id_takeover_is_refused_and_the_real_worker_keeps_its_work(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)] * 2)
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            async with Client(orch.address) as client, rpc.channel(orch.address, orch.enroll_secret) as enroll, \
                    rpc.channel(orch.address, "guessed") as stranger:
                await eventually(lambda: _ready(client, worker.handle.info.worker_id), what="worker ready")
                impostor = worker_pb2.WorkerInfo()
                impostor.CopyFrom(worker.handle.info)
                impostor.address = f"127.0.0.1:{free_port()}"
                for credential in ("", "a-credential-of-my-own"):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await orchestrator_pb2_grpc.OrchestratorServiceStub(enroll).RegisterWorker(
                            orchestrator_pb2.RegisterWorkerRequest(worker=impostor, worker_credential=credential))
                    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await orchestrator_pb2_grpc.OrchestratorServiceStub(stranger).RegisterWorker(
                        orchestrator_pb2.RegisterWorkerRequest(worker=impostor))
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                (status,) = await client.workers()
                assert status.info.address == worker.handle.address  # still the real one
                await client.upload_dataset("two", images)
                exp = await client.submit(agent_bundle("zlib_lossless"), dataset="two")
                done = await client.wait(exp.experiment_id)
                assert done.state == SUCCEEDED and done.attempt == 1
                assert done.worker_id == worker.handle.info.worker_id
                assert all(i.metrics.lossless for i in done.result.points[0].images)
        finally:
            await worker.stop()


async def test_dead_address_registrations_stay_pending_and_cost_no_attempt(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client, \
            rpc.channel(orch.address, orch.enroll_secret) as enroll:
        await client.upload_dataset("one", images)
        exp = await client.submit(agent_bundle("jpeg"), dataset="one", points=[{"quality": 50}])
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(enroll)
        for i in range(3):
            info = worker_pb2.WorkerInfo(worker_id=f"w-dead{i}", build_id=build.build_id(), slots=4,
                                         address=f"127.0.0.1:{free_port()}", protocol_version="codecbench.v1")
            reply = await stub.RegisterWorker(orchestrator_pb2.RegisterWorkerRequest(worker=info))
            assert reply.status.state == PENDING and reply.worker_credential

        async def probed_twice() -> bool:  # each probe of each dead worker failed at least once
            workers = await client.workers()
            return len(workers) == 3 and all(w.state == PENDING and "not reached" in w.state_reason for w in workers)

        await eventually(probed_twice, what="the dead workers probed and PENDING")
        queued = await client.get(exp.experiment_id)
        assert queued.state == QUEUED and queued.attempt == 1 and not queued.worker_id
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            done = await client.wait(exp.experiment_id)
            assert done.state == SUCCEEDED and done.attempt == 1 and done.worker_id == worker.handle.info.worker_id
        finally:
            await worker.stop()


async def test_worker_experiment_rpcs_need_the_orchestrator_credential(tmp_path: Path) -> None:
    async with orchestrator(tmp_path / "orch") as orch:
        user_token = create_token(orch.store, "mallory")
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            await eventually(lambda: bool(worker.link.credential), what="worker registered")
            address = worker.handle.address
            for token in ("", user_token, orch.enroll_secret):
                async with rpc.channel(address, token) as channel:
                    stub = worker_pb2_grpc.WorkerServiceStub(channel)
                    for call in (
                        stub.Encode(worker_pb2.EncodeRequest(agent=agent_bundle("jpeg"))),
                        stub.GetWorkerInfo(worker_pb2.GetWorkerInfoRequest()),
                    ):
                        with pytest.raises(grpc.aio.AioRpcError) as raised:
                            await call
                        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        [r async for r in stub.RunExperiment(worker_request("zlib_lossless"))]
                    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                    assert health.status == health_pb2.HealthCheckResponse.SERVING
            # the orchestrator's credential (what it presents when it dispatches) and the local admin token work
            for channel in (rpc.channel(address, worker.link.credential), worker_channel(address)):
                async with channel:
                    events = [r.event async for r in worker_pb2_grpc.WorkerServiceStub(channel).RunExperiment(
                        worker_request("zlib_lossless"))]
                    assert events[-1].HasField("result")
        finally:
            await worker.stop()


async def test_worker_registers_again_after_an_orchestrator_restart(tmp_path: Path) -> None:
    """The credential binding is stored: the same worker takes its id back; an impostor still cannot."""
    images = write_images(tmp_path / "imgs", [(32, 32)])
    port = free_port()
    async with orchestrator(tmp_path / "orch", port=port) as orch:
        worker = await attach_worker(orch, tmp_path / "w")
        worker_id = worker.handle.info.worker_id
        async with Client(orch.address) as client:
            await eventually(lambda: _ready(client, worker_id), what="ready")
        credential = worker.link.credential
    try:
        async with orchestrator(tmp_path / "orch", port=port) as orch, Client(orch.address) as client:
            await eventually(lambda: _ready(client, worker_id), what="the worker registered again")
            assert worker.link.credential == credential
            await client.upload_dataset("one", images)
            exp = await client.submit(agent_bundle("zlib_lossless"), dataset="one")
            done = await client.wait(exp.experiment_id)
            assert done.state == SUCCEEDED and done.worker_id == worker_id
            impostor = worker_pb2.WorkerInfo()
            impostor.CopyFrom(worker.handle.info)
            impostor.address = f"127.0.0.1:{free_port()}"
            async with rpc.channel(orch.address, orch.enroll_secret) as enroll:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await orchestrator_pb2_grpc.OrchestratorServiceStub(enroll).RegisterWorker(
                        orchestrator_pb2.RegisterWorkerRequest(worker=impostor))
                assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    finally:
        await worker.stop()


async def test_data_dirs_are_0700_and_database_blobs_and_secrets_0600(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    data = tmp_path / "orch"
    async with orchestrator(data) as orch, Client(orch.address) as client:
        worker = await attach_worker(orch, tmp_path / "w")
        try:
            await client.upload_dataset("one", images)
            exp = await client.submit(agent_bundle("zlib_lossless"), dataset="one")
            assert (await client.wait(exp.experiment_id)).state == SUCCEEDED
        finally:
            await worker.stop()
    assert _mode(data) == 0o700 and _mode(tmp_path / "w") == 0o700
    for name in ("codecbench.db", "codecbench.db-wal", "codecbench.db-shm", auth.ENROLL_TOKEN_FILE):
        if (data / name).exists() or name == "codecbench.db":
            assert _mode(data / name) == 0o600, name
    blobs = [p for root in (data / "blobs", tmp_path / "w" / "blobs") for p in root.rglob("*")]
    assert any(p.is_file() for p in blobs) and any(p.is_dir() for p in blobs)
    for path in blobs:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(data / "blobs") == 0o700


async def test_start_orchestrator_refuses_plaintext_beyond_loopback(tmp_path: Path) -> None:
    from orchestrator_svc.server import OrchestratorConfig

    with pytest.raises(ValueError, match="without TLS"):
        await start_orchestrator(OrchestratorConfig(data_dir=tmp_path, host="0.0.0.0"))


async def test_a_dataset_named_by_digest_is_one_the_caller_may_see(tmp_path: Path) -> None:
    """Hostile test of issue 20: the digest found the oldest dataset with it, another user's."""
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch") as orch:
        alice_token, bob_token = create_token(orch.store, "alice"), create_token(orch.store, "bob")
        async with Client(orch.address, token=alice_token) as alice, Client(orch.address, token=bob_token) as bob:
            alices = await alice.upload_dataset("alices", images)
            bobs = await bob.upload_dataset("bobs", images)
            assert alices.digest == bobs.digest
            exp = await bob.submit(agent_bundle("jpeg"), dataset=bobs.digest)
            assert exp.dataset == "bobs"
            with pytest.raises(errors.InvalidArgument) as refused:
                await bob.submit(agent_bundle("jpeg"), dataset="alices")
            assert "alices" not in refused.value.problem.split("known:")[1]
