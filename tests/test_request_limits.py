"""Requests at and beyond the limits get INVALID_ARGUMENT naming the field (never UNKNOWN), and
errors of any size still reach the caller typed."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import pytest
from helpers import agent_bundle
from helpers.services import orchestrator
from helpers.worker import request
from PIL import Image

from codecbench import errors, tensors, validation, values
from codecbench.client import Client
from codecbench.status import to_status
from codecbench.v1 import errors_pb2, orchestrator_pb2, types_pb2

pytestmark = pytest.mark.timeout(120)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": _nested(validation.MAX_VALUE_DEPTH + 1)}, "points[0].params['q']"),
        ({"q": "x" * (validation.MAX_POINT_BYTES + 1)}, "points[0]"),
    ],
)
async def test_oversized_or_deeply_nested_parameters_are_refused(tmp_path: Path, params: dict, field: str) -> None:
    async with orchestrator(tmp_path) as orch, Client(orch.address) as client:
        with pytest.raises(errors.InvalidArgument) as info:
            await client.submit(agent_bundle("jpeg"), points=[params])
        assert info.value.field == field and str(info.value).startswith(field), info.value
        assert await client.submit(agent_bundle("jpeg"), points=[{"q": _nested(validation.MAX_VALUE_DEPTH)}])


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (orchestrator_pb2.ListExperimentsRequest(page_token="OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"), "page_token"),
        (orchestrator_pb2.ListExperimentsRequest(created_after={"seconds": 2**62}), "created_after"),
    ],
)
async def test_list_refuses_tokens_and_times_out_of_range(tmp_path: Path, request_, field: str) -> None:  # noqa: ANN001
    async with orchestrator(tmp_path) as orch, Client(orch.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.ListExperiments(request_)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith(field)


async def test_bundle_file_without_content_needs_a_hex_digest(tmp_path: Path) -> None:
    async with orchestrator(tmp_path) as orch, Client(orch.address) as client:
        bundle = agent_bundle("jpeg")
        bundle.files.add(name="weights.bin", sha256="Z" * 64, size_bytes=10)
        with pytest.raises(errors.InvalidArgument) as info:
            await client.submit(bundle)
        assert info.value.field == "agent.files[1].sha256"


def _bomb_png() -> bytes:
    """A 1-bit 30000x30000 PNG: a few KB on disk, 900 M pixels decoded."""
    out = io.BytesIO()
    Image.new("1", (30000, 30000)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("image", "field"),
    [
        (types_pb2.BlobRef(name="x.png", sha256="not-a-digest"), "dataset.images[0].sha256"),
        (types_pb2.BlobRef(name="bomb.png", content=_bomb_png()), "dataset.images"),
    ],
)
async def test_worker_refuses_bad_image_references_and_decompression_bombs(worker_stub, image, field: str) -> None:  # noqa: ANN001
    req = request("jpeg", dataset=types_pb2.DatasetRef(name="bad", images=[image]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in worker_stub.RunExperiment(req):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field), info.value.details()


def test_tensor_with_too_many_dimensions_or_an_unknown_dtype_is_a_format_error() -> None:
    with pytest.raises(tensors.TensorFormatError, match="dimensions exceed"):
        tensors.to_numpy(types_pb2.Tensor(dtype=types_pb2.D_TYPE_UINT8, shape=[1] * 70, data=b"\0"))
    with pytest.raises(tensors.TensorFormatError, match="dtype 77"):
        tensors.to_numpy(types_pb2.Tensor(dtype=77, shape=[1], data=b"\0"))


def test_status_of_a_huge_error_stays_within_grpc_metadata_limits_and_typed() -> None:
    error = errors.AgentException("boom " * 20000, phase=types_pb2.PHASE_ENCODE).to_proto()
    error.frames.extend(errors_pb2.Frame(file="codec.py", line=i, function="f", code="x" * 200) for i in range(500))
    status = to_status(errors.from_proto(error))
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) < 8 * 1024
    assert len(status.details) <= 1100 and status.details.startswith("AGENT_EXCEPTION: boom")


def test_parameter_values_of_every_supported_type_pass_validation() -> None:
    point = values.params_from_python({"q": 1, "f": 0.5, "s": "a", "b": b"x", "l": [1, [2]], "d": {"k": None}})
    validation.check_points([point])  # raises InvalidArgument when a value is refused


def _bundle_with(**file: object) -> types_pb2.AgentBundle:
    bundle = agent_bundle("jpeg")
    bundle.files.add(**file)  # type: ignore[arg-type]
    return bundle


_HUGE = "x" * 100_000


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        # 1000 label filters once reached SQLite and came back UNKNOWN with 170 KB of SQL text.
        ("ListExperiments", orchestrator_pb2.ListExperimentsRequest(labels={f"k{i}": "v" for i in range(1000)}),
         "labels"),
        ("ListExperiments", orchestrator_pb2.ListExperimentsRequest(states=[1] * 1000), "states"),
        ("GetExperiment", orchestrator_pb2.GetExperimentRequest(experiment_id=_HUGE), "experiment_id"),
        ("CancelExperiment", orchestrator_pb2.CancelExperimentRequest(experiment_id=_HUGE), "experiment_id"),
        ("ShareDataset", orchestrator_pb2.ShareDatasetRequest(name=_HUGE), "name"),
        ("DrainWorker", orchestrator_pb2.DrainWorkerRequest(worker_id=_HUGE), "worker_id"),
        # A negative declared size once slipped past the bundle limit (a 40 MiB bundle ran).
        ("CreateExperiment", orchestrator_pb2.CreateExperimentRequest(
            agent=_bundle_with(name="w.bin", sha256="a" * 64, size_bytes=-(40 << 20)), dataset="photos"),
         "agent.files[1].size_bytes"),
        ("CreateExperiment", orchestrator_pb2.CreateExperimentRequest(
            agent=_bundle_with(name=_HUGE, content=b"x"), dataset="photos"), "agent.files[1].name"),
        ("CreateExperiment", orchestrator_pb2.CreateExperimentRequest(agent=agent_bundle("jpeg"), dataset=_HUGE),
         "dataset"),
        ("CreateExperiment", orchestrator_pb2.CreateExperimentRequest(
            agent=agent_bundle("jpeg"), dataset="photos", request_id=_HUGE), "request_id"),
    ],
)
async def test_every_repeated_or_sized_field_has_a_limit(tmp_path: Path, method: str, request_, field: str) -> None:  # noqa: ANN001
    async with orchestrator(tmp_path) as orch, Client(orch.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(client.stub, method)(request_, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert info.value.details().startswith(field), info.value.details()
        assert any(c.isdigit() for c in info.value.details()) or "missing" in info.value.details()
        assert len(info.value.details()) < 2000

