"""Dispatches QUEUED experiments to READY workers and records every event they stream back.

One task per running experiment calls the worker's ``RunExperiment`` and appends each event to
the ledger (stored, then announced). Outcomes:

- a terminal event: SUCCEEDED with the result, or FAILED with the error; INTERNAL errors are
  retried on the next attempt, agent errors never are;
- the stream breaks (worker killed, network gone) or heartbeats stop: the worker is LOST and the
  experiment goes back to the queue with ``attempt + 1`` (FAILED with WORKER_LOST past the limit);
- the worker refused it for lack of a free slot (ErrorInfo reason ``NO_FREE_SLOT``): back to the queue,
  same attempt;
- the worker drains (ErrorInfo reason ``WORKER_DRAINING``: it refused a new experiment, or its grace
  period ran out while this one ran): back to the queue with ``attempt + 1`` that does not count
  against the attempt limit (``max_attempts + 1``), but only when this orchestrator knows the worker
  drains (it called DrainWorker on itself, or an admin drained it) and at most
  ``ledger.MAX_UNCOUNTED_DRAIN_REQUEUES`` times per experiment; otherwise the attempt counts like a
  lost one, and the worker is DRAINING here from then on;
- cancelled by a user: the CANCELLED state is stored first, then the call is cancelled, which
  makes the worker kill the sandbox processes.

Fair share (:class:`FairShare`): the queue is not served oldest-first across users. Owners take
turns in weighted round-robin (sorted by name; an owner of weight *w* gets up to *w* experiments
per turn, default 1), and the next dispatch pass starts where the last one stopped, so a
single experiment of user B waits at most one turn of every other owner with queued work, even
behind 10 000 queued by user A. Within an owner's turn, their runs (experiments grouped by the
label ``run``; those without one form one more run) take turns the same way, and priorities
apply: the owner's highest-priority queued experiment goes first, runs alternating among equal
priorities; within a run, highest priority first, then oldest. An experiment that no free worker
can take (device) is passed over for one that can; it keeps its place for the next pass.

Scheduling rounds (issue 15: 1 000 dispatches a second from a backlog of 10 000): a round fills
every free slot with one read of the queue's heads and one transaction for all its dispatches
(``Store.dispatch_many``), whose rows give the worker calls their specs, parsed once; rounds are
at least ``ROUND_INTERVAL_S`` apart, so results that arrive together free their slots for one
round. The workers' events are stored by the ledger's group commit (``Ledger.append``).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from codecbench import devices, errors, logs
from codecbench.blobs import BlobStore
from codecbench.states import QUEUED, RUNNING
from codecbench.status import from_rpc_error
from codecbench.timeouts import resolve as resolve_timeouts
from codecbench.v1 import experiment_pb2, orchestrator_pb2, types_pb2, worker_pb2
from orchestrator_svc.disk import DataDir, is_disk_full
from orchestrator_svc.ledger import Ledger
from orchestrator_svc.store import Dispatched, QueuedExperiment, Store
from orchestrator_svc.telemetry import OrchestratorTelemetry
from orchestrator_svc.workers import READY, WorkerEntry, WorkerRegistry

# The shortest time between two scheduling rounds (s): see Scheduler._loop.
ROUND_INTERVAL_S = 0.002
# How often queue timeouts are checked (s); they are given in seconds.
DEADLINE_CHECK_S = 0.25


class FairShare:
    """Weighted round-robin over owners, and over runs within an owner (module docstring).

    Args:
        weights: experiments per turn by owner name; an owner not listed has ``default_weight``.
        default_weight: the weight of owners not in ``weights``.
    """

    def __init__(self, weights: Mapping[str, int] | None = None, default_weight: int = 1) -> None:
        self.weights = dict(weights or {})
        self.default_weight = default_weight
        self._turn_owner = ""  # whose turn was served last, and how many it took in that turn
        self._turn_taken = 0
        self._last_run: dict[str, str] = {}

    def weight(self, owner: str) -> int:
        """Experiments per turn of ``owner``."""
        return max(self.weights.get(owner, self.default_weight), 1)

    def order(self, queued: Sequence[QueuedExperiment]) -> list[QueuedExperiment]:
        """``queued`` (each (owner, run) queue already in its own order: priority, highest first) in
        dispatch order; O(n log n) for n experiments, however many owners and runs."""
        queues: dict[str, dict[str, deque[QueuedExperiment]]] = {}
        for entry in queued:
            queues.setdefault(entry.owner, {}).setdefault(entry.run, deque()).append(entry)
        owners = sorted(queues)
        if not owners:
            return []
        # Resume the rotation: the owner whose turn is unfinished, else the one after it.
        unfinished = self._turn_owner in queues and self._turn_taken < self.weight(self._turn_owner)
        start = bisect.bisect_left(owners, self._turn_owner) if unfinished else bisect.bisect_right(
            owners, self._turn_owner)
        # An owner's own order depends on their runs alone, so each is a lazy sequence; owners
        # then take turns, and one whose sequence ends leaves the rotation.
        turns = deque((o, self._owner_order(queues[o], self._last_run.get(o, "")))
                      for o in owners[start:] + owners[:start])
        out: list[QueuedExperiment] = []
        first_share = self.weight(turns[0][0]) - (self._turn_taken if unfinished else 0)
        while turns:
            owner, sequence = turns.popleft()
            share = first_share if first_share else self.weight(owner)
            first_share = 0
            taken = list(itertools.islice(sequence, share))
            out.extend(taken)
            if len(taken) == share:
                turns.append((owner, sequence))
        return out

    @staticmethod
    def _owner_order(runs: dict[str, deque[QueuedExperiment]], last_run: str) -> Iterator[QueuedExperiment]:
        """An owner's experiments in order: each time the highest priority among the heads of their
        runs, the run after the last one served (in name order, cyclically) first among equals.

        A run's head only drops in priority (each run is sorted), so the runs at the top priority
        are known when it becomes the top and only leave it: they rotate in a deque, and a heap of
        (-head priority, name) yields the next level; each experiment costs O(log runs).
        """
        levels = [(-q[0].priority, name) for name, q in runs.items()]
        heapq.heapify(levels)
        while levels:
            top = levels[0][0]
            names = []
            while levels and levels[0][0] == top:
                names.append(heapq.heappop(levels)[1])
            names.sort()
            cut = bisect.bisect_right(names, last_run)
            rotation = deque(names[cut:] + names[:cut])
            while rotation:
                name = rotation.popleft()
                queue = runs[name]
                yield queue.popleft()
                last_run = name
                if queue and -queue[0].priority == top:
                    rotation.append(name)
                elif queue:
                    heapq.heappush(levels, (-queue[0].priority, name))

    def served(self, item: QueuedExperiment) -> None:
        """Records a dispatch, so the next pass resumes the rotation after it."""
        if item.owner == self._turn_owner and self._turn_taken < self.weight(item.owner):
            self._turn_taken += 1
        else:
            self._turn_owner, self._turn_taken = item.owner, 1
        self._last_run[item.owner] = item.run


def _pick(ready: Sequence[WorkerEntry], free: dict[str, int], device: devices.Device.ValueType
          ) -> WorkerEntry | None:
    """The worker of ``ready`` to take an experiment for ``device`` in a round whose free slots
    are counted in ``free`` (by worker id): the one with most free slots left, the one heard from
    last among equals; None when none can take it."""
    candidates = [w for w in ready if free[w.worker_id] > 0 and (device != devices.CUDA or w.has_cuda)]
    return max(candidates, key=lambda w: (free[w.worker_id], w.last_heartbeat), default=None)


@dataclass
class Dispatch:
    """A running experiment on a worker, and why its task was stopped, if it was."""

    experiment_id: str
    attempt: int
    worker: WorkerEntry
    task: asyncio.Task[None] | None = None
    stop_reason: str = ""  # "cancelled" or "lost: ..."
    # Blobs (agent files, dataset images) the worker may read while this runs.
    digests: frozenset[str] = frozenset()


# The most bytes of decoded images (PNG) one experiment keeps (keep_reconstructions): noise-like
# reconstructions never deduplicate, and up to 1000 points x 16 images of up to 32 MiB each would
# otherwise fill the disk from one submission. Past it an image is not kept, and a system log line says so.
RECONSTRUCTION_BUDGET_BYTES = 256 * 2**20


class Scheduler:
    """Runs QUEUED experiments on READY workers and records what they stream back (module docstring).

    Args:
        store: the experiments' rows.
        ledger: appends events and moves experiments between states.
        registry: the workers.
        heartbeat_timeout_s: a worker silent this long is LOST.
        call_slack_s: added to an experiment's own time limit for the deadline of its worker call.
        lost_worker_ttl_s: a LOST worker is removed from the worker list this long after it was lost.
        data: the data directory's writability (None: assumed writable).
        owner_weights: experiments per fair-share turn by owner (default 1 each).
        telemetry: where dispatch latencies and attempt durations are observed (None: nowhere).
        blobs: where decoded images that experiments keep (keep_reconstructions) are stored; None:
            none is kept.
        reconstruction_budget_bytes: the most bytes of kept decoded images per experiment
            (:data:`RECONSTRUCTION_BUDGET_BYTES`; counted over its attempts in this orchestrator's life).
    """

    def __init__(
        self, store: Store, ledger: Ledger, registry: WorkerRegistry, heartbeat_timeout_s: float, call_slack_s: float,
        lost_worker_ttl_s: float = 3600.0, data: DataDir | None = None, owner_weights: Mapping[str, int] | None = None,
        telemetry: OrchestratorTelemetry | None = None,
        blobs: BlobStore | None = None, reconstruction_budget_bytes: int = RECONSTRUCTION_BUDGET_BYTES,
    ) -> None:
        self.blobs = blobs
        self.reconstruction_budget_bytes = reconstruction_budget_bytes
        # Bytes of decoded images kept so far by experiment id (until it ends: a retry counts on).
        self.kept_bytes: dict[str, int] = {}
        self.fair = FairShare(owner_weights)
        self.telemetry = telemetry
        self.lost_worker_ttl_s = lost_worker_ttl_s
        # The data directory's writability: while it is full nothing is dispatched, and the attempts
        # whose events could not be stored are settled (requeued or failed) once it takes writes again.
        self.data = data
        self.unstored: set[tuple[str, int]] = set()
        self.recovered = False
        self.store = store
        self.ledger = ledger
        self.registry = registry
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.call_slack_s = call_slack_s
        self.running: dict[str, Dispatch] = {}
        self.wake = asyncio.Event()
        self.log = logs.get_logger("scheduler")
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def recover(self) -> None:
        """At start: experiments left RUNNING by a previous orchestrator process go back to the queue."""
        for experiment_id in self.store.running_ids():
            if experiment_id in self.running:
                continue
            exp = self.store.get_experiment(experiment_id)
            if exp is not None:
                await self.ledger.requeue_or_fail(
                    experiment_id, exp.attempt, f"orchestrator restarted while it ran on {exp.worker_id or 'a worker'}"
                )
        self.recovered = True

    async def settle_unstored(self) -> None:
        """Once the data directory takes writes again: the start-up recovery if it could not run,
        and each attempt whose events could not be stored goes back to the queue (attempt + 1), or
        fails past its attempt limit; none stays RUNNING."""
        if not self.recovered:
            await self.recover()
        for experiment_id, attempt in sorted(self.unstored):
            await self.ledger.requeue_or_fail(
                experiment_id, attempt, "its events could not be stored: the data directory was full")
            self.unstored.discard((experiment_id, attempt))

    def start(self) -> None:
        """Starts the dispatch loop (heartbeat checks, then queued experiments, on each wake-up)."""
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stops the loop and the running calls; their RUNNING rows are recovered at the next start."""
        self._stopping = True
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = [d.task for d in self.running.values() if d.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        last_round = last_deadlines = 0.0
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)
            except TimeoutError:
                pass
            # Rounds at most ROUND_INTERVAL_S apart: the results that arrive together (one per
            # freed slot) are served by one round, not one round each.
            await asyncio.sleep(max(last_round + ROUND_INTERVAL_S - time.monotonic(), 0.0))
            last_round = time.monotonic()
            self.wake.clear()
            try:
                self._check_heartbeats()
                await self.registry.prune_lost(time.time() - self.lost_worker_ttl_s)
                if self.data is not None and self.data.full:
                    await self.data.check()  # runs settle_unstored once writes work again
                    continue
                if last_round - last_deadlines >= DEADLINE_CHECK_S:  # a query over the whole queue
                    last_deadlines = last_round
                    await self.fail_unschedulable()
                await self.dispatch_queued()
            except Exception as exc:  # noqa: BLE001 - the loop must survive a bad row or a store hiccup
                if self.data is not None and self._no_room(exc):
                    self.data.mark_full()
                else:
                    self.log.exception("scheduler.error", error=str(exc))

    def _no_room(self, exc: BaseException) -> bool:
        """Whether ``exc`` failed for lack of space in the data directory (DataDir.no_room)."""
        return self.data.no_room(exc) if self.data is not None else is_disk_full(exc)

    def _check_heartbeats(self) -> None:
        for worker in self.registry.silent_since(time.time() - self.heartbeat_timeout_s):
            self.mark_lost(worker, f"no heartbeat for {self.heartbeat_timeout_s:g} s")

    def mark_lost(self, worker: WorkerEntry, reason: str) -> None:
        """Marks a worker LOST and stops its dispatches; each task requeues its experiment."""
        if worker.lost_reason:
            return
        worker.lost_reason = f"worker {worker.worker_id} lost: {reason}"
        worker.lost_time = time.time()
        self.log.warning("worker.lost", worker_id=worker.worker_id, reason=reason)
        for experiment_id in list(worker.running):
            dispatch = self.running.get(experiment_id)
            if dispatch and dispatch.task and not dispatch.stop_reason:
                dispatch.stop_reason = worker.lost_reason
                dispatch.task.cancel()

    async def fail_unschedulable(self) -> None:
        """Fails (UNSCHEDULABLE) each QUEUED experiment past its queue timeout that no registered
        worker can run; one that only waits for a free slot keeps waiting."""
        for queued in self.store.queued_past_deadline(time.time()):
            reason = self.registry.unschedulable_reason(queued.device)
            if not reason:
                continue
            exp = self.store.get_experiment(queued.experiment_id)
            timeout_s = exp.queue_timeout_s if exp is not None else 0.0
            error = errors.Unschedulable(
                f"no registered worker could run it within its queue timeout of {timeout_s:g} s: {reason}",
                phase=types_pb2.PHASE_QUEUE,
            ).to_proto()
            if await self.ledger.failed(queued.experiment_id, queued.attempt, error, {QUEUED}):
                self.log.info("experiment.unschedulable", experiment_id=queued.experiment_id, reason=reason)

    async def dispatch_queued(self) -> None:
        """One scheduling round over the queue in fair-share order (module docstring): each QUEUED
        experiment goes to a worker that can take it, until the free slots are filled.

        The round costs one read of the queue's heads and one transaction for all its dispatches
        (:meth:`Store.dispatch_many`), which also returns each experiment's spec, parsed once: the
        worker calls start from it without reading the experiment again.
        """
        takeable = self.registry.takeable_devices()
        if not takeable:
            return
        # Only what some free worker can take, so a backlog for absent GPUs blocks no CPU work; and
        # from each (owner, run) queue no more rows than there are free slots to fill.
        free = {w.worker_id: w.free_slots for w in self.registry.workers.values() if w.state == READY}
        heads = self.store.queued_heads(takeable, per_queue=max(sum(free.values()), 1) * 2)
        ready = [w for w in self.registry.workers.values() if w.worker_id in free]
        plan: dict[str, tuple[QueuedExperiment, WorkerEntry]] = {}
        for queued in self.fair.order(heads):
            if queued.experiment_id in self.running:
                continue
            worker = _pick(ready, free, queued.device)
            if worker is None:
                if not any(free.values()):
                    break  # every slot is taken
                continue
            free[worker.worker_id] -= 1
            plan[queued.experiment_id] = (queued, worker)
        if not plan:
            return
        moved = await self.ledger.dispatched_many(
            [Dispatched(q.experiment_id, q.attempt, w.worker_id) for q, w in plan.values()])
        # One log line per worker and round, not per experiment (a line costs ~0.3 ms: a third of the
        # orchestrator's CPU per dispatch at 1 000 a second).
        by_worker: dict[str, list[tuple[str, int]]] = {}
        for exp, _ in moved:
            by_worker.setdefault(exp.worker_id, []).append((exp.experiment_id, exp.attempt))
        for worker_id, started in by_worker.items():
            self.log.info("experiments.dispatched", worker_id=worker_id, experiment_ids=[e for e, _ in started],
                          attempts=[a for _, a in started])
        now = time.time()
        for exp, _ in moved:
            # Taken off the ledger's map whether or not it is observed: the map holds queued experiments only.
            # As the ledger saw it enter the queue; after a restart, its create time stands in.
            since = self.ledger.queued_since.pop(exp.experiment_id, None) or exp.create_time.ToMicroseconds() / 1e6
            if self.telemetry is not None:
                self.telemetry.dispatch_latency.observe(max(now - since, 0.0))
        found: dict[str, orchestrator_pb2.Dataset | None] = {}  # each dataset read once a round
        for exp, _ in moved:
            queued, worker = plan[exp.experiment_id]
            self.fair.served(queued)
            if exp.dataset not in found:
                found[exp.dataset] = self.store.find_dataset(exp.dataset)
            dispatch = Dispatch(queued.experiment_id, queued.attempt, worker)
            self.running[queued.experiment_id] = dispatch
            worker.running.add(queued.experiment_id)
            request = self._request(exp, found[exp.dataset], worker)
            dispatch.task = asyncio.create_task(self._run(dispatch, exp, request))

    async def cancel(self, experiment_id: str) -> orchestrator_pb2.Experiment | None:
        """Cancels a QUEUED or RUNNING experiment; a finished one is returned unchanged."""
        exp = self.store.get_experiment(experiment_id)
        if exp is None:
            return None
        if exp.state == QUEUED:
            error = errors.Cancelled(
                "cancelled by a CancelExperiment request while queued", phase=types_pb2.PHASE_QUEUE
            )
        else:  # the worker knows the phase; the orchestrator only knows where it ran
            error = errors.Cancelled(f"cancelled by a CancelExperiment request while running on {exp.worker_id}")
        if await self.ledger.failed(experiment_id, exp.attempt, error.to_proto(), {QUEUED, RUNNING}):
            dispatch = self.running.get(experiment_id)
            if dispatch and dispatch.task:
                dispatch.stop_reason = "cancelled"
                dispatch.task.cancel()
                # Returns once the worker call is cancelled (the worker then kills the sandbox).
                await asyncio.wait([dispatch.task], timeout=1.0)
        return self.store.get_experiment(experiment_id)

    @staticmethod
    def _request(exp: orchestrator_pb2.Experiment, dataset: orchestrator_pb2.Dataset | None, worker: WorkerEntry
                 ) -> worker_pb2.RunExperimentRequest:
        """The worker call for ``exp`` on ``worker``; ``dataset``: the one it names (None: unknown)."""
        ref = types_pb2.DatasetRef(name=exp.dataset)
        if dataset is not None and not dataset.builtin:
            ref.images.extend(
                types_pb2.BlobRef(name=img.name, sha256=img.sha256, size_bytes=img.size_bytes)
                for img in dataset.images
            )
        return worker_pb2.RunExperimentRequest(
            experiment_id=exp.experiment_id,
            attempt=exp.attempt,
            agent=exp.agent,
            dataset=ref,
            points=exp.points,
            device=worker.run_device(exp.device),
            timeouts=resolve_timeouts(exp.timeouts, worker.info.default_timeouts),
            keep_reconstructions=exp.keep_reconstructions,
        )

    async def _run(self, dispatch: Dispatch, exp: orchestrator_pb2.Experiment,
                   request: worker_pb2.RunExperimentRequest) -> None:
        started = time.monotonic()
        try:
            await self._run_attempt(dispatch, exp, request)
        except Exception as exc:
            if self.data is None or not self._no_room(exc):
                raise
            # Neither the outcome nor a failure can be stored now; settled when space returns.
            self.data.mark_full()
            self.unstored.add((dispatch.experiment_id, dispatch.attempt))
            self.log.warning("experiment.unstored", experiment_id=dispatch.experiment_id, attempt=dispatch.attempt)
        finally:
            dispatch.worker.running.discard(dispatch.experiment_id)
            self.running.pop(dispatch.experiment_id, None)
            self.wake.set()
            if self.telemetry is not None and not self._stopping:
                self._observe_attempt(dispatch, time.monotonic() - started)

    def _observe_attempt(self, dispatch: Dispatch, elapsed_s: float) -> None:
        """Observes an ended attempt's duration, by the outcome the store now holds."""
        assert self.telemetry is not None
        try:
            exp = self.store.get_experiment(dispatch.experiment_id)
        except Exception:  # noqa: BLE001 - a metric must not break the dispatch loop (a full disk)
            exp = None
        self.telemetry.attempt_ended(elapsed_s, exp, dispatch.attempt)

    async def _run_attempt(self, dispatch: Dispatch, exp: orchestrator_pb2.Experiment,
                           request: worker_pb2.RunExperimentRequest) -> None:
        experiment_id, attempt, worker = dispatch.experiment_id, dispatch.attempt, dispatch.worker
        try:
            finished = False
            dispatch.digests = frozenset(
                [f.sha256 for f in request.agent.files] + [i.sha256 for i in request.dataset.images])
            # A worker that hangs while still sending heartbeats must not hold the experiment forever.
            deadline_s = request.timeouts.experiment_s + self.call_slack_s
            call = worker.stub.RunExperiment(request, timeout=deadline_s)
            try:
                kept: dict[tuple[int, int], types_pb2.BlobRef] = {}  # (point, image) -> its stored PNG
                async for response in call:
                    if response.reconstruction_png and response.event.HasField("image_result"):
                        await self._keep_reconstruction(exp, response, kept, attempt)
                    if response.event.HasField("result"):
                        for point in response.event.result.points:
                            for image in point.images:
                                if (image.point_index, image.image_index) in kept:
                                    image.reconstruction.CopyFrom(kept[image.point_index, image.image_index])
                    finished = await self._record(experiment_id, attempt, response.event)
                    if finished:
                        self.kept_bytes.pop(experiment_id, None)
                        break
            except BaseException:
                # Abandoned here (an event that could not be stored on a full disk, an orchestrator
                # error, a cancellation): the worker must stop too, or its slot stays taken while
                # this orchestrator counts it free.
                call.cancel()
                raise
            if not finished:
                await self.ledger.requeue_or_fail(
                    experiment_id, attempt, f"worker {worker.worker_id} ended the stream without a terminal event"
                )
        except asyncio.CancelledError:
            if self._stopping:
                raise  # the orchestrator is shutting down: the RUNNING row is recovered at the next start
            if dispatch.stop_reason != "cancelled":
                reason = dispatch.stop_reason or f"the call to worker {worker.worker_id} was interrupted"
                await self.ledger.requeue_or_fail(experiment_id, attempt, reason)
        except grpc.aio.AioRpcError as exc:
            await self._call_failed(dispatch, exc)
        except Exception as exc:  # noqa: BLE001 - the experiment must still end in a terminal state
            if self._no_room(exc):
                raise  # nothing can be stored: _run settles it when space returns
            self.log.exception("experiment.internal_error", experiment_id=experiment_id, worker_id=worker.worker_id,
                               attempt=attempt)
            error = errors.InternalError(f"orchestrator error: {type(exc).__name__}: {exc}").to_proto()
            await self.ledger.failed(experiment_id, attempt, error)

    async def _keep_reconstruction(self, exp: orchestrator_pb2.Experiment,
                                   response: worker_pb2.RunExperimentResponse,
                                   kept: dict[tuple[int, int], types_pb2.BlobRef], attempt: int) -> None:
        """Stores a decoded image the worker sent as a blob owned like the experiment, and refers to
        it from the event's image result and (through ``kept``) from the final result; the PNG
        bytes themselves are never stored in events. An image past the experiment's budget
        (:attr:`reconstruction_budget_bytes`) is not stored; a system log line says so.

        Raises:
            OSError: the blob could not be written (a full disk: handled as for any event).
        """
        result = response.event.image_result
        if result.image_index >= exp.keep_reconstructions or self.blobs is None:
            return  # not asked for: a worker cannot make the orchestrator store more than the owner wanted
        size = len(response.reconstruction_png)
        used = self.kept_bytes.get(exp.experiment_id, 0)
        if used + size > self.reconstruction_budget_bytes:
            await self.ledger.append(exp.experiment_id, experiment_pb2.ExperimentEvent(log=experiment_pb2.LogLine(
                stream=experiment_pb2.LOG_STREAM_SYSTEM, phase=types_pb2.PHASE_METRICS,
                text=f"reconstruction of {result.image_name} at point {result.point_index + 1} not kept: "
                     f"its PNG has {size} bytes and this experiment keeps at most "
                     f"{self.reconstruction_budget_bytes} bytes of them ({used} kept)")),
                only_if_state={RUNNING}, only_if_attempt=attempt)
            return
        self.kept_bytes[exp.experiment_id] = used + size
        digest = self.blobs.put(response.reconstruction_png)
        self.store.add_blob_owner(digest, exp.owner)
        result.reconstruction.CopyFrom(types_pb2.BlobRef(
            name=f"reconstruction-p{result.point_index}-i{result.image_index}.png", sha256=digest,
            size_bytes=len(response.reconstruction_png)))
        kept[result.point_index, result.image_index] = result.reconstruction

    async def _record(self, experiment_id: str, attempt: int, event: experiment_pb2.ExperimentEvent) -> bool:
        """Stores one worker event; returns True when it ended the experiment."""
        kind = event.WhichOneof("event")
        if kind == "result":
            await self.ledger.succeeded(experiment_id, attempt, event)
            return True
        if kind == "error":
            if event.error.retryable:
                await self.ledger.requeue_or_fail(
                    experiment_id, attempt, f"retryable error: {errors.describe(event.error)}", final_error=event.error
                )
            else:
                await self.ledger.failed(experiment_id, attempt, event.error)
            return True
        await self.ledger.append(experiment_id, event, only_if_state={RUNNING}, only_if_attempt=attempt)
        return False

    async def _call_failed(self, dispatch: Dispatch, exc: grpc.aio.AioRpcError) -> None:
        experiment_id, attempt, worker = dispatch.experiment_id, dispatch.attempt, dispatch.worker
        code = exc.code()
        refusal = from_rpc_error(exc)
        if refusal.reason == errors.REASON_WORKER_DRAINING and worker.draining:
            # A deliberate stop, not a loss: the worker drains (it called DrainWorker on itself at
            # SIGTERM, or an admin drained it) and refused the experiment or stopped it at the end of
            # its grace period. The experiment runs again elsewhere without losing an attempt (a few
            # times at most: Ledger.requeue_stopped).
            await self.ledger.requeue_stopped(experiment_id, attempt, f"worker {worker.worker_id} is draining: "
                                              f"{exc.details()}")
        elif refusal.reason == errors.REASON_WORKER_DRAINING:
            # A drain this orchestrator was never told of: no more work goes to the worker, but the
            # refusal is not trusted to spare the attempt (a hostile worker would requeue forever).
            worker.draining = True
            await self.ledger.requeue_or_fail(experiment_id, attempt, f"worker {worker.worker_id} says it drains "
                                              f"but never announced it (DrainWorker): {exc.details()}")
        elif isinstance(refusal, errors.ResourceExhausted) and refusal.reason == errors.REASON_NO_FREE_SLOT:
            # Its slots are taken by calls this orchestrator did not make (direct Encode/Decode):
            # no more dispatches to it until its next heartbeat says how many are in use.
            worker.refused_for_lack_of_slot(max(self.heartbeat_timeout_s, 1.0))
            await self.ledger.back_to_queue(experiment_id, attempt, f"worker {worker.worker_id} had no free slot")
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            self.mark_lost(worker, f"its RunExperiment stream broke ({code.name}: {exc.details()})")
            await self.ledger.requeue_or_fail(experiment_id, attempt, worker.lost_reason)
        else:
            error = errors.InternalError(
                f"worker {worker.worker_id} refused the experiment: {code.name}: {exc.details()}",
                phase=types_pb2.PHASE_SETUP,
            ).to_proto()
            await self.ledger.requeue_or_fail(experiment_id, attempt, error.message, final_error=error)


__all__ = ["Dispatch", "FairShare", "Scheduler"]
