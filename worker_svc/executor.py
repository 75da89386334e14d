"""Runs one experiment: every parameter point over every image, as a stream of events.

The stream ends with exactly one terminal event: an ``ExperimentResult`` whose every image has
metrics, or an ``Error`` of one kind. There is no third outcome, and never a success with
missing metrics. Agent processes are killed when the run ends, fails or is cancelled.

Per parameter point, an encoder process encodes every image and ends, and only then a decoder
process (another uid, :mod:`sandbox.identity`) decodes them: the two sides of a run are never
alive at the same time, so no host-wide state can carry an image between them. Each image still
has its own ENCODE and DECODE progress events and its own result, in order.

Each side first makes one untimed warm-up call on the point's first image (the encoder encodes
it, the decoder decodes its bitstream), whose output is dropped, then the timed call: one-off
set-up that agents do lazily on their first call (allocating buffers, building tables, CUDA
kernels) would otherwise be timed as part of the first image and inflate the point's mean. The
warm-up runs under the first image's progress event and limits, and a failure in it is that
image's.

Before the first image, every point's parameters are bound on both sides (:func:`_bind_every_point`):
a point whose parameters the agent's signature refuses fails the run at load, naming the point,
instead of after every image of the points before it. The sandbox has no check-only request, so
this binds for real (``Codec(...)`` runs once more per point and side); a separate message was
rejected to keep one binding path, the one the run then uses.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from google.protobuf import timestamp_pb2

from codecbench import devices, errors, rpc
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
        # every image result passes through here, and _decode_image is where they are made.
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


async def run_experiment(
    request: worker_pb2.RunExperimentRequest,
    images: Sequence[DatasetImage],
    settings: SandboxSettings,
    default_timeouts: types_pb2.Timeouts,
    worker_id: str,
    blob: Callable[[str], bytes] | None = None,
) -> AsyncIterator[worker_pb2.RunExperimentResponse]:
    """Runs the experiment and yields its events, the terminal one last, each with the decoded
    image as PNG where the request keeps it (``keep_reconstructions``).

    Closing the iterator early (the client cancelled) kills the agent processes before it returns.
    """
    queue: asyncio.Queue[worker_pb2.RunExperimentResponse | None] = asyncio.Queue()
    sequence = itertools.count(1)

    def emit(reconstruction_png: bytes = b"", **event: Any) -> None:
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        queue.put_nowait(worker_pb2.RunExperimentResponse(
            event=experiment_pb2.ExperimentEvent(
                experiment_id=request.experiment_id, sequence=next(sequence), time=stamp,
                attempt=request.attempt, **event,
            ),
            reconstruction_png=reconstruction_png,
        ))

    async def body() -> None:
        try:
            limits = resolve_timeouts(request.timeouts, default_timeouts)
            await _run(request, images, settings, limits, worker_id, blob, emit)
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
    terminal: dict[str, Any] = {}  # the keyword argument of the last event: result or error
    try:
        async with asyncio.timeout(timeouts.experiment_s):
            position.progress(types_pb2.PHASE_LOAD, emit, len(points), len(images))
            first_encoder: SandboxedAgent | None = await _bind_every_point(
                request, settings, budget, timeouts, blob, sides, points, position)
            results = []
            for p_index, point in enumerate(points):
                # A point's encoder has ended (its namespaces and cgroup gone) before its decoder
                # starts: no host-wide state (load, free memory, per-uid counts) can carry an
                # image from one to the other while both run.
                position.point, position.image, position.phase = p_index, None, types_pb2.PHASE_LOAD
                encoder = first_encoder or await _open_side(request, settings, budget, timeouts, blob, sides,
                                                            ENCODER, point)
                first_encoder = None
                if not encoder.takes_image:  # the old runner's own shape: once per point, no image
                    results.append(await _reported_point(request, encoder, point, len(points), timeouts, position,
                                                         (settings, budget, blob, sides), emit))
                    continue
                sent = []
                for i, image in enumerate(images):
                    position.image, position.image_name = i, image.name
                    position.progress(types_pb2.PHASE_ENCODE, emit, len(points), len(images))
                    if i == 0:  # the untimed warm-up call (module docstring)
                        await encoder.encode(image.pixels, timeouts.encode_s)
                    sent.append(await encoder.encode(image.pixels, timeouts.encode_s))
                await _close_side(encoder, sides)
                position.image, position.image_name, position.phase = None, "", types_pb2.PHASE_LOAD
                decoder = await _open_side(request, settings, budget, timeouts, blob, sides, DECODER, point)
                image_results = []
                for i, image in enumerate(images):
                    position.image, position.image_name = i, image.name
                    image_results.append(
                        await _decode_image(request, sent[i], decoder, image, p_index, len(points), i, len(images),
                                        timeouts, position, emit)
                    )
                await _close_side(decoder, sides)
                results.append(metrics.point_result(p_index, point, image_results))
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
        for side in sides:  # synchronously, so even a cancelled run leaves no process behind
            side.process.kill()
        await asyncio.shield(asyncio.gather(*(side.close() for side in sides), return_exceptions=True))
    # Only now that the agent processes are gone and their output is drained: no log line can
    # follow the terminal event.
    emit(**terminal)


ENCODER = sandbox_pb2.SANDBOX_ROLE_ENCODER
DECODER = sandbox_pb2.SANDBOX_ROLE_DECODER


async def _open_side(
    request: worker_pb2.RunExperimentRequest,
    settings: SandboxSettings,
    budget: OutputBudget,
    timeouts: types_pb2.Timeouts,
    blob: Callable[[str], bytes] | None,
    sides: list[SandboxedAgent],
    role: sandbox_pb2.SandboxRole.ValueType,
    point: types_pb2.ParameterPoint,
) -> SandboxedAgent:
    """Starts one side's process (added to ``sides``, which the run closes whatever happens) and
    binds it to ``point``."""
    side = await SandboxedAgent.open(settings, request.agent, role, request.device, budget, timeouts.load_s, blob)
    sides.append(side)
    await side.set_params(point, timeouts.load_s)
    return side


async def _bind_every_point(
    request: worker_pb2.RunExperimentRequest,
    settings: SandboxSettings,
    budget: OutputBudget,
    timeouts: types_pb2.Timeouts,
    blob: Callable[[str], bytes] | None,
    sides: list[SandboxedAgent],
    points: Sequence[types_pb2.ParameterPoint],
    position: _Position,
) -> SandboxedAgent:
    """Binds every point's parameters on the decoder side, then on the encoder side, before any image.

    The decoder is opened first and closed before the encoder starts (the two sides are never
    alive at once); the encoder binds the first point last and is returned ready for it.

    Raises:
        errors.CodecbenchError: SIGNATURE_MISMATCH (or what ``Codec(...)`` raised), with
            ``position.point`` at the point that failed.
    """
    order = [*range(1, len(points)), 0]

    async def bind_all(role: sandbox_pb2.SandboxRole.ValueType) -> SandboxedAgent:
        side = await SandboxedAgent.open(settings, request.agent, role, request.device, budget, timeouts.load_s, blob)
        sides.append(side)
        for index in order:
            position.point = index
            await side.set_params(points[index], timeouts.load_s)
        return side

    await _close_side(await bind_all(DECODER), sides)
    return await bind_all(ENCODER)


async def _close_side(side: SandboxedAgent, sides: list[SandboxedAgent]) -> None:
    """Kills a side's process and waits until it and everything it started are gone."""
    side.process.kill()
    await side.close()
    sides.remove(side)


async def _decode_image(
    request: worker_pb2.RunExperimentRequest,
    sent: tuple[sandbox_pb2.SandboxEncoded, float],  # what the encoder made of the image, and its wall time in ms
    decoder: SandboxedAgent,
    image: DatasetImage,
    point_index: int,
    point_count: int,
    image_index: int,
    image_count: int,
    timeouts: types_pb2.Timeouts,
    position: _Position,
    emit: Emit,
) -> experiment_pb2.ImageResult:
    position.progress(types_pb2.PHASE_DECODE, emit, point_count, image_count)
    encoded, encode_ms = sent
    if image_index == 0:  # the untimed warm-up call (module docstring)
        await decoder.decode(encoded, timeouts.decode_s)
    decoded, decode_ms = await decoder.decode(encoded, timeouts.decode_s)
    position.phase = types_pb2.PHASE_METRICS
    recon = metrics.reconstruction_to_uint8(decoded.reconstruction, image.height, image.width)
    metrics_device = devices.short_name(request.device)
    measured = await asyncio.to_thread(
        metrics.image_metrics, image.pixels, recon, payload_bytes(encoded), encode_ms, decode_ms, metrics_device
    )
    measured.conversion = image.conversion
    measured.clamped_values = decoded.clamped_values
    if decoded.HasField("decoding_data"):
        # In a thread: even a bounded dict is agent-sized work, and heartbeats share this loop.
        report = await asyncio.to_thread(agent_report, decoded.decoding_data)
        if report.values or report.ignored_keys:
            measured.agent_report.CopyFrom(report)
    image_result = experiment_pb2.ImageResult(
        point_index=point_index, image_index=image_index, image_name=image.name, metrics=measured
    )
    if image_index == 0:  # the point's own part of the result: its parameters and aggregates
        _count_result(position, (request.points[point_index].ByteSize() if request.points else 0) + _POINT_OVERHEAD)
    _count_result(position, image_result.ByteSize() + _IMAGE_RESULT_OVERHEAD)
    # In a thread: PNG compression of a large image takes a while, and heartbeats share this loop.
    png = await asyncio.to_thread(metrics.png_bytes, recon) if image_index < request.keep_reconstructions else b""
    if len(png) > MAX_RECONSTRUCTION_PNG_BYTES:  # noise-like pixels of a huge image: said, not sent
        emit(log=experiment_pb2.LogLine(
            stream=experiment_pb2.LOG_STREAM_SYSTEM, phase=types_pb2.PHASE_METRICS,
            text=f"reconstruction of {image.name} not kept: its PNG has {len(png)} bytes, over the "
                 f"{MAX_RECONSTRUCTION_PNG_BYTES} bytes that one event may carry"))
        png = b""
    emit(image_result=image_result, reconstruction_png=png)
    return image_result


async def _reported_point(
    request: worker_pb2.RunExperimentRequest,
    encoder: SandboxedAgent,
    point: types_pb2.ParameterPoint,
    point_count: int,
    timeouts: types_pb2.Timeouts,
    position: _Position,
    opening: tuple[SandboxSettings, OutputBudget, Callable[[str], bytes] | None, list[SandboxedAgent]],
    emit: Emit,
) -> experiment_pb2.PointResult:
    """One point of a seed agent that takes no image: one encode call, one decode call, and the
    decoding dict's scalar entries as its :class:`AgentReport` (no trusted metric exists: no image
    was coded). The rate stated is the encoding dict's size as it crossed the process boundary."""
    settings, budget, blob, sides = opening
    position.image, position.image_name = None, ""
    position.progress(types_pb2.PHASE_ENCODE, emit, point_count, 0)
    encoded, encode_ms = await encoder.encode(None, timeouts.encode_s)
    await _close_side(encoder, sides)
    position.phase = types_pb2.PHASE_LOAD
    decoder = await _open_side(request, settings, budget, timeouts, blob, sides, DECODER, point)
    position.progress(types_pb2.PHASE_DECODE, emit, point_count, 0)
    decoded, decode_ms = await decoder.decode(encoded, timeouts.decode_s)
    await _close_side(decoder, sides)
    position.phase = types_pb2.PHASE_METRICS
    report = await asyncio.to_thread(agent_report, decoded.decoding_data)
    report.encoding_data_bytes = len(payload_bytes(encoded))
    result = experiment_pb2.PointResult(
        point_index=position.point or 0, params=point, image_count=0, encode_ms=encode_ms, decode_ms=decode_ms,
        agent_report=report,
    )
    _count_result(position, result.ByteSize() + _POINT_OVERHEAD)
    return result


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
