"""Runs one experiment: every parameter point over every image, as a stream of events.

The stream ends with exactly one terminal event: an ``ExperimentResult`` whose every image has
metrics, or an ``Error`` of one kind. There is no third outcome, and never a success with
missing metrics. Agent processes are killed when the run ends, fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from google.protobuf import timestamp_pb2

from codecbench import devices, errors, values
from codecbench.datasets import DatasetImage
from codecbench.timeouts import resolve as resolve_timeouts
from codecbench.v1 import errors_pb2, experiment_pb2, sandbox_pb2, types_pb2, worker_pb2
from sandbox.process import OutputBudget
from worker_svc import metrics
from worker_svc.sandboxed_agent import SandboxedAgent, SandboxSettings, payload_bytes

Emit = Callable[..., None]


class _Position:
    """Where the run is, so an error can say which phase, point and item it belongs to."""

    def __init__(self) -> None:
        self.phase: types_pb2.Phase.ValueType = types_pb2.PHASE_SETUP
        self.point: int | None = None
        self.image: int | None = None
        self.image_name = ""

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
) -> AsyncIterator[experiment_pb2.ExperimentEvent]:
    """Runs the experiment and yields its events, the terminal one last.

    Closing the iterator early (the client cancelled) kills the agent processes before it returns.
    """
    queue: asyncio.Queue[experiment_pb2.ExperimentEvent | None] = asyncio.Queue()
    sequence = itertools.count(1)

    def emit(**event: Any) -> None:
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        queue.put_nowait(
            experiment_pb2.ExperimentEvent(
                experiment_id=request.experiment_id, sequence=next(sequence), time=stamp,
                attempt=request.attempt, **event,
            )
        )

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
            position.phase = types_pb2.PHASE_LOAD
            emit(progress=experiment_pb2.Progress(
                phase=position.phase, point_count=len(points), image_count=len(images)
            ))
            encoder, decoder = await _open_both(request, settings, budget, timeouts.load_s, blob, sides)
            results = []
            for p_index, point in enumerate(points):
                position.point, position.image, position.phase = p_index, None, types_pb2.PHASE_LOAD
                await asyncio.gather(
                    encoder.set_params(point, timeouts.load_s), decoder.set_params(point, timeouts.load_s)
                )
                items = []
                for i, image in enumerate(images):
                    position.image, position.image_name = i, image.name
                    items.append(
                        await _run_item(request, encoder, decoder, image, p_index, len(points), i, len(images),
                                        timeouts, position, emit)
                    )
                results.append(metrics.point_result(p_index, point, items))
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


async def _open_both(
    request: worker_pb2.RunExperimentRequest,
    settings: SandboxSettings,
    budget: OutputBudget,
    load_s: float,
    blob: Callable[[str], bytes] | None,
    sides: list[SandboxedAgent],
) -> tuple[SandboxedAgent, SandboxedAgent]:
    """Starts the encoder and the decoder processes in parallel; both are added to ``sides``."""

    async def open_side(role: sandbox_pb2.SandboxRole.ValueType) -> SandboxedAgent:
        side = await SandboxedAgent.open(settings, request.agent, role, request.device, budget, load_s, blob)
        sides.append(side)
        return side

    opened = await asyncio.gather(
        open_side(sandbox_pb2.SANDBOX_ROLE_ENCODER), open_side(sandbox_pb2.SANDBOX_ROLE_DECODER),
        return_exceptions=True,
    )
    for outcome in opened:
        if isinstance(outcome, BaseException):
            raise outcome
    return opened[0], opened[1]  # type: ignore[return-value]


async def _run_item(
    request: worker_pb2.RunExperimentRequest,
    encoder: SandboxedAgent,
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
    def progress(phase: types_pb2.Phase.ValueType) -> None:
        position.phase = phase
        emit(progress=experiment_pb2.Progress(
            phase=phase, point_index=point_index, point_count=point_count,
            image_index=image_index, image_count=image_count, image_name=image.name,
        ))

    progress(types_pb2.PHASE_ENCODE)
    encoded, encode_ms = await encoder.encode(image.pixels, timeouts.encode_s)
    position.phase = types_pb2.PHASE_DECODE
    decoded, decode_ms = await decoder.decode(encoded, timeouts.decode_s)
    position.phase = types_pb2.PHASE_METRICS
    recon = metrics.reconstruction_to_uint8(decoded.reconstruction, image.height, image.width)
    metrics_device = devices.short_name(request.device)
    item_metrics = await asyncio.to_thread(
        metrics.image_metrics, image.pixels, recon, payload_bytes(encoded), encode_ms, decode_ms, metrics_device
    )
    item_metrics.conversion = image.conversion
    if decoded.HasField("decoding_data"):
        for key, value in _numbers(values.from_value(decoded.decoding_data)).items():
            item_metrics.agent_reported[key] = value
    item = experiment_pb2.ImageResult(
        point_index=point_index, image_index=image_index, image_name=image.name, metrics=item_metrics
    )
    emit(image_result=item)
    return item


def _numbers(data: object) -> dict[str, float]:
    """The finite numeric top-level entries of a seed agent's decoding dict."""
    if not isinstance(data, dict):
        return {}
    out = {}
    for key, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out
