"""Runs one experiment: every parameter point over every image, as a stream of events.

The stream ends with exactly one terminal event: an ``ExperimentResult`` whose every image has
metrics, or an ``Error`` of one kind. There is no third outcome, and never a success with
missing metrics. Agent processes are killed when the run ends, fails or is cancelled.

One encoder process serves every point of the run, then ends; only then one decoder process
(another uid, :mod:`sandbox.identity`) serves every point: the two sides of a run are never
alive at the same time, so no host-wide state can carry an image between them, and the decoder
never receives an original. Each point gets a fresh ``Codec(...)`` on each side
(``set_params``). The bitstreams wait in the worker between the two phases (they are small).
Each image still has its own ENCODE and DECODE progress events and its own result, in order;
all the ENCODE events of a run come before its first DECODE event.

Each side first makes one untimed warm-up call on each point's first image (the encoder encodes
it, the decoder decodes its bitstream), whose output is dropped, then the timed call: one-off
set-up that agents do lazily on their first call (allocating buffers, building tables, CUDA
kernels) would otherwise be timed as part of the first image and inflate the point's mean. The
warm-up runs under the first image's progress event and limits, and a failure in it is that
image's.

Before the first image, the encoder binds every point (``Codec(...)`` runs once more per point),
and checks that the decoder's side binds to it too (:meth:`sandbox.child.AgentRuntime.set_params`):
a point whose parameters the agent's signature refuses fails the run at load, naming the point,
instead of after every image of the points before it.

The trusted metrics of image i run in a worker thread while the decoder decodes image i+1: a
pipeline one image deep, so the worker holds at most two reconstructions at a time whatever the
dataset's size (:class:`_MetricsPipeline`).

The terminal event of a success is sent as soon as the result is final: killing the decoder,
draining its output and removing its cgroup happen after (:class:`Teardowns`), and any agent
output that arrives after the terminal event is dropped (nothing may follow it). A failed or
cancelled run still ends its processes before its terminal event, so the failing agent's last
words are in the log.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from google.protobuf import timestamp_pb2

from codecbench import errors, logs, rpc
from codecbench.datasets import DatasetImage
from codecbench.timeouts import resolve as resolve_timeouts
from codecbench.v1 import errors_pb2, experiment_pb2, sandbox_pb2, types_pb2, worker_pb2
from sandbox.process import OutputBudget
from worker_svc import metrics
from worker_svc.sandboxed_agent import SandboxedAgent, SandboxSettings, payload_bytes

Emit = Callable[..., None]
# The largest kept reconstruction (PNG) sent beside its event: half the message limit, leaving room
# for the event; a photo's PNG is a few MB.
MAX_RECONSTRUCTION_PNG_BYTES = rpc.MAX_MESSAGE_BYTES // 2


class _Position:
    """Where the run is, so an error can say which phase, point and image it belongs to."""

    def __init__(self) -> None:
        self.phase: types_pb2.Phase.ValueType = types_pb2.PHASE_SETUP
        self.point: int | None = None
        self.image: int | None = None
        self.image_name = ""
        # Serialized bytes of the results so far (see _count_result): kept with the position because
        # every image result passes through here, and _MetricsPipeline is where they are made.
        self.result_bytes = 0

    def progress(self, phase: types_pb2.Phase.ValueType, emit: Emit, point_count: int, image_count: int) -> None:
        """Moves the run to ``phase`` and tells the watchers: at which point and image, of how many."""
        self.phase = phase
        emit(progress=experiment_pb2.Progress(
            phase=phase, point_index=self.point or 0, point_count=point_count,
            image_index=self.image or 0, image_count=image_count, image_name=self.image_name,
        ))

    def stamp(self, error: errors_pb2.Error) -> errors_pb2.Error:
        if not error.phase:
            error.phase = self.phase
        if self.point is not None and not error.HasField("point_index"):
            error.point_index = self.point
        if self.image is not None and not error.HasField("image_index"):
            error.image_index = self.image
            error.image_name = self.image_name
        return error


class Teardowns:
    """Agent processes being ended after their run's terminal event was sent, off its path.

    The worker keeps one and drains it (:meth:`drain`) when it stops; a teardown's failure is logged
    (``experiment.teardown_failed``), never raised into a run that has already ended.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = logs.get_logger("worker.teardown")

    def start(self, close: Awaitable[None], experiment_id: str) -> None:
        """Runs ``close`` in the background, keeping a reference until it ends."""
        async def run() -> None:
            try:
                await close
            except Exception as exc:  # noqa: BLE001 - logged: the run's result is already sent
                self._log.warning("experiment.teardown_failed", experiment_id=experiment_id,
                                  error=f"{type(exc).__name__}: {exc}")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Teardowns not finished yet."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Waits until every teardown started so far has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def run_experiment(
    request: worker_pb2.RunExperimentRequest,
    images: Sequence[DatasetImage],
    settings: SandboxSettings,
    default_timeouts: types_pb2.Timeouts,
    worker_id: str,
    blob: Callable[[str], bytes] | None = None,
    teardowns: Teardowns | None = None,
) -> AsyncIterator[worker_pb2.RunExperimentResponse]:
    """Runs the experiment and yields its events, the terminal one last, each with the decoded
    image as PNG where the request keeps it (``keep_reconstructions``).

    Closing the iterator early (the client cancelled) kills the agent processes before it returns.

    Args:
        request: the experiment: agent, points, device, timeouts.
        images: the dataset's decoded images.
        settings: how agent processes are started and limited.
        default_timeouts: the worker's limits for those the request leaves unset.
        worker_id: named in the result.
        blob: returns a cached blob by sha256, for bundle files sent without content.
        teardowns: where a successful run's decoder process is ended after the terminal event;
            None ends it before the iterator finishes (still after the terminal event is yielded).
    """
    queue: asyncio.Queue[worker_pb2.RunExperimentResponse | None] = asyncio.Queue()
    sequence = itertools.count(1)
    ended = False  # the terminal event is queued: nothing may follow it

    def emit(reconstruction_png: bytes = b"", **event: Any) -> None:
        nonlocal ended
        if ended:
            return
        ended = "result" in event or "error" in event
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        queue.put_nowait(worker_pb2.RunExperimentResponse(
            event=experiment_pb2.ExperimentEvent(
                experiment_id=request.experiment_id, sequence=next(sequence), time=stamp,
                attempt=request.attempt, **event,
            ),
            reconstruction_png=reconstruction_png,
        ))
        if ended:
            queue.put_nowait(None)

    async def body() -> None:
        try:
            limits = resolve_timeouts(request.timeouts, default_timeouts)
            await _run(request, images, settings, limits, worker_id, blob, emit, teardowns)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(body())
    try:
        while (event := await queue.get()) is not None:
            yield event
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _run(
    request: worker_pb2.RunExperimentRequest,
    images: Sequence[DatasetImage],
    settings: SandboxSettings,
    timeouts: types_pb2.Timeouts,
    worker_id: str,
    blob: Callable[[str], bytes] | None,
    emit: Emit,
    teardowns: Teardowns | None,
) -> None:
    started = time.perf_counter()
    position = _Position()
    sides: list[SandboxedAgent] = []
    budget = OutputBudget(
        settings.limits.output_bytes,
        lambda stream, text, truncated: emit(
            log=experiment_pb2.LogLine(stream=stream, text=text, phase=position.phase, truncated=truncated)
        ),
    )
    points = list(request.points) or [types_pb2.ParameterPoint()]
    run = _Run(request, images, settings, timeouts, blob, emit, position, budget, sides, points)
    terminal: dict[str, Any] = {}  # the keyword argument of the last event: result or error
    try:
        async with asyncio.timeout(timeouts.experiment_s):
            position.progress(types_pb2.PHASE_LOAD, emit, len(points), len(images))
            encoded = await run.encode_all()
            results = await run.decode_all(encoded)
        wall_ms = (time.perf_counter() - started) * 1000.0
        terminal = {"result": experiment_pb2.ExperimentResult(points=results, wall_ms=wall_ms, worker_id=worker_id)}
    except TimeoutError:
        elapsed = time.perf_counter() - started
        error: errors.CodecbenchError = errors.Timeout(
            f"experiment did not finish within {timeouts.experiment_s:g} s (stopped after {elapsed:.2f} s)",
            phase=position.phase, limit_s=timeouts.experiment_s, elapsed_s=elapsed,
        )
        terminal = {"error": position.stamp(error.to_proto())}
    except errors.CodecbenchError as exc:
        terminal = {"error": position.stamp(exc.to_proto())}
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug of ours still ends the stream with a typed error
        error = errors.InternalError(f"worker error: {type(exc).__name__}: {exc}", exception_type=type(exc).__name__)
        terminal = {"error": position.stamp(error.to_proto())}
    finally:
        if "result" not in terminal:  # failed or cancelled
            for side in sides:  # synchronously, so even a cancelled run leaves no process behind
                side.process.kill()
            await asyncio.shield(asyncio.gather(*(side.close() for side in sides), return_exceptions=True))
    if "error" in terminal:
        # Only now that the agent processes are gone and their output is drained: the failing
        # agent's last words come before the terminal event.
        emit(**terminal)
        return
    # A success is final: send it now, end the decoder afterwards (module docstring).
    for side in sides:
        side.process.kill()
    emit(**terminal)
    close = _close_all(sides)
    if teardowns is not None:
        teardowns.start(close, request.experiment_id)
    else:
        await asyncio.shield(close)  # a consumer that stops reading now must not leave a cgroup behind


async def _close_all(sides: Sequence[SandboxedAgent]) -> None:
    """Ends every side's process; the first failure is raised after all have been tried."""
    outcomes = await asyncio.gather(*(side.close() for side in sides), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


ENCODER = sandbox_pb2.SANDBOX_ROLE_ENCODER
DECODER = sandbox_pb2.SANDBOX_ROLE_DECODER
Encoded = tuple[sandbox_pb2.SandboxEncoded, float]  # what the encoder made of an input, and its wall time in ms


class _Run:
    """The two phases of one run: the encoder's, then the decoder's (module docstring)."""

    def __init__(
        self,
        request: worker_pb2.RunExperimentRequest,
        images: Sequence[DatasetImage],
        settings: SandboxSettings,
        timeouts: types_pb2.Timeouts,
        blob: Callable[[str], bytes] | None,
        emit: Emit,
        position: _Position,
        budget: OutputBudget,
        sides: list[SandboxedAgent],
        points: Sequence[types_pb2.ParameterPoint],
    ) -> None:
        self.request, self.images, self.settings, self.timeouts = request, images, settings, timeouts
        self.blob, self.emit, self.position, self.budget, self.sides = blob, emit, position, budget, sides
        self.points = points
        self.takes_image = True

    def _progress(self, phase: types_pb2.Phase.ValueType) -> None:
        self.position.progress(phase, self.emit, len(self.points), len(self.images) if self.takes_image else 0)

    def _at(self, point: int | None, image: int | None, phase: types_pb2.Phase.ValueType) -> None:
        position = self.position
        position.point, position.image, position.phase = point, image, phase
        position.image_name = self.images[image].name if image is not None else ""

    async def _open(self, role: sandbox_pb2.SandboxRole.ValueType) -> SandboxedAgent:
        """Starts one side's process (added to ``sides``, which the run closes whatever happens, the
        ended encoder's included)."""
        self._at(None, None, types_pb2.PHASE_LOAD)
        side = await SandboxedAgent.open(self.settings, self.request.agent, role, self.request.device, self.budget,
                                         self.timeouts.load_s, self.blob)
        self.sides.append(side)
        return side

    async def _bind(self, side: SandboxedAgent, point: int) -> None:
        """A fresh ``Codec(...)`` (or binding) for ``point`` in ``side``'s process."""
        self._at(point, None, types_pb2.PHASE_LOAD)
        await side.set_params(self.points[point], self.timeouts.load_s)

    async def _end(self, side: SandboxedAgent) -> None:
        """Kills a side's process and waits until it and everything it started are gone; the rest of
        its teardown (exit report, output, cgroup) is left to the run's end with the other side's."""
        await side.process.end()

    async def encode_all(self) -> list[list[Encoded]]:
        """Every point's bitstreams, from one encoder process that has ended when this returns.

        Every point is bound before the first image (module docstring); the first point is bound
        last, so the encoder is ready for it.
        """
        encoder = await self._open(ENCODER)
        self.takes_image = encoder.takes_image
        for index in [*range(1, len(self.points)), 0]:
            await self._bind(encoder, index)
        encoded: list[list[Encoded]] = []
        for p_index in range(len(self.points)):
            if p_index:
                await self._bind(encoder, p_index)
            if not self.takes_image:  # the old runner's own shape: once per point, no image
                self._at(p_index, None, types_pb2.PHASE_ENCODE)
                self._progress(types_pb2.PHASE_ENCODE)
                encoded.append([await encoder.encode(None, self.timeouts.encode_s)])
                continue
            sent = []
            for i, image in enumerate(self.images):
                self._at(p_index, i, types_pb2.PHASE_ENCODE)
                self._progress(types_pb2.PHASE_ENCODE)
                if i == 0:  # the untimed warm-up call (module docstring)
                    await encoder.encode(image.pixels, self.timeouts.encode_s)
                sent.append(await encoder.encode(image.pixels, self.timeouts.encode_s))
            encoded.append(sent)
        # Every process of the encoder has been reaped before the decoder starts.
        await self._end(encoder)
        return encoded

    async def decode_all(self, encoded: Sequence[Sequence[Encoded]]) -> list[experiment_pb2.PointResult]:
        """Every point's result, from one decoder process (left running for the caller to end)."""
        decoder = await self._open(DECODER)
        pipeline = _MetricsPipeline(self)
        try:
            return await self._decode_points(decoder, pipeline, encoded)
        finally:
            pipeline.abandon()

    async def _decode_points(self, decoder: SandboxedAgent, pipeline: _MetricsPipeline,
                             encoded: Sequence[Sequence[Encoded]]) -> list[experiment_pb2.PointResult]:
        results: list[experiment_pb2.PointResult] = []
        per_point: list[list[experiment_pb2.ImageResult]] = []
        for p_index, sent in enumerate(encoded):
            await self._bind(decoder, p_index)
            if not self.takes_image:
                results.append(await self._reported_point(decoder, p_index, sent[0]))
                continue
            image_results: list[experiment_pb2.ImageResult] = []
            per_point.append(image_results)
            for i, image in enumerate(self.images):
                self._at(p_index, i, types_pb2.PHASE_DECODE)
                self._progress(types_pb2.PHASE_DECODE)
                payload, encode_ms = sent[i]
                if i == 0:  # the untimed warm-up call (module docstring)
                    await decoder.decode(payload, self.timeouts.decode_s)
                decoded, decode_ms = await decoder.decode(payload, self.timeouts.decode_s)
                recon = metrics.reconstruction_to_uint8(decoded.reconstruction, image.height, image.width)
                report = None
                if decoded.HasField("decoding_data"):
                    # In a thread: even a bounded dict is agent-sized work, and heartbeats share this loop.
                    report = await asyncio.to_thread(agent_report, decoded.decoding_data)
                await pipeline.add(_Item(p_index, i, image, recon, payload_bytes(payload), encode_ms, decode_ms,
                                         decoded.clamped_values, report), image_results)
        await pipeline.flush()
        if self.takes_image:
            results = [metrics.point_result(p, self.points[p], items) for p, items in enumerate(per_point)]
        return results

    async def _reported_point(self, decoder: SandboxedAgent, p_index: int, sent: Encoded
                              ) -> experiment_pb2.PointResult:
        """One point of a seed agent that takes no image: one decode call, and the decoding
        dict's scalar entries as its :class:`AgentReport` (no trusted metric exists: no image
        was coded). The rate stated is the encoding dict's size as it crossed the process boundary."""
        encoded, encode_ms = sent
        self._at(p_index, None, types_pb2.PHASE_DECODE)
        self._progress(types_pb2.PHASE_DECODE)
        decoded, decode_ms = await decoder.decode(encoded, self.timeouts.decode_s)
        self.position.phase = types_pb2.PHASE_METRICS
        report = await asyncio.to_thread(agent_report, decoded.decoding_data)
        report.encoding_data_bytes = len(payload_bytes(encoded))
        result = experiment_pb2.PointResult(
            point_index=p_index, params=self.points[p_index], image_count=0, encode_ms=encode_ms,
            decode_ms=decode_ms, agent_report=report,
        )
        _count_result(self.position, result.ByteSize() + _POINT_OVERHEAD)
        return result


@dataclass(frozen=True)
class _Item:
    """One decoded image waiting for its trusted metrics (times in ms, as measured by the worker)."""

    point: int
    index: int
    image: DatasetImage
    recon: torch.Tensor  # uint8 [3, H, W], validated
    bitstream: bytes
    encode_ms: float
    decode_ms: float
    clamped_values: int
    report: experiment_pb2.AgentReport | None


class _MetricsPipeline:
    """The metrics of one image computed in a thread while the decoder works on the next one.

    One image deep: :meth:`add` first waits for the previous image's metrics, so at most one
    computation is in flight and two reconstructions are held, whatever the dataset's size.
    Results are emitted in order. A failure in an image's metrics is that image's (the run's
    position is moved back to it before the error propagates).
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._device = metrics.device_for(run.request.device)
        self._pending: tuple[_Item, asyncio.Future[tuple[experiment_pb2.ImageMetrics, bytes]],
                             list[experiment_pb2.ImageResult]] | None = None

    async def add(self, item: _Item, into: list[experiment_pb2.ImageResult]) -> None:
        """Starts ``item``'s metrics after the previous item's have finished and been emitted."""
        await self.flush()
        keep = item.index < self._run.request.keep_reconstructions
        future = asyncio.ensure_future(asyncio.to_thread(_measure, item, self._device, keep))
        self._pending = (item, future, into)

    def abandon(self) -> None:
        """Drops the metrics in flight of a run that failed (their thread finishes unobserved)."""
        if self._pending is not None:
            future = self._pending[1]
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            future.cancel()
            self._pending = None

    async def flush(self) -> None:
        """Waits for the metrics in flight, if any, and emits that image's result."""
        if self._pending is None:
            return
        item, future, into = self._pending
        self._pending = None
        run = self._run
        try:
            measured, png = await future
            measured.conversion = item.image.conversion
            measured.clamped_values = item.clamped_values
            if item.report is not None and (item.report.values or item.report.ignored_keys):
                measured.agent_report.CopyFrom(item.report)
            image_result = experiment_pb2.ImageResult(
                point_index=item.point, image_index=item.index, image_name=item.image.name, metrics=measured
            )
            if item.index == 0:  # the point's own part of the result: its parameters and aggregates
                _count_result(run.position, (run.points[item.point].ByteSize() if run.request.points else 0)
                              + _POINT_OVERHEAD)
            _count_result(run.position, image_result.ByteSize() + _IMAGE_RESULT_OVERHEAD)
        except BaseException:
            run._at(item.point, item.index, types_pb2.PHASE_METRICS)
            raise
        if len(png) > MAX_RECONSTRUCTION_PNG_BYTES:  # noise-like pixels of a huge image: said, not sent
            run.emit(log=experiment_pb2.LogLine(
                stream=experiment_pb2.LOG_STREAM_SYSTEM, phase=types_pb2.PHASE_METRICS,
                text=f"reconstruction of {item.image.name} not kept: its PNG has {len(png)} bytes, over the "
                     f"{MAX_RECONSTRUCTION_PNG_BYTES} bytes that one event may carry"))
            png = b""
        run.emit(image_result=image_result, reconstruction_png=png)
        into.append(image_result)


def _measure(item: _Item, device: str, keep: bool) -> tuple[experiment_pb2.ImageMetrics, bytes]:
    """The trusted metrics of ``item`` and, when ``keep``, its reconstruction as PNG (else b"").

    Runs in a thread: both take a while on a large image, and heartbeats share the event loop.
    """
    measured = metrics.image_metrics(item.image.pixels, item.recon, item.bitstream, item.encode_ms, item.decode_ms,
                                     device)
    return measured, metrics.png_bytes(item.recon) if keep else b""


# Agent-reported values (seed contract: the entries of run_decoding_agent's dict besides the
# reconstruction) are a few numbers about the agent itself, not a payload. Checked on the
# serialized dict before anything is converted: an agent once returned 1,200,000 entries (26 MB),
# and converting them on the event loop stopped the worker's heartbeats for minutes.
MAX_REPORTED_ENTRIES = 256
MAX_REPORTED_BYTES = 64 * 1024
# The terminal ExperimentResult travels as one gRPC message and is stored (and served by
# GetExperiment) inside the experiment's record next to its points: half the message limit.
MAX_RESULT_BYTES = rpc.MAX_MESSAGE_BYTES // 2
# Upper bounds on what the protobuf framing adds around an image result and a point result
# (tags, lengths, the point's aggregates), so the running total never underestimates.
_IMAGE_RESULT_OVERHEAD = 16
_POINT_OVERHEAD = 128


def _reported_entries(data: types_pb2.Value) -> Sequence[types_pb2.ValueMapEntry]:
    """The top-level entries of a seed agent's decoding dict (a map Value), within the limits.

    Raises:
        errors.InvalidOutput: more than :data:`MAX_REPORTED_ENTRIES` entries, or more than
            :data:`MAX_REPORTED_BYTES` serialized.
    """
    entries: Sequence[types_pb2.ValueMapEntry] = (
        data.map_value.entries if data.WhichOneof("kind") == "map_value" else ()
    )
    size = data.ByteSize() if len(entries) <= MAX_REPORTED_ENTRIES else 0  # too many: no need to measure
    if len(entries) > MAX_REPORTED_ENTRIES or size > MAX_REPORTED_BYTES:
        expected = f"at most {MAX_REPORTED_ENTRIES} entries and {MAX_REPORTED_BYTES} bytes besides the reconstruction"
        actual = f"{len(entries)} entries" + (f", {size} bytes" if size else "")
        raise errors.InvalidOutput(
            f"run_decoding_agent's dict has {actual}: the limit is {expected}",
            phase=types_pb2.PHASE_DECODE, expected=expected, actual=actual,
        )
    return entries


_SCALAR_KINDS = ("bool_value", "int_value", "float_value", "string_value")


def agent_report(data: types_pb2.Value) -> experiment_pb2.AgentReport:
    """A seed agent's decoding dict (besides the reconstruction) as typed agent-reported values:
    its bool, int, float and str entries as they came (a NaN or infinite float included: it is
    what the agent said); the names of the others, which are never converted.

    The one form of agent-reported figures: a point's of an agent that takes no image
    (``PointResult.agent_report``), an image's of one that does (``ImageMetrics.agent_report``).

    Raises:
        errors.InvalidOutput: the dict is over the limits (:func:`_reported_entries`).
    """
    report = experiment_pb2.AgentReport()
    for entry in _reported_entries(data):
        if entry.value.WhichOneof("kind") in _SCALAR_KINDS:
            report.values[entry.key].CopyFrom(entry.value)
        else:
            report.ignored_keys.append(entry.key)
    return report


def _count_result(position: _Position, size: int) -> None:
    """Adds ``size`` bytes to the run's result and refuses a result over :data:`MAX_RESULT_BYTES`.

    Raises:
        errors.InternalError: not retryable (the same experiment would overflow again); the
            experiment asks for more points times images than one result can carry.
    """
    position.result_bytes += size
    if position.result_bytes > MAX_RESULT_BYTES:
        error = errors.InternalError(
            f"the results so far exceed the limit of {MAX_RESULT_BYTES} bytes for one experiment; "
            "split the experiment into fewer points or images",
            phase=types_pb2.PHASE_METRICS,
        )
        error.error.retryable = False
        raise error
