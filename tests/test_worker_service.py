"""The worker service over gRPC on 127.0.0.1: identity, the reference agents on ``photos``, the
unary Encode/Decode calls, request validation, message limits, and the ``python -m worker_svc`` CLI."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import math
import os
import re
import shutil
import signal
import socket
import sys
import time
from types import ModuleType

import grpc
import numpy as np
import pytest
import torch
from helpers import REPO, agent_bundle, worker_channel
from helpers.services import admin_token_file
from helpers.worker import TINY_SIZES, request, result_of, run
from PIL import Image

from codecbench import build, datasets, rpc, tensors, values
from codecbench.local import worker_isolation_args
from codecbench.v1 import types_pb2, worker_pb2, worker_pb2_grpc

PHOTOS = types_pb2.DatasetRef(name="photos")
MiB = 1024 * 1024


# ---- identity ----

async def test_worker_info_identifies_the_process_and_its_build(worker, worker_stub) -> None:
    info = (await worker_stub.GetWorkerInfo(worker_pb2.GetWorkerInfoRequest())).worker
    assert re.fullmatch(r"w-[0-9a-f]{12}", info.worker_id)
    assert info.build_id == build.build_id() and len(info.build_id) == 16
    assert info.protocol_version == build.PROTOCOL_VERSION == "codecbench.v1"
    assert info.pid == os.getpid()  # the fixture's server runs in this process
    assert info.host == socket.gethostname()
    started = info.start_time.ToDatetime().timestamp()
    assert time.time() - 3600 < started <= time.time()
    assert [(d.kind, d.name) for d in info.devices] == [(types_pb2.DEVICE_CPU, "cpu")]
    assert info.devices[0].memory_bytes > 0
    assert info.slots == 2
    # bubblewrap is installed here (and on every worker host); without it the worker says so.
    expected = types_pb2.ISOLATION_BWRAP if shutil.which("bwrap") else types_pb2.ISOLATION_PROCESS
    assert info.isolation == expected
    assert info.address == worker.address == f"127.0.0.1:{worker.port}"


# ---- reference agents on the built-in photos ----

@pytest.mark.timeout(180)
async def test_jpeg_rate_and_quality_rise_with_the_quality_parameter(worker_stub) -> None:
    events, terminal = await run(worker_stub, request("jpeg", PHOTOS, points=[{"quality": q} for q in (10, 50, 90)]))
    result = result_of(terminal)
    photos = datasets.load_photos()
    assert [values.params_to_python(p.params) for p in result.points] == [{"quality": q} for q in (10, 50, 90)]
    assert sum(e.HasField("image_result") for e in events) == 3 * len(photos)
    for point in result.points:
        assert [item.image_name for item in point.images] == [img.name for img in photos]
        for item, img in zip(point.images, photos, strict=True):
            m = item.metrics
            assert (m.width, m.height) == (img.width, img.height)
            assert m.bpp == pytest.approx(8 * m.bytes / (m.width * m.height))
            assert 0.02 < m.bpp < 12 and 18 < m.psnr_db < 60 and not m.lossless
            assert m.psnr_db == pytest.approx(10 * math.log10(255**2 / m.mse))
            assert m.HasField("ms_ssim") and 0.5 < m.ms_ssim <= 1.0
            assert m.encode_ms > 0 and m.decode_ms > 0
            assert re.fullmatch(r"[0-9a-f]{64}", m.bitstream_sha256)
        assert point.total_bytes == sum(i.metrics.bytes for i in point.images)
        assert point.bpp == pytest.approx(np.mean([i.metrics.bpp for i in point.images]))
        assert point.psnr_db == pytest.approx(np.mean([i.metrics.psnr_db for i in point.images]))
    low, mid, high = result.points
    assert low.bpp < mid.bpp < high.bpp
    assert low.psnr_db < mid.psnr_db < high.psnr_db
    assert low.ms_ssim < mid.ms_ssim < high.ms_ssim
    for i in range(len(photos)):  # per image, too
        assert low.images[i].metrics.bytes < mid.images[i].metrics.bytes < high.images[i].metrics.bytes
        assert low.images[i].metrics.psnr_db < mid.images[i].metrics.psnr_db < high.images[i].metrics.psnr_db


@pytest.mark.timeout(180)
async def test_zlib_is_lossless_on_photos(worker_stub) -> None:
    _, terminal = await run(worker_stub, request("zlib_lossless", PHOTOS))
    point = result_of(terminal).points[0]
    assert point.lossless and math.isinf(point.psnr_db) and point.mse == 0
    assert len(point.images) == len(datasets.load_photos())
    for item in point.images:
        m = item.metrics
        assert m.lossless and math.isinf(m.psnr_db) and m.psnr_db > 0 and m.mse == 0
        assert m.ms_ssim == pytest.approx(1.0)
        assert 1 < m.bpp < 24  # zlib compresses photos, but not as well as a lossy codec


def _load_seed_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_example_under_test", REPO / "agents/seed_example/agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(180)
async def test_seed_agent_bytes_survive_the_trip_unchanged(worker_stub) -> None:
    _, terminal = await run(worker_stub, request("seed_example", PHOTOS))
    point = result_of(terminal).points[0]
    seed = _load_seed_agent()
    photos = datasets.load_photos()
    assert len(point.images) == len(photos)
    for item, img in zip(point.images, photos, strict=True):
        # The encoding dict, computed here by the agent's own function, serialized as the protocol does.
        encoding = seed.run_encoding_agent(device="cpu", image=img.pixels)
        wire = values.to_value(encoding, "encoding_data").SerializeToString(deterministic=True)
        m = item.metrics
        assert m.bitstream_sha256 == hashlib.sha256(wire).hexdigest()
        assert m.bytes == len(wire)
        assert m.lossless and math.isinf(m.psnr_db)
        # Numbers the agent reported about itself, kept apart from the measured ones.
        assert {k: values.from_value(v) for k, v in m.agent_report.values.items()} == {
            "bitstream_intact": 1.0, "channel_means_match": 1.0, "compressed_bytes": len(encoding["bitstream"])}


@pytest.mark.timeout(120)
async def test_a_bundle_cannot_replace_the_sandbox_runtime(worker_stub) -> None:
    """The agent's folder is the child's cwd; its ``sandbox/child.py`` must not run as the runtime."""
    _, terminal = await run(worker_stub, request("shadow_runtime"))
    point = result_of(terminal).points[0]
    assert point.lossless and len(point.images) == len(TINY_SIZES)


# ---- unary Encode and Decode ----

def _photo(name: str) -> datasets.DatasetImage:
    return next(img for img in datasets.load_photos() if img.name == name)


async def _encode_decode(
    stub, agent: str, params: dict, pixels: torch.Tensor
) -> tuple[worker_pb2.EncodeResponse, worker_pb2.DecodeResponse]:
    bundle, point = agent_bundle(agent), values.params_from_python(params)
    encoded = await stub.Encode(worker_pb2.EncodeRequest(
        agent=bundle, params=point, image=tensors.from_torch(pixels), device=types_pb2.DEVICE_CPU
    ))
    decoded = await stub.Decode(worker_pb2.DecodeRequest(
        agent=bundle, params=point, bitstream=encoded.bitstream, device=types_pb2.DEVICE_CPU
    ))
    return encoded, decoded


@pytest.mark.timeout(120)
async def test_encode_then_decode_jpeg_matches_pillow(worker_stub) -> None:
    img = _photo("chelsea.png")
    encoded, decoded = await _encode_decode(worker_stub, "jpeg", {"quality": 50}, img.pixels)
    assert encoded.bitstream_sha256 == hashlib.sha256(encoded.bitstream).hexdigest()
    assert encoded.encode_ms > 0 and decoded.decode_ms > 0
    # Pillow's own JPEG round trip of the same pixels at the same settings.
    own = io.BytesIO()
    pil = Image.fromarray(img.pixels.permute(1, 2, 0).numpy(), "RGB")
    pil.save(own, format="JPEG", quality=50, subsampling="4:2:0")
    assert encoded.bitstream == own.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(own.getvalue())).convert("RGB")).transpose(2, 0, 1)
    recon = tensors.to_numpy(decoded.reconstruction)
    assert recon.dtype == np.uint8 and recon.shape == (3, img.height, img.width)
    assert np.array_equal(recon, expected)
    assert not np.array_equal(recon, img.pixels.numpy())  # lossy after all


@pytest.mark.timeout(120)
async def test_encode_then_decode_zlib_is_lossless(worker_stub) -> None:
    img = _photo("coffee.png")
    encoded, decoded = await _encode_decode(worker_stub, "zlib_lossless", {"level": 9}, img.pixels)
    assert len(encoded.bitstream) < img.pixels.numel()
    assert np.array_equal(tensors.to_numpy(decoded.reconstruction), img.pixels.numpy())


@pytest.mark.timeout(120)
async def test_encode_then_decode_seed_agent(worker_stub) -> None:
    """A seed agent's Encode returns its encoding dict as a serialized Value; Decode takes it back.
    Bytes that are no Value are refused as INVALID_ARGUMENT naming the field, not an unknown error."""
    img = _photo("astronaut.png")
    bundle = agent_bundle("seed_example")
    encoded = await worker_stub.Encode(worker_pb2.EncodeRequest(
        agent=bundle, image=tensors.from_torch(img.pixels), device=types_pb2.DEVICE_CPU
    ))
    encoding = _load_seed_agent().run_encoding_agent(device="cpu", image=img.pixels)
    assert encoded.bitstream == values.to_value(encoding, "encoding_data").SerializeToString(deterministic=True)

    good = worker_stub.Decode(worker_pb2.DecodeRequest(agent=bundle, bitstream=encoded.bitstream))
    bad = worker_stub.Decode(worker_pb2.DecodeRequest(agent=bundle, bitstream=b"\xff\xff not a Value"))
    decoded, refused = await asyncio.gather(good, bad, return_exceptions=True)
    assert np.array_equal(tensors.to_numpy(decoded.reconstruction), img.pixels.numpy())
    assert isinstance(refused, grpc.aio.AioRpcError), refused
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("bitstream: "), refused.details()


# ---- request validation and limits ----

def _tiny_zlib_request(**changes: object) -> worker_pb2.RunExperimentRequest:
    req = request("zlib_lossless")
    for name, value in changes.items():
        if isinstance(value, types_pb2.Timeouts | types_pb2.AgentBundle | types_pb2.DatasetRef):
            getattr(req, name).CopyFrom(value)
        else:
            setattr(req, name, value)
    return req


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"agent": types_pb2.AgentBundle(name="empty", entry_module="codec")}, "agent.files"),
        ({"dataset": types_pb2.DatasetRef(name="no_such_dataset")}, "dataset.name"),
        ({"timeouts": types_pb2.Timeouts(encode_s=-1)}, "timeouts.encode_s"),
        ({"device": 99}, "device"),  # not a codecbench.v1.Device value
        ({"device": types_pb2.DEVICE_ANY}, "device"),  # only an experiment may ask for any device
    ],
    ids=["empty-bundle", "unknown-dataset", "negative-timeout", "unknown-device", "any-device"],
)
async def test_invalid_argument_names_the_field(worker, worker_stub, changes, field) -> None:
    call = worker_stub.RunExperiment(_tiny_zlib_request(**changes))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pytest.fail("no event may be sent for an invalid request")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}: "), info.value.details()
    assert worker.servicer.slots_in_use == 0


def _oversized_encode_request() -> worker_pb2.EncodeRequest:
    shape = [3, 5120, 4779]  # 70 MiB of uint8
    data = bytes(math.prod(shape))
    assert len(data) > 70 * MiB - MiB
    image = types_pb2.Tensor(dtype=types_pb2.D_TYPE_UINT8, shape=shape, data=data)
    return worker_pb2.EncodeRequest(agent=agent_bundle("zlib_lossless"), image=image)


@pytest.mark.timeout(60)
async def test_payload_over_the_limit_is_refused_with_the_limit_stated(worker) -> None:
    limit = str(rpc.MAX_MESSAGE_BYTES)
    assert 64 * MiB == rpc.MAX_MESSAGE_BYTES
    req = _oversized_encode_request()
    # A client without codecbench's limits sends it: the worker refuses it.
    async with grpc.aio.insecure_channel(worker.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await worker_pb2_grpc.WorkerServiceStub(channel).Encode(req)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limit in info.value.details(), info.value.details()
    # codecbench's own channel refuses it before sending, with the same limit named.
    async with rpc.insecure_channel(worker.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await worker_pb2_grpc.WorkerServiceStub(channel).Encode(req)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limit in info.value.details(), info.value.details()


# ---- the command line ----

@pytest.mark.timeout(120)
async def test_worker_cli_serves_and_stops_cleanly_on_sigterm(tmp_path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_svc", "--port", "0", "--data-dir", str(tmp_path / "data"),
        "--log-level", "warning", "--admin-token-file", str(admin_token_file(tmp_path)),
        *worker_isolation_args(), cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=90)).decode()
        match = re.search(r"listening on (127\.0\.0\.1:(\d+))\s*$", line)
        assert match, f"no address in {line!r}"
        address, port = match.group(1), int(match.group(2))
        assert port > 0
        async with worker_channel(address) as channel:
            info = (await worker_pb2_grpc.WorkerServiceStub(channel).GetWorkerInfo(
                worker_pb2.GetWorkerInfoRequest(), timeout=30
            )).worker
        assert info.pid == proc.pid and info.address == address and info.worker_id in line
        # Computed afresh: the subprocess hashed the files as they are now.
        assert info.build_id == build.build_id.__wrapped__()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

