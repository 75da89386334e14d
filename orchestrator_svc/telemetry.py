"""The orchestrator's Prometheus metrics (``codecbench_orchestrator_*``; the table is in docs/metrics.md).

Two kinds:

- read from the store and the worker registry by :class:`LiveState`, a custom collector, so they
  are true (no gauge kept in step by hand that a missed code path could leave wrong): experiments by
  state, queue depth and age of the oldest queued experiment (in all and per owner), workers by
  state, slots in use and in all, heartbeat age per worker. They come from a snapshot that a task
  refreshes every ``refresh_s`` (default :data:`REFRESH_S`): the registry is read on the event loop
  (where it is written) and the store's GROUP BY queries run in a thread, so a scrape reads the last
  snapshot and never touches the store or the loop (a million rows and sixteen concurrent scrapes
  once made gRPC health time out). A standby (PostgreSQL active-standby) exports none of the
  store-derived gauges, which would double the leader's in a sum; ``leader`` says which one leads;
- observed as things happen, by the scheduler: dispatch latency (queued -> dispatched) and the
  duration of each attempt by outcome and error kind.

RPC counts and durations come from :class:`codecbench.telemetry.RpcMetrics`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from codecbench import logs, telemetry
from codecbench.states import state_name
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2
from orchestrator_svc.store import Store
from orchestrator_svc.workers import WorkerRegistry

SUBSYSTEM = "orchestrator"
#: Seconds between two refreshes of the live-state snapshot (the store's GROUP BY queries).
REFRESH_S = 5.0
PREFIX = f"{telemetry.NAMESPACE}_{SUBSYSTEM}_"
#: The outcome label of an attempt that went back to the queue (lost worker, drain, retryable error).
REQUEUED = "requeued"


def error_kind_label(kind: errors_pb2.ErrorKind.ValueType) -> str:
    """``ERROR_KIND_TIMEOUT`` -> ``"TIMEOUT"``; no error -> ``"none"``."""
    if kind == errors_pb2.ERROR_KIND_UNSPECIFIED:
        return "none"
    return errors_pb2.ErrorKind.Name(kind).removeprefix("ERROR_KIND_")


@dataclass(frozen=True)
class _Snapshot:
    """The live state as of one refresh; scrapes read it (replaced whole, never changed in place)."""

    leading: bool
    # None: not read (a standby, or the store query failed or has not answered yet).
    states: dict[int, int] | None
    queued: dict[str, tuple[int, float]] | None
    workers: list[tuple[str, str, int, int, float]]  # id, state, slots in use, slots, last heartbeat
    now: float


class LiveState(Collector):
    """Collects the store's and the registry's figures from a snapshot (module docstring).

    Args:
        store: the experiments.
        registry: the workers.
        leading: whether this orchestrator leads (a standby exports no store-derived gauge).
        refresh_s: seconds between two refreshes of the snapshot.
    """

    def __init__(self, store: Store, registry: WorkerRegistry, leading: Callable[[], bool],
                 refresh_s: float = REFRESH_S) -> None:
        self.store = store
        self.registry = registry
        self.leading = leading
        self.refresh_s = refresh_s
        self.snapshot = _Snapshot(leading(), None, None, [], time.time())
        self._task: asyncio.Task[None] | None = None
        self.log = logs.get_logger("telemetry")

    def start(self) -> None:
        """Starts refreshing the snapshot every ``refresh_s`` (on the running event loop)."""
        self._task = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        """Stops refreshing (a store query in its thread finishes on its own)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> None:
        """Takes a new snapshot: the registry here, on the loop; the store in a thread."""
        workers = [
            (w.worker_id, orchestrator_pb2.WorkerState.Name(w.state).removeprefix("WORKER_STATE_"), w.slots_in_use,
             w.info.slots, w.last_heartbeat)
            for w in self.registry.workers.values()
        ]
        leading = self.leading()
        states, queued = None, None
        if leading:
            try:
                states, queued = await asyncio.to_thread(self._read_store)
            except Exception as exc:  # noqa: BLE001 - a failed read leaves the gauges out, never the scrape
                self.log.warning("telemetry.refresh_failed", error=str(exc))
        self.snapshot = _Snapshot(leading, states, queued, workers, time.time())

    def _read_store(self) -> tuple[dict[int, int], dict[str, tuple[int, float]]]:
        return self.store.state_counts(), self.store.oldest_queued()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of the last snapshot (called by the registry at each scrape, in its HTTP thread)."""
        snap = self.snapshot
        yield GaugeMetricFamily(PREFIX + "leader", "1 when this orchestrator leads (always on SQLite), 0 on a "
                                "standby, which exports no store-derived gauge", value=1 if snap.leading else 0)
        if snap.leading and snap.states is not None and snap.queued is not None:
            yield from self._store_gauges(snap.states, snap.queued, snap.now)
        yield from self._worker_gauges(snap.workers, snap.now)

    @staticmethod
    def _store_gauges(states: dict[int, int], queued: dict[str, tuple[int, float]],
                      now: float) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(PREFIX + "experiments", "Experiments in each state (from the store)",
                                     labels=["state"])
        for value in experiment_pb2.ExperimentState.values():
            if value != experiment_pb2.EXPERIMENT_STATE_UNSPECIFIED:
                by_state.add_metric([state_name(value)], states.get(value, 0))
        yield by_state
        yield GaugeMetricFamily(PREFIX + "queue_depth", "QUEUED experiments",
                                value=sum(count for count, _ in queued.values()))
        oldest = min((created for _, created in queued.values()), default=None)
        yield GaugeMetricFamily(PREFIX + "oldest_queued_age_seconds",
                                "Age (since creation) of the oldest QUEUED experiment; 0 when none is queued",
                                value=now - oldest if oldest is not None else 0.0)
        depth = GaugeMetricFamily(PREFIX + "owner_queue_depth", "QUEUED experiments per owner", labels=["owner"])
        age = GaugeMetricFamily(PREFIX + "owner_oldest_queued_age_seconds",
                                "Age (since creation) of each owner's oldest QUEUED experiment", labels=["owner"])
        for owner, (count, created) in sorted(queued.items()):
            depth.add_metric([owner], count)
            age.add_metric([owner], now - created)
        yield depth
        yield age

    @staticmethod
    def _worker_gauges(snap_workers: list[tuple[str, str, int, int, float]],
                       now: float) -> Iterator[GaugeMetricFamily]:
        workers = GaugeMetricFamily(PREFIX + "workers", "Registered workers in each state", labels=["state"])
        for worker_state in orchestrator_pb2.WorkerState.values():
            if worker_state != orchestrator_pb2.WORKER_STATE_UNSPECIFIED:
                name = orchestrator_pb2.WorkerState.Name(worker_state).removeprefix("WORKER_STATE_")
                workers.add_metric([name], sum(1 for w in snap_workers if w[1] == name))
        yield workers
        in_use = GaugeMetricFamily(PREFIX + "worker_slots_in_use", "Slots in use per worker (at least what its "
                                   "last heartbeat reported)", labels=["worker_id", "state"])
        total = GaugeMetricFamily(PREFIX + "worker_slots", "Slots per worker", labels=["worker_id", "state"])
        beat = GaugeMetricFamily(PREFIX + "worker_heartbeat_age_seconds", "Time since each worker's last heartbeat",
                                 labels=["worker_id", "state"])
        for worker_id, state, used, slots, last in sorted(snap_workers):
            in_use.add_metric([worker_id, state], used)
            total.add_metric([worker_id, state], slots)
            beat.add_metric([worker_id, state], max(now - last, 0.0))
        yield in_use
        yield total
        yield beat


class OrchestratorTelemetry:
    """The orchestrator's registry and the figures the scheduler observes.

    Args:
        registry: a registry of its own (default: a new one; never the library's global registry).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # The collector of the live state, once watch() added it.
        self.live: LiveState | None = None
        self.rpcs = telemetry.RpcMetrics(self.registry, SUBSYSTEM)
        self.dispatch_latency = Histogram(
            "dispatch_latency_seconds", "Time an experiment waited in the queue before its dispatch (from its "
            "creation, or from its return to the queue)", namespace=telemetry.NAMESPACE, subsystem=SUBSYSTEM,
            registry=self.registry, buckets=telemetry.LONG_BUCKETS_S)
        self.duration = Histogram(
            "experiment_duration_seconds", "Time from an attempt's dispatch to its end, by outcome (succeeded, "
            "failed, cancelled, requeued) and error kind (none when it succeeded)", ["outcome", "error_kind"],
            namespace=telemetry.NAMESPACE, subsystem=SUBSYSTEM, registry=self.registry,
            buckets=telemetry.LONG_BUCKETS_S)

    def watch(self, store: Store, registry: WorkerRegistry, leading: Callable[[], bool],
              refresh_s: float = REFRESH_S) -> LiveState:
        """Adds the collector of the live state (:class:`LiveState`) and starts its refreshes (on
        the running event loop; :meth:`LiveState.stop` ends them)."""
        self.live = LiveState(store, registry, leading, refresh_s)
        self.registry.register(self.live)
        self.live.start()
        return self.live

    def attempt_ended(self, elapsed_s: float, exp: orchestrator_pb2.Experiment | None, attempt: int) -> None:
        """Observes one attempt's duration; its outcome is read from the experiment after it.

        Args:
            elapsed_s: seconds from the dispatch to the end of the worker call.
            exp: the experiment as stored after the attempt (None: unknown, counted as requeued).
            attempt: the attempt that ended.
        """
        if exp is None or exp.attempt != attempt or exp.state in (experiment_pb2.EXPERIMENT_STATE_QUEUED,
                                                                  experiment_pb2.EXPERIMENT_STATE_RUNNING):
            outcome, kind = REQUEUED, "none"
        else:
            outcome, kind = state_name(exp.state).lower(), error_kind_label(exp.error.kind)
        self.duration.labels(outcome, kind).observe(max(elapsed_s, 0.0))


__all__ = ["LiveState", "OrchestratorTelemetry", "error_kind_label"]
