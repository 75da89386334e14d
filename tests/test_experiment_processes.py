"""One encoder process, then one decoder process, per experiment (issue 15), on a real worker.

- Every point of an experiment is served by the same encoder process and then by the same
  decoder process, each with a fresh ``Codec`` per point; the two never run at once (the
  encoder's last line comes before the decoder's first, and every ENCODE event before the first
  DECODE event).
- The terminal event of a success does not wait for the decoder's teardown: with the decoder's
  end held back, the result arrives, the slot is free, and the teardown finishes afterwards.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers import TEST_ADMIN_TOKEN, eventually, worker_channel
from helpers.worker import alive, request, run

from codecbench import errors
from codecbench.v1 import experiment_pb2, sandbox_pb2, types_pb2, worker_pb2_grpc
from sandbox.launchers import Launched
from worker_svc.sandboxed_agent import SandboxSettings
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

pytestmark = pytest.mark.timeout(180)
QUALITIES = (3, 7, 11)
LINE = re.compile(r"codec process=(\w+) codec=(\d+) quality=(\d+)")


async def test_one_encoder_then_one_decoder_serve_every_point_with_a_fresh_codec_each(worker_stub) -> None:
    events, terminal = await run(worker_stub, request("point_echo", points=[{"quality": q} for q in QUALITIES]))
    assert terminal.HasField("result"), errors.describe(terminal.error)
    lines = [(e.log.phase, LINE.fullmatch(e.log.text)) for e in events
             if e.HasField("log") and e.log.stream == experiment_pb2.LOG_STREAM_STDOUT]
    built = [(phase, m.group(1), int(m.group(2)), int(m.group(3))) for phase, m in lines if m]
    processes = list(dict.fromkeys(token for _, token, _, _ in built))
    assert len(processes) == 2, built  # one encoder, one decoder
    encoder = [(n, q) for _, token, n, q in built if token == processes[0]]
    decoder = [(n, q) for _, token, n, q in built if token == processes[1]]
    # The encoder binds every point before the first image (the first point last, ready for it),
    # then builds a fresh Codec for each later point; the decoder one per point, in order.
    assert [q for _, q in encoder] == [*QUALITIES[1:], QUALITIES[0], *QUALITIES[1:]]
    assert [n for n, _ in encoder] == list(range(1, len(encoder) + 1))
    assert decoder == [(i + 1, q) for i, q in enumerate(QUALITIES)]
    # The decoder's first line only after the encoder's last: the two never overlap.
    assert [token for _, token, _, _ in built] == [processes[0]] * len(encoder) + [processes[1]] * len(decoder)
    phases = [e.progress.phase for e in events if e.HasField("progress")]
    first_decode = phases.index(types_pb2.PHASE_DECODE)
    assert types_pb2.PHASE_ENCODE not in phases[first_decode:]
    # Each point decoded by its own Codec: the flat image of that point's quality (a reused Codec raises).
    for point, quality in zip(terminal.result.points, QUALITIES, strict=True):
        assert point.params == request("point_echo", points=[{"quality": quality}]).points[0]
        assert [image.metrics.bytes for image in point.images] == [12, 12]


class _HeldDecoderEnd:
    """The worker's real launcher, with the end of each run's second process (its decoder) held
    back until :attr:`release` is set: its teardown cannot finish before the test allows it."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.launches = 0
        self.decoder_pids: list[int] = []

    async def launch(self, limits: sandbox_pb2.SandboxRlimits, startup_s: float, uid: int) -> Launched:
        launched = await self.inner.launch(limits, startup_s, uid)  # type: ignore[attr-defined]
        self.launches += 1
        if self.launches % 2 == 0:
            self.decoder_pids.append(launched.pid)
            real_wait = launched.wait

            async def held_wait():  # noqa: ANN202
                await self.release.wait()
                return await real_wait()

            launched.wait = held_wait
        return launched

    async def close(self) -> None:
        await self.inner.close()  # type: ignore[attr-defined]


@pytest_asyncio.fixture
async def held_worker(tmp_path: Path) -> AsyncIterator[tuple[WorkerHandle, _HeldDecoderEnd]]:
    handle = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=tmp_path / "worker", slots=1))
    held = _HeldDecoderEnd(handle.servicer.settings.launcher)
    handle.servicer.settings = SandboxSettings(launcher=held, limits=handle.servicer.settings.limits)  # type: ignore[arg-type]
    try:
        yield handle, held
    finally:
        held.release.set()
        await handle.stop(0)


async def test_the_result_is_sent_before_the_decoder_is_torn_down(held_worker) -> None:
    handle, held = held_worker
    channel = worker_channel(handle.address)
    try:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        _, terminal = await run(stub, request("point_echo", points=[{"quality": 5}]))
        assert terminal.HasField("result"), errors.describe(terminal.error)
        # The stream has ended with the result while the decoder's end is still held back.
        assert handle.servicer.teardowns.pending == 1
        assert held.decoder_pids and not held.release.is_set()
        await eventually(lambda: handle.servicer.slots_in_use == 0, timeout_s=10, what="the slot to be free")
        held.release.set()
        await asyncio.wait_for(handle.servicer.teardowns.drain(), timeout=30)
        assert handle.servicer.teardowns.pending == 0
        await eventually(lambda: not alive(held.decoder_pids[0]), timeout_s=10, what="the decoder process to end")
    finally:
        await channel.close()
