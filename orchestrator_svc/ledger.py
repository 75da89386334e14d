"""Every change of an experiment's fate goes through here: stored first, then announced.

The ledger appends an event (with its state change) to the store in one transaction, and only
then wakes the watchers of that experiment. Each terminal transition is conditional on the
experiment still being RUNNING (or QUEUED) at the expected attempt, so exactly one terminal
state wins: a cancelled experiment never turns into a success, a late event of a lost attempt is
dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence

from codecbench import errors
from codecbench.states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL_STATES
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2, types_pb2
from orchestrator_svc.store import Append, Dispatched, Store, one_more_attempt, requeued_deadline

#: The most times one experiment goes back to the queue for a worker's drain without spending an
#: attempt (:meth:`Ledger.requeue_stopped`); further drains count like any lost attempt.
MAX_UNCOUNTED_DRAIN_REQUEUES = 3
#: How the StateChange reason of such a requeue begins (what :meth:`Ledger.uncounted_drain_requeues` counts).
UNCOUNTED_DRAIN_MARK = "not counted against max_attempts: "


class Ledger:
    """The store plus per-experiment wake-ups for watchers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._latest: dict[str, int] = {}
        self._conditions: dict[str, asyncio.Condition] = defaultdict(asyncio.Condition)
        # Counts every announced event (and, apart, every created experiment): watchers of many
        # experiments wait for the first to move and re-read their selection when the second does.
        self.generation = 0
        self.created = 0
        self._any = asyncio.Condition()
        # When (Unix s) each QUEUED experiment entered the queue, as this process saw it (created or
        # sent back); the dispatch latency metric reads it. Missing after an orchestrator restart:
        # then the create time stands in.
        self.queued_since: dict[str, float] = {}
        # Events appended and not yet committed, with their callers' futures (see append).
        self._pending: list[tuple[Append, asyncio.Future[experiment_pb2.ExperimentEvent | None]]] = []
        self._orphans: set[asyncio.Future[None]] = set()  # announcements whose caller was cancelled

    async def _announce(self, event: experiment_pb2.ExperimentEvent) -> None:
        self._latest[event.experiment_id] = event.sequence
        condition = self._conditions[event.experiment_id]
        async with condition:
            condition.notify_all()
        self.generation += 1
        async with self._any:
            self._any.notify_all()

    async def append(
        self,
        experiment_id: str,
        event: experiment_pb2.ExperimentEvent,
        transition: dict[str, object] | None = None,
        only_if_state: set[experiment_pb2.ExperimentState.ValueType] | None = None,
        only_if_attempt: int | None = None,
    ) -> experiment_pb2.ExperimentEvent | None:
        """Stores, then announces. Returns the stored event, or None when the condition failed.

        Group commit: the events appended during one turn of the event loop (results and progress
        of many running experiments arrive together) are stored in one transaction
        (:meth:`Store.append_many`) at the start of the next turn; each caller resumes once its
        event is committed.

        Raises:
            LookupError: no experiment has this id.
            Exception: the store's, when the transaction failed (e.g. a full disk).
        """
        future: asyncio.Future[experiment_pb2.ExperimentEvent | None] = asyncio.get_running_loop().create_future()
        self._pending.append((Append(experiment_id, event, transition, only_if_state, only_if_attempt), future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._commit_pending)
        try:
            stored = await future
        except asyncio.CancelledError:
            # The caller went away after its event was stored: its watchers must still hear of it.
            if future.done() and not future.cancelled() and future.exception() is None:
                result = future.result()
                if result is not None:
                    self._orphans.add(asyncio.ensure_future(self._announce(result)))
            raise
        if stored is not None:
            await self._announce(stored)
        return stored

    def _commit_pending(self) -> None:
        """Stores the events appended since the last commit, in one transaction, and wakes their callers."""
        batch, self._pending = self._pending, []
        try:
            outcomes = self.store.append_many([append for append, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each caller gets the store's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.cancelled():
                if outcome is not None and not isinstance(outcome, LookupError):
                    self._orphans.add(asyncio.ensure_future(self._announce(outcome)))
            elif isinstance(outcome, LookupError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._orphans = {task for task in self._orphans if not task.done()}

    async def wait_beyond(self, experiment_id: str, sequence: int, last_stored: int) -> None:
        """Returns once an event with a sequence above ``sequence`` has been stored."""
        self._latest[experiment_id] = max(self._latest.get(experiment_id, 0), last_stored)
        condition = self._conditions[experiment_id]
        async with condition:
            await condition.wait_for(lambda: self._latest.get(experiment_id, 0) > sequence)

    def latest(self, experiment_id: str) -> int:
        """The sequence number of the experiment's newest event announced by this process (0: none yet)."""
        return self._latest.get(experiment_id, 0)

    async def wait_any(self, generation: int) -> None:
        """Returns once any experiment's event was announced after :attr:`generation` was ``generation``."""
        async with self._any:
            await self._any.wait_for(lambda: self.generation > generation)

    # -- transitions -------------------------------------------------------------------------

    async def _move(
        self,
        experiment_id: str,
        from_state: experiment_pb2.ExperimentState.ValueType,
        attempt: int,
        to_state: experiment_pb2.ExperimentState.ValueType,
        new_attempt: int,
        reason: str,
        worker_id: str = "",
        more_columns: dict[str, object] | None = None,
    ) -> bool:
        """A StateChange event plus the matching columns (and ``more_columns``), if the experiment is
        still in ``from_state`` at ``attempt``."""
        stored = await self.append(
            experiment_id,
            experiment_pb2.ExperimentEvent(
                attempt=new_attempt,
                state_change=experiment_pb2.StateChange(
                    state=to_state, attempt=new_attempt, worker_id=worker_id, reason=reason
                ),
            ),
            {
                "state": to_state,
                "attempt": new_attempt,
                "worker_id": worker_id,
                "start_time": time.time() if to_state == RUNNING else None,
                **(more_columns or {}),
            },
            only_if_state={from_state},
            only_if_attempt=attempt,
        )
        if stored is not None and to_state == QUEUED:
            self.queued_since[experiment_id] = time.time()
        elif stored is not None and from_state == QUEUED:
            self.queued_since.pop(experiment_id, None)
        return stored is not None

    async def create(
        self,
        exp: orchestrator_pb2.Experiment,
        cache_key: str | None = None,
        more_events: Sequence[experiment_pb2.ExperimentEvent] = (),
        fingerprint: str | None = None,
        no_cache: bool = False,
    ) -> None:
        """Stores a new experiment together with its first event, the StateChange to QUEUED, and
        ``more_events`` (one transaction), then announces the last event.

        Args:
            exp: QUEUED, or finished with an outcome copied from the result cache.
            cache_key: its result-cache key (None: it takes no part in the cache).
            more_events: a cached copy's events after "created" (a note, then the terminal event).
            fingerprint: the spec's fingerprint, stored with its request id.
            no_cache: it was sent with no_cache (a failure of it is never reused).

        Raises:
            DuplicateRequest: the owner already sent the same non-empty request_id.
        """
        stored = self.store.create_experiment(
            exp,
            experiment_pb2.ExperimentEvent(
                attempt=exp.attempt,
                state_change=experiment_pb2.StateChange(state=QUEUED, attempt=exp.attempt, reason="created"),
            ),
            cache_key,
            more_events,
            fingerprint,
            no_cache,
        )
        self.created += 1
        if exp.state == QUEUED:
            self.queued_since[exp.experiment_id] = time.time()
        await self._announce(stored)

    async def dispatched(self, experiment_id: str, attempt: int, worker_id: str) -> bool:
        """QUEUED -> RUNNING on ``worker_id``: the scheduler's claim; False when someone else moved it
        first, or is moving it now (:meth:`Store.dispatch_many`: on PostgreSQL two orchestrators on one
        database never both dispatch it)."""
        return bool(await self.dispatched_many([Dispatched(experiment_id, attempt, worker_id)]))

    async def dispatched_many(
        self, moves: Sequence[Dispatched]
    ) -> list[tuple[orchestrator_pb2.Experiment, experiment_pb2.ExperimentEvent]]:
        """QUEUED -> RUNNING for a scheduling round's experiments, stored in one transaction, then
        announced; returns the experiments moved (see :meth:`Store.dispatch_many`)."""
        moved = self.store.dispatch_many(moves, time.time())
        for _, event in moved:
            await self._announce(event)
        return moved

    async def succeeded(self, experiment_id: str, attempt: int, event: experiment_pb2.ExperimentEvent) -> bool:
        """RUNNING -> SUCCEEDED with the worker's result ``event``; False when the attempt is no longer current."""
        stored = await self.append(
            experiment_id,
            event,
            {"state": SUCCEEDED, "result": event.result, "end_time": time.time()},
            only_if_state={RUNNING},
            only_if_attempt=attempt,
        )
        return stored is not None

    async def failed(
        self,
        experiment_id: str,
        attempt: int,
        error: errors_pb2.Error,
        from_states: set[experiment_pb2.ExperimentState.ValueType] | None = None,
    ) -> bool:
        """``from_states`` (default RUNNING) -> FAILED, or CANCELLED for a CANCELLED error; False when
        the experiment is no longer in those states at ``attempt``."""
        state = CANCELLED if error.kind == errors_pb2.ERROR_KIND_CANCELLED else FAILED
        stored = await self.append(
            experiment_id,
            experiment_pb2.ExperimentEvent(attempt=attempt, error=error),
            {"state": state, "error": error, "end_time": time.time()},
            only_if_state=from_states or {RUNNING},
            only_if_attempt=attempt,
        )
        if stored is not None:
            self.queued_since.pop(experiment_id, None)
        return stored is not None

    async def requeue_or_fail(
        self, experiment_id: str, attempt: int, reason: str, final_error: errors_pb2.Error | None = None
    ) -> None:
        """Sends a RUNNING experiment back to the queue with ``attempt + 1``; past its attempt
        limit it fails with ``final_error`` (default: WORKER_LOST naming the reason) instead."""
        exp = self.store.get_experiment(experiment_id)
        if exp is None or exp.state in TERMINAL_STATES:
            return
        if attempt >= exp.max_attempts:
            error = errors_pb2.Error()
            error.CopyFrom(final_error or errors.WorkerLost(reason, phase=types_pb2.PHASE_QUEUE).to_proto())
            error.message += f" (attempt {attempt} of {exp.max_attempts}, no attempts left)"
            await self.failed(experiment_id, attempt, error, {RUNNING, QUEUED})
            return
        # Its queue timeout runs again from now: the wait for a worker starts over.
        await self._move(experiment_id, RUNNING, attempt, QUEUED, attempt + 1, reason,
                         more_columns={"queue_deadline": requeued_deadline(time.time())})

    async def requeue_stopped(self, experiment_id: str, attempt: int, reason: str) -> bool:
        """Sends a RUNNING experiment that its worker stopped on purpose (it drains, and the grace
        period ran out) back to the queue with ``attempt + 1``, without spending one of its attempts:
        ``max_attempts`` grows by one too, so a rolling upgrade never fails an experiment. The new
        attempt number still fences off any late event of the stopped one.

        At most :data:`MAX_UNCOUNTED_DRAIN_REQUEUES` times per experiment (counted from its stored
        events, so across orchestrator restarts too): past that a drain counts like any loss
        (:meth:`requeue_or_fail`), so no worker, hostile or flapping, can requeue an experiment forever.

        Returns:
            False when the experiment was no longer RUNNING at ``attempt``, or the drain was counted.
        """
        if self.uncounted_drain_requeues(experiment_id) >= MAX_UNCOUNTED_DRAIN_REQUEUES:
            await self.requeue_or_fail(experiment_id, attempt, f"{reason} (counted: the experiment already went back "
                                       f"to the queue {MAX_UNCOUNTED_DRAIN_REQUEUES} times for drains)")
            return False
        return await self._move(experiment_id, RUNNING, attempt, QUEUED, attempt + 1, UNCOUNTED_DRAIN_MARK + reason,
                                more_columns={"queue_deadline": requeued_deadline(time.time()),
                                              "max_attempts": one_more_attempt()})

    def uncounted_drain_requeues(self, experiment_id: str) -> int:
        """How many times the experiment went back to the queue for a drain without spending an attempt."""
        return sum(1 for event in self.store.events_after(experiment_id, -1)
                   if event.WhichOneof("event") == "state_change" and event.state_change.state == QUEUED
                   and event.state_change.reason.startswith(UNCOUNTED_DRAIN_MARK))

    async def back_to_queue(self, experiment_id: str, attempt: int, reason: str) -> None:
        """Returns a RUNNING experiment to the queue at the same attempt (it never started)."""
        await self._move(experiment_id, RUNNING, attempt, QUEUED, attempt, reason)
