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
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from codecbench import errors, validation, values
from codecbench.datasets import DatasetImage
from codecbench.v1 import errors_pb2, experiment_pb2, sandbox_pb2, types_pb2, worker_pb2
from sandbox.process import OutputBudget
from worker_svc import metrics
from worker_svc.sandboxed_agent import SandboxedAgent, SandboxSettings, payload_bytes

Emit = Callable[..., None]


@dataclass(frozen=True)
class DefaultTimeouts:
    """Limits used where a request leaves a timeout at 0, in seconds."""

    load_s: float = 120.0
    encode_s: float = 120.0
    decode_s: float = 120.0
    experiment_s: float = validation.DEFAULT_EXPERIMENT_S

    def resolve(self, requested: types_pb2.Timeouts) -> types_pb2.Timeouts:
        return types_pb2.Timeouts(
            load_s=requested.load_s or self.load_s,
            encode_s=requested.encode_s or self.encode_s,
            decode_s=requested.decode_s or self.decode_s,
            experiment_s=requested.experiment_s or self.experiment_s,
        )


class _Position:
    """Where the run is, so an error can say which phase, point and item it belongs to."""

    def __init__(self) -> None:
        self.phase = errors_pb2.PHASE_SETUP
        self.point: int | None = None
        self.item: int | None = None
        self.item_name = ""

    def stamp(self, error: errors_pb2.Error) -> errors_pb2.Error:
        if not error.phase:
            error.phase = self.phase
        if self.point is not None and not error.HasField("point_index"):
            error.point_index = self.point
        if self.item is not None and not error.HasField("item_index"):
            error.item_index = self.item
            error.item_name = self.item_name
        return error


async def run_experiment(
    request: worker_pb2.RunExperimentRequest,
    images: Sequence[DatasetImage],
    settings: SandboxSettings,
    timeouts: DefaultTimeouts,
    worker_id: str,
    blob: Callable[[str], bytes] | None = None,
) -> AsyncIterator[experiment_pb2.ExperimentEvent]:
    """Runs the experiment and yields its events, the terminal one last.

    Closing the iterator early (the client cancelled) kills the agent processes before it returns.
    """
    queue: asyncio.Queue[experiment_pb2.ExperimentEvent | None] = asyncio.Queue()
    sequence = itertools.count(1)

    def emit(**event: object) -> None:
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
            await _run(request, images, settings, timeouts.resolve(request.timeouts), worker_id, blob, emit)
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
    terminal: dict[str, object] = {}
    try:
        async with asyncio.timeout(timeouts.experiment_s):
            position.phase = errors_pb2.PHASE_LOAD
            emit(progress=experiment_pb2.Progress(
                phase=position.phase, point_count=len(points), item_count=len(images)
            ))
            encoder, decoder = await _open_both(request, settings, budget, timeouts.load_s, blob, sides)
            results = []
            for p_index, point in enumerate(points):
                position.point, position.item, position.phase = p_index, None, errors_pb2.PHASE_LOAD
                await asyncio.gather(
                    encoder.set_params(point, timeouts.load_s), decoder.set_params(point, timeouts.load_s)
                )
                items = []
                for i, image in enumerate(images):
                    position.item, position.item_name = i, image.name
                    items.append(
                        await _run_item(request, encoder, decoder, image, p_index, len(points), i, len(images),
                                        timeouts, position, emit)
                    )
                results.append(metrics.point_result(p_index, point, items))
        wall_ms = (time.perf_counter() - started) * 1000.0
        terminal = {"result": experiment_pb2.ExperimentResult(points=results, wall_ms=wall_ms, worker_id=worker_id)}
    except TimeoutError:
        elapsed = time.perf_counter() - started
        error = errors.Timeout(
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

    async def open_side(role: int) -> SandboxedAgent:
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
    item_index: int,
    item_count: int,
    timeouts: types_pb2.Timeouts,
    position: _Position,
    emit: Emit,
) -> experiment_pb2.ItemResult:
    def progress(phase: int) -> None:
        position.phase = phase
        emit(progress=experiment_pb2.Progress(
            phase=phase, point_index=point_index, point_count=point_count,
            item_index=item_index, item_count=item_count, item_name=image.name,
        ))

    progress(errors_pb2.PHASE_ENCODE)
    encoded, encode_ms = await encoder.encode(image.pixels, timeouts.encode_s)
    position.phase = errors_pb2.PHASE_DECODE
    decoded, decode_ms = await decoder.decode(encoded, timeouts.decode_s)
    position.phase = errors_pb2.PHASE_METRICS
    recon = metrics.reconstruction_to_uint8(decoded.reconstruction, image.height, image.width)
    metrics_device = request.device if request.device.startswith("cuda") else "cpu"
    item_metrics = await asyncio.to_thread(
        metrics.image_metrics, image.pixels, recon, payload_bytes(encoded), encode_ms, decode_ms, metrics_device
    )
    item_metrics.conversion = image.conversion
    if decoded.HasField("decoding_data"):
        for key, value in _numbers(values.from_value(decoded.decoding_data)).items():
            item_metrics.agent_reported[key] = value
    item = experiment_pb2.ItemResult(
        point_index=point_index, item_index=item_index, item_name=image.name, metrics=item_metrics
    )
    emit(item_result=item)
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
