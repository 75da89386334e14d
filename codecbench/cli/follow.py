"""Following an experiment live: :func:`follow` watches its events to the end with one progress bar
per parameter point, printing state changes, agent log lines and errors as they arrive.

Used by ``codecbench run`` and ``make demo``; the lines it prints are :mod:`codecbench.cli.views`'.
:class:`WaitingReporter` (``run`` and ``watch``) says why a queued experiment waits: the reason is
not an event (it changes as workers come and go, without anything happening to the experiment),
so it is polled from GetExperiment while the experiment is QUEUED.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from codecbench import errors, states, values
from codecbench.cli.views import duration_text, event_text, state_text
from codecbench.client import Client
from codecbench.v1 import experiment_pb2, orchestrator_pb2, types_pb2

# How often a QUEUED experiment's waiting reason is asked for. A waiting reason is about workers
# registering (seconds to minutes), so a few seconds of delay cost nothing and keep the load low.
WAITING_POLL_S = 2.0


def waiting_text(exp: orchestrator_pb2.Experiment) -> Text:
    """The line that says why a QUEUED experiment waits, and what ``--queue-timeout-s`` does about it."""
    if exp.queue_timeout_s > 0:
        then = f"it fails as UNSCHEDULABLE if no worker can run it within {exp.queue_timeout_s:g} s (--queue-timeout-s)"
    else:
        then = ("it waits until one can (`codecbench run --queue-timeout-s N` fails it after N s instead; "
                f"`codecbench cancel {exp.experiment_id}` ends it)")
    return Text(f"waiting: {exp.waiting_reason}; {then}", style="yellow")


class WaitingReporter:
    """Prints an experiment's waiting reason (:func:`waiting_text`) while it is QUEUED, when it changes.

    Use it as an async context manager around the loop over the experiment's events, and call
    :meth:`on_state` with every state change: it polls GetExperiment every ``poll_s`` s while the
    latest state is QUEUED (a requeued experiment is asked about again) and stops on exit.
    """

    def __init__(self, client: Client, experiment_id: str, console: Console, queued: bool = True,
                 poll_s: float = WAITING_POLL_S) -> None:
        self.client, self.experiment_id, self.console, self.poll_s = client, experiment_id, console, poll_s
        self.queued = asyncio.Event()
        if queued:
            self.queued.set()
        self.shown = ""
        self._task: asyncio.Task[None] | None = None

    def on_state(self, state: experiment_pb2.ExperimentState.ValueType) -> None:
        """Records the experiment's new state (from a StateChange event)."""
        if state == states.QUEUED:
            self.queued.set()
        else:
            self.queued.clear()
            self.shown = ""

    async def _poll(self) -> None:
        while True:
            await self.queued.wait()
            with contextlib.suppress(errors.CodecbenchError):  # unreachable for a moment: ask again later
                exp = await self.client.get(self.experiment_id)
                if exp.state != states.QUEUED:
                    self.on_state(exp.state)
                elif exp.waiting_reason and exp.waiting_reason != self.shown and self.queued.is_set():
                    self.shown = exp.waiting_reason
                    self.console.print(waiting_text(exp), soft_wrap=True)
            await asyncio.sleep(self.poll_s)

    async def __aenter__(self) -> WaitingReporter:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _PointBars:
    """One rich progress bar per parameter point; restarted when the experiment is requeued.

    A bar's time is taken from the events' timestamps (first event of the point to the latest),
    not from the local clock, so a replay of stored events shows the real durations too.

    A point of a seed agent that takes no image (the old runner's own shape) codes no image: its
    progress events say 0 images, and it has no image results. Its bar says so ("point 1/3,
    agent-reported, no images") instead of counting 0/0 images, and is done when the next point
    starts or the result arrives.
    """

    def __init__(self, progress: Progress, exp: orchestrator_pb2.Experiment) -> None:
        self.progress = progress
        self.labels = [values.format_params(p) or "(no parameters)" for p in exp.points] or ["(no parameters)"]
        self.attempt = exp.attempt
        self.tasks: list[TaskID] = []
        self._add()

    def _add(self) -> None:
        for task in self.tasks:
            self.progress.remove_task(task)
        self.tasks = [self.progress.add_task(label, total=None, status="queued", took="", count="")
                      for label in self.labels]
        self.done = [0] * len(self.tasks)
        self.started_us: list[int | None] = [None] * len(self.tasks)
        self.total: int | None = None
        self.reported: set[int] = set()  # points without images (agent-reported), by index
        self.finished: set[int] = set()

    def restart(self, attempt: int) -> None:
        if attempt != self.attempt:
            self.attempt = attempt
            self._add()

    def _clock(self, point: int, stamp: timestamp_pb2.Timestamp) -> str:
        now = stamp.ToMicroseconds()
        first = self.started_us[point]
        if first is None:
            first = self.started_us[point] = now
        return f"{(now - first) / 1e6:.1f} s"

    def _count(self, point: int) -> str:
        if point in self.reported:
            return f"point {point + 1}/{len(self.tasks)}, agent-reported, no images"
        return f"{self.done[point]}/{self.total} images" if self.total is not None else ""

    def _finish_reported(self, before: int) -> None:
        """Marks the agent-reported points before index ``before`` done (they have no image results)."""
        for i in sorted(self.reported - self.finished):
            if i < before:
                self.finished.add(i)
                self.progress.update(self.tasks[i], total=1, completed=1, status="done")

    def on_progress(self, p: experiment_pb2.Progress, stamp: timestamp_pb2.Timestamp) -> None:
        if self.total != p.image_count:
            self.total = p.image_count
            for task in self.tasks:
                self.progress.update(task, total=p.image_count or None)
        if p.phase in (types_pb2.PHASE_ENCODE, types_pb2.PHASE_DECODE) and p.point_index < len(self.tasks):
            i = p.point_index
            if p.image_count == 0:
                self.reported.add(i)
            self._finish_reported(i)
            self.progress.update(self.tasks[i], took=self._clock(i, stamp), count=self._count(i),
                                 status=f"{errors.phase_name(p.phase)} {p.image_name}".rstrip())

    def on_image(self, image: experiment_pb2.ImageResult, stamp: timestamp_pb2.Timestamp) -> None:
        if image.point_index >= len(self.tasks):
            return
        i = image.point_index
        self.done[i] += 1
        finished = self.total is not None and self.done[i] >= self.total
        self.progress.update(self.tasks[i], completed=self.done[i], took=self._clock(i, stamp), count=self._count(i),
                             status="done" if finished else "")

    def on_result(self) -> None:
        self._finish_reported(len(self.tasks))

    def on_error(self) -> None:
        for i, task in enumerate(self.tasks):
            unfinished = (i not in self.finished if i in self.reported
                          else self.total is None or self.done[i] < self.total)
            if unfinished:
                self.progress.update(task, status="stopped")


async def _show_events(client: Client, exp: orchestrator_pb2.Experiment, progress: Progress, bars: _PointBars,
                       waiting: WaitingReporter) -> None:
    """Shows the experiment's events until the terminal one: bars for progress, lines for the rest."""
    async for event in client.watch(exp.experiment_id):
        kind = event.WhichOneof("event")
        if kind == "progress":
            bars.on_progress(event.progress, event.time)
        elif kind == "image_result":
            bars.on_image(event.image_result, event.time)
        elif kind == "result":
            bars.on_result()
        else:
            if kind == "state_change":
                bars.restart(event.state_change.attempt)
                waiting.on_state(event.state_change.state)
            elif kind == "error":
                bars.on_error()
            progress.console.print(event_text(event), soft_wrap=True)


async def follow(client: Client, exp: orchestrator_pb2.Experiment, console: Console) -> orchestrator_pb2.Experiment:
    """Watches an experiment to its end with a progress bar per parameter point, printing state
    changes, agent log lines and errors the moment they arrive; returns the finished experiment."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[took]}"), TextColumn("{task.fields[status]}", style="dim"), console=console,
    )
    if exp.cached_from:  # finished at creation: nothing is queued or runs, so no bars
        async for event in client.watch(exp.experiment_id):
            if event.WhichOneof("event") in ("log", "error"):
                console.print(event_text(event), soft_wrap=True)
        final = await client.get(exp.experiment_id)
        summary = Text(f"{final.experiment_id} ({final.agent.name}) ")
        summary.append_text(state_text(final.state))
        console.print(summary.append(f" (cached from {final.cached_from}; nothing ran)"))
        return final
    with progress:
        bars = _PointBars(progress, exp)
        waiting = WaitingReporter(client, exp.experiment_id, progress.console, queued=exp.state == states.QUEUED)
        async with waiting:
            await _show_events(client, exp, progress, bars, waiting)
    final = await client.get(exp.experiment_id)
    summary = Text(f"{final.experiment_id} ({final.agent.name}) ")
    summary.append_text(state_text(final.state))
    if final.state == states.SUCCEEDED:
        summary.append(f" in {duration_text(final)} (attempt {final.attempt}, worker {final.worker_id})")
    console.print(summary)
    return final
