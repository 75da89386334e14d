"""The hostile corpus (issue 5): agents that loop, fork, hoard memory, crash, reach for the
network, the worker's secrets and files, try to read the original image in the decoder, leave
processes behind, flood stdout or patch the scorer. Each must end in its expected outcome with
the worker healthy, and after the whole corpus the worker's processes and open file descriptors
are back where they started.

Simpler failures (syntax error, missing module, NaN, wrong shape, non-bytes bitstream, SystemExit,
KeyboardInterrupt, segfault, timeouts) are in test_error_kinds.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import torch
from helpers import TEST_ADMIN_TOKEN, agent_bundle, eventually, requires_bwrap, worker_channel
from helpers.services import orchestrator
from helpers.worker import agent_processes, assert_good_agent_runs, png_bytes, request, run, tiny_dataset

from codecbench import datasets, errors, tensors
from codecbench.v1 import errors_pb2, experiment_pb2, types_pb2, worker_pb2, worker_pb2_grpc
from sandbox.process import SandboxLimits
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

K = errors_pb2
SECRET = "CODECBENCH_TEST_SECRET"
LIMITS = SandboxLimits(memory_bytes=3 * 1024**3, max_processes=64, output_bytes=256 * 1024)
pytestmark = pytest.mark.timeout(300)


@dataclass
class Hostile:
    handle: WorkerHandle
    stub: worker_pb2_grpc.WorkerServiceStub
    orchestrator_port: int
    data_dir: Path


@pytest_asyncio.fixture(scope="module")
async def hostile(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hostile]:
    """A worker with tighter limits and a secret in its environment, next to an orchestrator."""
    os.environ[SECRET] = "hunter2"
    data_dir = tmp_path_factory.mktemp("hostile-worker")
    async with orchestrator(tmp_path_factory.mktemp("hostile-orch")) as orch:
        handle = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=data_dir, limits=LIMITS))
        channel = worker_channel(handle.address)
        try:
            yield Hostile(handle, worker_pb2_grpc.WorkerServiceStub(channel), orch.port, data_dir)
        finally:
            await channel.close()
            await handle.stop(0)
            del os.environ[SECRET]


@dataclass(frozen=True)
class Case:
    agent: str
    expect: int | None  # an error kind, or None for success
    params: Callable[[Hostile], dict] = lambda h: {}
    contains: str = ""
    check: Callable[[experiment_pb2.ExperimentEvent, list[experiment_pb2.ExperimentEvent]], None] | None = None
    timeouts: types_pb2.Timeouts = field(default_factory=lambda: types_pb2.Timeouts(encode_s=30, decode_s=30))


def _honest_metrics(terminal: experiment_pb2.ExperimentEvent, _: list) -> None:
    """hostile_monkeypatch sends image // 64 and decodes to coarse * 64 + 32: the worker's PSNR must
    be that of this reconstruction, whatever the agent patched in its own process."""
    for item, size in zip(terminal.result.points[0].images, tiny_dataset().images, strict=True):
        original = datasets.decode_image(size.name, size.content).pixels.to(torch.float64)
        recon = (original // 64) * 64 + 32
        mse = float(((original - recon) ** 2).mean())
        assert math.isclose(item.metrics.psnr_db, 10 * math.log10(255**2 / mse), rel_tol=1e-9)
        assert not item.metrics.lossless
        assert item.metrics.encode_ms > 0 and item.metrics.decode_ms > 0
        assert item.metrics.bytes == 8 + original.numel()


def _output_capped(terminal: experiment_pb2.ExperimentEvent, events: list) -> None:
    logs = [e.log for e in events if e.HasField("log")]
    kept = sum(len(line.text.encode()) for line in logs if line.stream == experiment_pb2.LOG_STREAM_STDOUT)
    assert 0 < kept <= LIMITS.output_bytes
    markers = [line for line in logs if line.truncated]
    assert len(markers) == 1 and str(LIMITS.output_bytes) in markers[0].text
    assert terminal.result.points[0].lossless  # 100 MB of prints do not break the codec's own work


def _originals() -> dict[str, torch.Tensor]:
    """Pixels of every image the cheating agent is run on, by name."""
    images = {img.name: datasets.decode_image(img.name, img.content).pixels for img in tiny_dataset().images}
    images.update({img.name: img.pixels for img in datasets.load_photos()})
    images["c.png"] = datasets.decode_image("c.png", png_bytes(180, 200, seed=7)).pixels
    return images


def _not_recovered(terminal: experiment_pb2.ExperimentEvent, _: list) -> None:
    originals = _originals()
    for item in terminal.result.points[0].images:
        assert not item.metrics.lossless, f"{item.image_name}: the decoder recovered the original"
        black_mse = float((originals[item.image_name].to(torch.float64) ** 2).mean())
        assert math.isclose(item.metrics.mse, black_mse, rel_tol=1e-12), item.image_name  # it fell back to black


CORPUS = [
    Case("hostile_fork_bomb", K.ERROR_KIND_AGENT_EXCEPTION, contains="BlockingIOError"),
    Case("hostile_memory_bomb", K.ERROR_KIND_MEMORY_LIMIT),
    Case("hostile_exit0", K.ERROR_KIND_SANDBOX_CRASH, contains="exited with code 0"),
    Case("hostile_recursion", K.ERROR_KIND_AGENT_EXCEPTION, contains="RecursionError"),
    Case("hostile_socket", K.ERROR_KIND_AGENT_EXCEPTION, contains="Network is unreachable",
         params=lambda h: {"ports": f"{h.handle.port},{h.orchestrator_port}"}),
    Case("hostile_big_bitstream", K.ERROR_KIND_INVALID_OUTPUT, contains=f"limit of {LIMITS.max_bitstream_bytes}"),
    Case("hostile_stdout_flood", None, check=_output_capped),
    Case("hostile_monkeypatch", None, check=_honest_metrics),
    Case("hostile_cheat_files", None, check=_not_recovered, params=lambda h: {"data_dir": str(h.data_dir)}),
    Case("hostile_background", None),
    # codecbench's own exception classes raised by an agent are still the agent's exception, never retried.
    Case("hostile_forge_error", K.ERROR_KIND_AGENT_EXCEPTION, contains="WorkerLost",
         check=lambda terminal, _: _not_retryable(terminal)),
    Case("hostile_meta_tensor", K.ERROR_KIND_INVALID_OUTPUT, contains="dense"),
    # The red-team's 1,200,000 reported numbers (a 26 MB frame): refused by count, never converted.
    # Building and framing that dict inside the agent took over 30 s at load 12: a decode limit of its own.
    Case("hostile_big_report", K.ERROR_KIND_INVALID_OUTPUT, contains="1200000 entries",
         timeouts=types_pb2.Timeouts(encode_s=30, decode_s=120)),
]


def _not_retryable(terminal: experiment_pb2.ExperimentEvent) -> None:
    assert not terminal.error.retryable and terminal.error.limit_s == 0


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@requires_bwrap
async def test_corpus_each_case_ends_as_expected_and_leaves_nothing_behind(hostile: Hostile) -> None:
    await assert_good_agent_runs(hostile.stub)  # warm up: the template, caches, channels
    # A success's decoder is torn down after its terminal event (issue 15): the baseline is taken
    # once the warm-up's teardown has finished, else its process and fds would count as "before".
    await hostile.handle.servicer.teardowns.drain()
    fds_before, agents_before = _open_fds(), agent_processes()
    for case in CORPUS:
        params = case.params(hostile)
        events, terminal = await run(
            hostile.stub, request(case.agent, points=[params] if params else None, timeouts=case.timeouts)
        )
        if case.expect is None:
            assert terminal.HasField("result"), f"{case.agent}: {errors.describe(terminal.error)}"
        else:
            assert terminal.HasField("error"), f"{case.agent}: expected {errors.kind_name(case.expect)}"
            assert terminal.error.kind == case.expect, f"{case.agent}: {errors.describe(terminal.error)}"
            assert case.contains in errors.describe(terminal.error), errors.describe(terminal.error)
        if case.check:
            case.check(terminal, events)
        await eventually(lambda: agent_processes() == agents_before, timeout_s=10, what=f"{case.agent}'s processes")
        await assert_good_agent_runs(hostile.stub)
    await eventually(lambda: _open_fds() == fds_before, timeout_s=10, what=f"fds back to {fds_before}")
    assert agent_processes() == agents_before


async def _encode(hostile: Hostile, agent: str, params: dict) -> bytes:
    from codecbench import values

    response = await hostile.stub.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle(agent), params=values.params_from_python(params), device=types_pb2.DEVICE_CPU,
        image=tensors.from_torch(torch.zeros(3, 8, 8, dtype=torch.uint8)),
    ))
    return response.bitstream


async def test_agent_sees_a_minimal_environment_without_the_workers_secrets(hostile: Hostile) -> None:
    assert os.environ[SECRET] == "hunter2"  # the worker process has it
    seen = dict(line.split("=", 1) for line in (await _encode(hostile, "hostile_env", {})).decode().splitlines())
    assert SECRET not in seen and "hunter2" not in seen.values()
    assert set(seen) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH"
    }


@requires_bwrap
async def test_agent_cannot_write_outside_its_private_tmp(hostile: Hostile, tmp_path: Path) -> None:
    targets = [hostile.data_dir, tmp_path, Path(__file__).parent, Path("/tmp")]
    report = (await _encode(hostile, "hostile_write_outside", {"targets": ",".join(map(str, targets))})).decode()
    assert report == "wrote:/tmp/codecbench-hostile-was-here"  # its own tmpfs only
    for target in targets:
        assert not (target / "codecbench-hostile-was-here").exists(), target


@requires_bwrap
async def test_decoder_cannot_recover_the_original_from_the_dataset_cache_or_builtin_files(hostile: Hostile) -> None:
    """The images come from the worker's blob cache (by digest) and from the built-in photos (the
    package folders): both are hidden from agents."""
    data = png_bytes(180, 200, seed=7)
    digest = hostile.handle.servicer.blobs.put(data)
    assert hashlib.sha256(data).hexdigest() == digest
    cached = types_pb2.DatasetRef(name="cached", images=[types_pb2.BlobRef(name="c.png", sha256=digest)])
    photos = types_pb2.DatasetRef(name=datasets.PHOTOS)
    for dataset in (cached, photos):
        _, terminal = await run(hostile.stub, request(
            "hostile_cheat_files", dataset=dataset, points=[{"data_dir": str(hostile.data_dir)}],
        ))
        assert terminal.HasField("result"), errors.describe(terminal.error)
        _not_recovered(terminal, [])


async def test_a_huge_agent_report_fails_without_stalling_the_workers_event_loop(hostile: Hostile) -> None:
    """Red-team H1: 1,200,000 reported numbers once kept the worker's event loop busy for minutes,
    so its heartbeats stopped and the orchestrator retried the agent's own fault as WORKER_LOST.
    The worker runs in this test's event loop: a ticker measures how long the loop is held."""
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        _, terminal = await run(hostile.stub, request("hostile_big_report", dataset=_one_image()))
    finally:
        ticker.cancel()
    assert terminal.HasField("error") and terminal.error.kind == K.ERROR_KIND_INVALID_OUTPUT, terminal
    assert not terminal.error.retryable and "at most 256 entries" in terminal.error.message
    assert gaps and max(gaps) < 1.0, f"the event loop was held for {max(gaps):.2f} s"


def _one_image() -> types_pb2.DatasetRef:
    return types_pb2.DatasetRef(name="one", images=[types_pb2.BlobRef(name="a.png", content=png_bytes(16, 16, seed=3))])
