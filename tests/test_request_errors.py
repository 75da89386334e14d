"""Request errors travel as rich statuses: one bad request per error kind to both real services
checks the code, the ``google.rpc.ErrorInfo`` reason and the field; the Python client raises the
:mod:`codecbench.errors` tree; undecodable bodies get INVALID_ARGUMENT; messages stay bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from helpers import REPO, TEST_ADMIN_TOKEN, agent_bundle, eventually, worker_channel
from helpers.services import orchestrator
from helpers.worker import png_bytes, request

from codecbench import errors, rpc, status, tensors, validation
from codecbench.client import Client
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2, worker_pb2, worker_pb2_grpc
from orchestrator_svc.server import OrchestratorHandle
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

pytestmark = pytest.mark.timeout(120)

# A blob that the test worker's remote fetch holds until the test lets it go (and then refuses).
HELD_DIGEST = "1" * 64
MISSING_DIGEST = "2" * 64


@dataclass
class Services:
    orchestrator: OrchestratorHandle
    worker: WorkerHandle
    orch: orchestrator_pb2_grpc.OrchestratorServiceStub
    work: worker_pb2_grpc.WorkerServiceStub
    release_held_blob: asyncio.Event


@pytest_asyncio.fixture(scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    """A real orchestrator and a real one-slot worker on 127.0.0.1, port 0.

    The worker's blob source refuses every digest, after holding :data:`HELD_DIGEST` until
    ``release_held_blob`` is set: a call fetching it keeps the worker's only slot taken.
    """
    release = asyncio.Event()

    async def fetch(digest: str) -> bytes:
        if digest == HELD_DIGEST:
            await release.wait()
        raise LookupError(f"no blob {digest} here")

    root = tmp_path_factory.mktemp("request_errors")
    worker = await start_worker(
        WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=root / "worker", slots=1, use_bwrap=False,
                     warm_template=False), fetch
    )
    async with orchestrator(root / "orch") as orch:
        orch_channel = rpc.channel(orch.address, TEST_ADMIN_TOKEN)
        work_channel = worker_channel(worker.address)
        yield Services(
            orch, worker, orchestrator_pb2_grpc.OrchestratorServiceStub(orch_channel),
            worker_pb2_grpc.WorkerServiceStub(work_channel), release,
        )
        release.set()
        await orch_channel.close()
        await work_channel.close()
    await worker.stop(0)


# ---- one bad request per error kind, to both services ----

Send = Callable[[Services], Awaitable[object]]


@dataclass(frozen=True)
class Case:
    id: str
    send: Send
    code: grpc.StatusCode
    reason: str
    field: str


async def _drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


def _upload(name: str, data: bytes) -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
    async def messages() -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
        yield orchestrator_pb2.CreateDatasetRequest(header=orchestrator_pb2.CreateDatasetHeader(name=name))
        yield orchestrator_pb2.CreateDatasetRequest(
            chunk=orchestrator_pb2.ImageChunk(image_name="a.png", data=data, last=True)
        )

    return messages()


async def _upload_twice(s: Services) -> None:
    await s.orch.CreateDataset(_upload("twice", png_bytes(16, 16, seed=1)))
    await s.orch.CreateDataset(_upload("twice", png_bytes(16, 16, seed=2)))


def _bundle_with_file_by_digest(digest: str) -> types_pb2.AgentBundle:
    bundle = agent_bundle("zlib_lossless")
    bundle.files.add(name="weights.bin", sha256=digest, size_bytes=10)
    return bundle


def _image(data: bytes, shape: list[int]) -> types_pb2.Tensor:
    return types_pb2.Tensor(dtype=types_pb2.D_TYPE_UINT8, shape=shape, data=data)


def _run(s: Services, **changes: object) -> Awaitable[None]:
    req = request("zlib_lossless")
    for name, value in changes.items():
        if isinstance(value, types_pb2.AgentBundle | types_pb2.DatasetRef):
            getattr(req, name).CopyFrom(value)
        else:
            setattr(req, name, value)
    return _drain(s.work.RunExperiment(req))


def _stream(*messages: orchestrator_pb2.CreateDatasetRequest) -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
    async def each() -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
        for message in messages:
            yield message

    return each()


def _header(name: str) -> orchestrator_pb2.CreateDatasetRequest:
    return orchestrator_pb2.CreateDatasetRequest(header=orchestrator_pb2.CreateDatasetHeader(name=name))


def _chunk(image_name: str, data: bytes) -> orchestrator_pb2.CreateDatasetRequest:
    return orchestrator_pb2.CreateDatasetRequest(
        chunk=orchestrator_pb2.ImageChunk(image_name=image_name, data=data, last=True)
    )


def _point(**params: types_pb2.Value) -> types_pb2.ParameterPoint:
    return types_pb2.ParameterPoint(params=params)


# Red-team M2: a 2^20 x 2^20 uint8 tensor parameter without data, once blamed on the agent.
HUGE_TENSOR = types_pb2.Value(torch_tensor_value=types_pb2.Tensor(dtype=types_pb2.D_TYPE_UINT8, shape=[2**20, 2**20]))
NAN = types_pb2.Value(float_value=float("nan"))
CUDA_7 = types_pb2.Value(string_value="cuda:7")
INF_IN_LIST = types_pb2.Value(list_value=types_pb2.ValueList(values=[types_pb2.Value(float_value=float("-inf"))]))


def _creating(s: Services, mutate: Callable[[orchestrator_pb2.CreateExperimentRequest], object]) -> Awaitable[object]:
    req = orchestrator_pb2.CreateExperimentRequest(agent=agent_bundle("jpeg"), dataset="photos")
    mutate(req)
    return s.orch.CreateExperiment(req)


def _running(s: Services, mutate: Callable[[worker_pb2.RunExperimentRequest], object]) -> Awaitable[None]:
    req = request("zlib_lossless")
    mutate(req)
    return _drain(s.work.RunExperiment(req))


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
CASES = [
    # the orchestrator
    Case("orchestrator-invalid-argument",
         lambda s: s.orch.ListExperiments(orchestrator_pb2.ListExperimentsRequest(page_size=-1)),
         INVALID, "INVALID_ARGUMENT", "page_size"),
    Case("orchestrator-dataset-unknown",
         lambda s: s.orch.CreateExperiment(
             orchestrator_pb2.CreateExperimentRequest(agent=agent_bundle("jpeg"), dataset="nope")),
         INVALID, errors.REASON_DATASET_UNKNOWN, "dataset"),
    Case("orchestrator-image-undecodable",
         lambda s: s.orch.CreateDataset(_upload("bad", b"not an image")),
         INVALID, errors.REASON_IMAGE_UNDECODABLE, "chunk.data"),
    Case("orchestrator-not-found",
         lambda s: s.orch.GetExperiment(orchestrator_pb2.GetExperimentRequest(experiment_id="exp-none")),
         NOT_FOUND, "NOT_FOUND", "experiment_id"),
    Case("orchestrator-not-found-streaming",
         lambda s: _drain(s.orch.WatchExperiment(orchestrator_pb2.WatchExperimentRequest(experiment_id="exp-none"))),
         NOT_FOUND, "NOT_FOUND", "experiment_id"),
    Case("orchestrator-blob-not-found",
         lambda s: _drain(s.orch.ReadBlob(orchestrator_pb2.ReadBlobRequest(sha256=MISSING_DIGEST))),
         NOT_FOUND, errors.REASON_BLOB_MISSING, "sha256"),
    Case("orchestrator-already-exists", _upload_twice, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", "header.name"),
    # the red-team review's findings (M1, M2, L1-L4), one request each
    Case("orchestrator-too-many-labels",
         lambda s: _creating(s, lambda r: r.labels.update({f"k{i}": "v" for i in range(20_000)})),
         INVALID, "INVALID_ARGUMENT", "labels"),
    Case("orchestrator-one-label-too-many",
         lambda s: _creating(s, lambda r: r.labels.update({f"k{i}": "v" for i in range(validation.MAX_LABELS + 1)})),
         INVALID, "INVALID_ARGUMENT", "labels"),
    Case("orchestrator-too-many-label-filters",
         lambda s: s.orch.ListExperiments(orchestrator_pb2.ListExperimentsRequest(
             labels={f"k{i}": "v" for i in range(3000)})),
         INVALID, "INVALID_ARGUMENT", "labels"),
    Case("orchestrator-one-label-filter-too-many",
         lambda s: s.orch.ListExperiments(orchestrator_pb2.ListExperimentsRequest(
             labels={f"k{i}": "v" for i in range(validation.MAX_LABEL_FILTERS + 1)})),
         INVALID, "INVALID_ARGUMENT", "labels"),
    Case("orchestrator-tensor-param-malformed",
         lambda s: _creating(s, lambda r: r.points.append(_point(w=HUGE_TENSOR))),
         INVALID, errors.REASON_TENSOR_MALFORMED, "points[0].params['w']"),
    Case("orchestrator-nan-param",
         lambda s: _creating(s, lambda r: r.points.append(_point(mode=NAN))),
         INVALID, "INVALID_ARGUMENT", "points[0].params['mode']"),
    Case("orchestrator-infinite-param-in-a-list",
         lambda s: _creating(s, lambda r: r.points.extend([_point(), _point(q=INF_IN_LIST)])),
         INVALID, "INVALID_ARGUMENT", "points[1].params['q']"),
    Case("orchestrator-second-dataset-header",
         lambda s: s.orch.CreateDataset(_stream(_header("first"), _chunk("a.png", png_bytes(8, 8, seed=1)),
                                                _header("renamed"))),
         INVALID, "INVALID_ARGUMENT", "header"),
    Case("orchestrator-image-name-with-nul",
         lambda s: s.orch.CreateDataset(_stream(_header("nul"), _chunk("a\0.png", png_bytes(8, 8, seed=1)))),
         INVALID, "INVALID_ARGUMENT", "chunk.image_name"),
    Case("orchestrator-image-name-with-escape",
         lambda s: s.orch.CreateDataset(_stream(_header("esc"), _chunk("\x1b[2Ja.png", png_bytes(8, 8, seed=1)))),
         INVALID, "INVALID_ARGUMENT", "chunk.image_name"),
    Case("orchestrator-negative-file-size",
         lambda s: _creating(s, lambda r: setattr(r.agent.files[0], "size_bytes", -1)),
         INVALID, "INVALID_ARGUMENT", "agent.files[0].size_bytes"),
    Case("orchestrator-file-size-disagrees-with-content",
         lambda s: _creating(s, lambda r: setattr(r.agent.files[0], "size_bytes", len(r.agent.files[0].content) + 1)),
         INVALID, "INVALID_ARGUMENT", "agent.files[0].size_bytes"),
    # a file by digest that declares -2**62 bytes once made the bundle's summed size pass any limit
    Case("orchestrator-negative-size-by-digest",
         lambda s: _creating(s, lambda r: r.agent.files.add(name="w.bin", sha256=MISSING_DIGEST, size_bytes=-2**62)),
         INVALID, "INVALID_ARGUMENT", "agent.files[1].size_bytes"),
    # a file with neither content nor size is the empty file: naming another blob's digest once
    # stored a reference to someone else's file for an empty one
    Case("orchestrator-empty-file-with-a-foreign-digest",
         lambda s: _creating(s, lambda r: r.agent.files.add(name="stolen.py", sha256=MISSING_DIGEST)),
         INVALID, "INVALID_ARGUMENT", "agent.files[1].sha256"),
    # issue 13: a parameter named like an argument the contracts pass would replace it (`--param
    # device=cuda:7` once made the agent see cuda:7 with the image on the CPU)
    Case("orchestrator-reserved-parameter-name",
         lambda s: _creating(s, lambda r: r.points.append(_point(device=CUDA_7))),
         INVALID, "INVALID_ARGUMENT", "points[0].params['device']"),
    # NFKC variants: Python names a parameter `def f(ｑuality)` 'quality' (PEP 3131), so 'ｑuality' could
    # never bind, and 'ｄevice' would reach the parameter named device
    Case("orchestrator-nfkc-variant-of-a-reserved-name",
         lambda s: _creating(s, lambda r: r.points.append(_point(**{"\uff44evice": CUDA_7}))),
         INVALID, "INVALID_ARGUMENT", "points[0].params['\uff44evice']"),
    Case("orchestrator-parameter-name-not-nfkc-normalised",
         lambda s: _creating(s, lambda r: r.points.append(_point(**{"\uff51uality": CUDA_7}))),
         INVALID, "INVALID_ARGUMENT", "points[0].params['\uff51uality']"),
    Case("worker-reserved-parameter-name",
         lambda s: _running(s, lambda r: r.points.extend([_point(), _point(encoding_data=CUDA_7)])),
         INVALID, "INVALID_ARGUMENT", "points[1].params['encoding_data']"),
    Case("worker-unary-reserved-parameter-name",
         lambda s: s.work.Encode(worker_pb2.EncodeRequest(
             agent=agent_bundle("zlib_lossless"), params=_point(image=CUDA_7), image=_image(bytes(48), [3, 4, 4]))),
         INVALID, "INVALID_ARGUMENT", "params.params['image']"),
    Case("worker-unary-decode-reserved-parameter-name",
         lambda s: s.work.Decode(worker_pb2.DecodeRequest(agent=agent_bundle("zlib_lossless"),
                                                          params=_point(bitstream=CUDA_7))),
         INVALID, "INVALID_ARGUMENT", "params.params['bitstream']"),
    # the worker
    Case("worker-invalid-argument", lambda s: _run(s, device=types_pb2.DEVICE_ANY),
         INVALID, "INVALID_ARGUMENT", "device"),
    Case("worker-dataset-unknown", lambda s: _run(s, dataset=types_pb2.DatasetRef(name="nope")),
         INVALID, errors.REASON_DATASET_UNKNOWN, "dataset.name"),
    Case("worker-image-undecodable",
         lambda s: _run(s, dataset=types_pb2.DatasetRef(name="d", images=[types_pb2.BlobRef(name="x.png",
                                                                                             content=b"no")])),
         INVALID, errors.REASON_IMAGE_UNDECODABLE, "dataset.images"),
    Case("worker-tensor-malformed",
         lambda s: s.work.Encode(worker_pb2.EncodeRequest(agent=agent_bundle("zlib_lossless"),
                                                          image=_image(b"\0", [3, 4, 4]))),
         INVALID, errors.REASON_TENSOR_MALFORMED, "image"),
    Case("worker-no-gpu", lambda s: _run(s, device=types_pb2.DEVICE_CUDA),
         grpc.StatusCode.FAILED_PRECONDITION, errors.REASON_NO_GPU, "device"),
    Case("worker-tensor-param-malformed",
         lambda s: _running(s, lambda r: r.points.append(_point(w=HUGE_TENSOR))),
         INVALID, errors.REASON_TENSOR_MALFORMED, "points[0].params['w']"),
    Case("worker-nan-param", lambda s: _running(s, lambda r: r.points.append(_point(mode=NAN))),
         INVALID, "INVALID_ARGUMENT", "points[0].params['mode']"),
    Case("worker-negative-image-size",
         lambda s: _running(s, lambda r: setattr(r.dataset.images[0], "size_bytes", -1)),
         INVALID, "INVALID_ARGUMENT", "dataset.images[0].size_bytes"),
    Case("worker-negative-file-size",
         lambda s: _running(s, lambda r: setattr(r.agent.files[0], "size_bytes", -1)),
         INVALID, "INVALID_ARGUMENT", "agent.files[0].size_bytes"),
    Case("worker-blob-missing",
         lambda s: s.work.Encode(worker_pb2.EncodeRequest(agent=_bundle_with_file_by_digest(MISSING_DIGEST),
                                                          image=_image(bytes(48), [3, 4, 4]))),
         grpc.StatusCode.FAILED_PRECONDITION, errors.REASON_BLOB_MISSING, "agent.files"),
]


def _details(exc: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[error_details_pb2.BadRequest]]:
    rich = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert rich is not None, f"no rich status: {exc.code().name}: {exc.details()}"
    infos: list[error_details_pb2.ErrorInfo] = []
    bad_requests: list[error_details_pb2.BadRequest] = []
    wanted = ((error_details_pb2.ErrorInfo, infos), (error_details_pb2.BadRequest, bad_requests))
    for detail in rich.details:
        for message_class, found in wanted:
            if detail.Is(message_class.DESCRIPTOR):
                message = message_class()
                detail.Unpack(message)
                found.append(message)
    assert len(infos) == 1, rich
    return infos[0], bad_requests


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_each_request_error_carries_its_code_reason_and_field(services: Services, case: Case) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await case.send(services)
    exc = raised.value
    assert exc.code() == case.code, exc.details()
    info, bad_requests = _details(exc)
    assert (info.reason, info.domain) == (case.reason, errors.DOMAIN)
    assert info.metadata["field"] == case.field
    assert exc.details().startswith(f"{case.field}: "), exc.details()
    if case.code == INVALID:
        assert [v.field for b in bad_requests for v in b.field_violations] == [case.field]
    else:
        assert bad_requests == []
    # The client's side of the boundary reads it back into the tree.
    error = status.from_rpc_error(exc)
    assert isinstance(error, errors.RequestError) and error.code == case.code
    assert (error.reason, error.field, str(error)) == (case.reason, case.field, exc.details())


async def test_worker_without_a_free_slot_says_so_by_reason(services: Services) -> None:
    holding = asyncio.ensure_future(_run(services, agent=_bundle_with_file_by_digest(HELD_DIGEST)))
    try:
        await eventually(lambda: services.worker.servicer.slots_in_use == 1, what="the one slot to be taken")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _run(services)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, _ = _details(raised.value)
        assert (info.reason, info.metadata["slots"]) == (errors.REASON_NO_FREE_SLOT, "1")
        refusal = status.from_rpc_error(raised.value)
        assert isinstance(refusal, errors.ResourceExhausted) and refusal.retryable
    finally:
        services.release_held_blob.set()
        with pytest.raises(grpc.aio.AioRpcError) as held:
            await holding
    assert held.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await eventually(lambda: services.worker.servicer.slots_in_use == 0, what="the slot to be released")


async def test_agent_errors_keep_their_typed_error_detail(services: Services) -> None:
    call = services.work.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle("exc_encode"), image=_image(bytes(3 * 8 * 8), [3, 8, 8]), device=types_pb2.DEVICE_CPU
    ))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info, _ = _details(raised.value)
    assert (info.reason, info.domain) == ("AGENT_EXCEPTION", errors.DOMAIN)
    error = status.from_rpc_error(raised.value)
    assert isinstance(error, errors.AgentException) and error.error.location.startswith("codec.py:")
    assert errors.error_from_rpc(raised.value) == error.to_proto()


# ---- the Python client ----

async def test_python_client_raises_the_error_tree(services: Services, tmp_path: Path) -> None:
    async with Client(services.orchestrator.address) as client:
        with pytest.raises(errors.NotFound) as not_found:
            await client.get("exp-none")
        assert (not_found.value.field, not_found.value.reason, not_found.value.retryable) == (
            "experiment_id", "NOT_FOUND", False)
        with pytest.raises(errors.NotFound):
            async for _ in client.watch("exp-none"):
                pass
        with pytest.raises(errors.NotFound):
            await client.drain("w-none")
        with pytest.raises(errors.InvalidArgument) as invalid:
            await client.submit(agent_bundle("jpeg"), dataset="nope")
        assert invalid.value.reason == errors.REASON_DATASET_UNKNOWN
        assert [v.field for v in invalid.value.violations] == ["dataset"] == [invalid.value.field]
        assert invalid.value.problem.startswith("unknown dataset 'nope'")
        (tmp_path / "imgs").mkdir()
        (tmp_path / "imgs" / "x.png").write_bytes(b"not a png")
        with pytest.raises(errors.InvalidArgument) as undecodable:
            await client.upload_dataset("broken", tmp_path / "imgs")
        assert (undecodable.value.field, undecodable.value.reason) == ("chunk.data", errors.REASON_IMAGE_UNDECODABLE)
    async with Client("127.0.0.1:1") as client:  # nothing listens on port 1
        with pytest.raises(errors.Unavailable) as unreachable:
            await client.datasets()
        assert unreachable.value.retryable and unreachable.value.code == grpc.StatusCode.UNAVAILABLE


# ---- undecodable bodies and bounded messages ----

GARBAGE = b"\xff\xff\xff\xff"


@pytest.mark.parametrize(
    ("service", "method", "kind"),
    [
        ("orchestrator", "/codecbench.v1.OrchestratorService/GetExperiment", "unary_unary"),
        ("orchestrator", "/codecbench.v1.OrchestratorService/CreateDataset", "stream_unary"),
        ("worker", "/codecbench.v1.WorkerService/RunExperiment", "unary_stream"),
        ("worker", "/codecbench.v1.WorkerService/Encode", "unary_unary"),
    ],
)
async def test_undecodable_request_body_is_invalid_argument(services: Services, service: str, method: str,
                                                            kind: str) -> None:
    address = services.orchestrator.address if service == "orchestrator" else services.worker.address
    async with rpc.channel(address, TEST_ADMIN_TOKEN) as channel:  # raw bytes: no serializer of our own
        multicallable = getattr(channel, kind)(method)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            if kind == "unary_unary":
                await multicallable(GARBAGE)
            elif kind == "unary_stream":
                await _drain(multicallable(GARBAGE))
            else:
                await multicallable(iter([GARBAGE]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    info, bad_requests = _details(raised.value)
    assert info.reason == errors.REASON_REQUEST_UNDECODABLE
    assert [v.field for b in bad_requests for v in b.field_violations] == ["request"]
    assert "not a decodable codecbench.v1." in raised.value.details()


async def test_echoed_input_is_cut_in_status_messages(services: Services) -> None:
    key = "k" * 100_000
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await services.orch.CreateExperiment(orchestrator_pb2.CreateExperimentRequest(
            agent=agent_bundle("jpeg"), dataset="photos", labels={key: "v"}
        ))
    details = raised.value.details()
    assert raised.value.code() == INVALID and details.startswith("labels: key 'kkk")
    assert len(details) <= 400 and "(100002 characters)" in details, details
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await services.orch.GetExperiment(orchestrator_pb2.GetExperimentRequest(experiment_id="x" * 100_000))
    # Over the id limit (issue 14): refused as an invalid argument, the message still short.
    assert raised.value.code() == INVALID and len(raised.value.details()) <= 400
    assert raised.value.details().startswith("experiment_id: 100000 characters exceed the limit")


# ---- the boundary itself, on a real server ----

def _raise_named(name: bytes) -> None:
    cls = getattr(errors, name.decode(), None)
    if cls is None:
        raise RuntimeError("x" * 5000)  # not of the tree: INTERNAL, with a short message
    if issubclass(cls, errors.InvalidArgument):
        raise cls("some.field", "is bad")
    raise cls("refused", field="some.field", reason="SOME_REASON", metadata={"k": "v"})


@pytest_asyncio.fixture(scope="module")
async def raiser() -> AsyncIterator[grpc.aio.Channel]:
    """A real server with the boundary whose handlers raise the error their request names."""

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        _raise_named(request)
        return b""

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        _raise_named(request)

    server = grpc.aio.server(interceptors=[status.ErrorBoundary()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Raiser", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })])
    port = rpc.bind(server, "127.0.0.1", 0)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


REQUEST_ERRORS = [
    errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition,
    errors.ResourceExhausted, errors.OutOfRange, errors.Unauthenticated, errors.PermissionDenied, errors.Unavailable,
]


@pytest.mark.parametrize("cls", REQUEST_ERRORS, ids=[c.__name__ for c in REQUEST_ERRORS])
@pytest.mark.parametrize("method", ["Unary", "Stream"])
async def test_every_request_error_crosses_the_boundary_and_back(raiser: grpc.aio.Channel, cls: type,
                                                                 method: str) -> None:
    assert set(REQUEST_ERRORS) == set(errors.RequestError.__subclasses__())
    call = raiser.unary_unary("/test.Raiser/Unary") if method == "Unary" else raiser.unary_stream("/test.Raiser/Stream")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await (call(cls.__name__.encode()) if method == "Unary" else _drain(call(cls.__name__.encode())))
    error = status.from_rpc_error(raised.value)
    assert type(error) is cls and raised.value.code() == errors.status_code_of(cls)
    assert (error.field, str(error)) == ("some.field", raised.value.details())
    if cls is not errors.InvalidArgument:
        assert (error.reason, error.metadata) == ("SOME_REASON", {"field": "some.field", "k": "v"})


async def test_an_unexpected_exception_is_internal_not_unknown(raiser: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raiser.unary_unary("/test.Raiser/Unary")(b"NoSuchError")
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "INTERNAL: Unary failed unexpectedly (RuntimeError); see the service log"
    assert isinstance(status.from_rpc_error(raised.value), errors.InternalError)


def test_only_the_boundary_module_ends_calls_with_a_status() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("codecbench", "orchestrator_svc", "worker_svc", "sandbox")
        for path in (REPO / package).rglob("*.py")
        if "context.abort" in path.read_text() and path != REPO / "codecbench" / "status.py"
    ]
    assert offenders == []


def test_tensor_format_errors_are_request_errors_naming_the_field() -> None:
    with pytest.raises(errors.InvalidArgument) as raised, status.in_field("image"):
        tensors.to_numpy(_image(b"\0", [3, 4, 4]))
    assert (raised.value.field, raised.value.reason) == ("image", errors.REASON_TENSOR_MALFORMED)


async def test_a_dataset_folder_of_gifs_is_refused_by_the_client_naming_the_files(tmp_path: Path) -> None:
    # Old: "chunk: no images uploaded" from the orchestrator, which saw an upload without images.
    from PIL import Image

    Image.new("P", (4, 4)).save(tmp_path / "a.gif")
    async with Client("127.0.0.1:1") as client:  # refused before any call: nothing listens on port 1
        with pytest.raises(errors.InvalidArgument) as raised:
            await client.upload_dataset("gifs", tmp_path)
    assert raised.value.field == "folder"
    assert "has no .png/.jpg/.jpeg files (it has a.gif)" in str(raised.value) and "PNG and JPEG" in str(raised.value)
