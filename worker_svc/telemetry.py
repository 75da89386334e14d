"""The worker's Prometheus metrics (``codecbench_worker_*``; the table is in docs/metrics.md).

Sandbox start time (by role), experiments run (by outcome and error kind), slots in use and in
all, whether the worker drains, and RPC counts and durations
(:class:`codecbench.telemetry.RpcMetrics`). The slot gauges are read at scrape time from the
servicer (plain integers, read without a lock: a scrape sees one consistent value of each).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from codecbench import telemetry
from codecbench.v1 import sandbox_pb2

SUBSYSTEM = "worker"
#: Buckets (seconds) of a sandbox start: a fork of the warm template (~15 ms) to a fresh interpreter (~3 s).
START_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Outcome labels of ``experiments_total`` besides succeeded and failed.
CANCELLED = "cancelled"  # the orchestrator cancelled the call (a user's cancel, a lost link)
DRAINED = "drained"  # stopped at the end of the worker's drain grace period; requeued by the orchestrator


class WorkerTelemetry:
    """The worker's registry and metrics.

    Args:
        registry: a registry of its own (default: a new one; never the library's global registry).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rpcs = telemetry.RpcMetrics(self.registry, SUBSYSTEM)
        self.sandbox_start = Histogram(
            "sandbox_start_seconds", "Time to start one sandboxed agent process (before the agent is imported), by "
            "role", ["role"], namespace=telemetry.NAMESPACE, subsystem=SUBSYSTEM, registry=self.registry,
            buckets=START_BUCKETS_S)
        self.experiments = Counter(
            "experiments", "Experiments (RunExperiment calls) that ended here, by outcome (succeeded, failed, "
            "cancelled, drained) and error kind (none unless failed)", ["outcome", "error_kind"],
            namespace=telemetry.NAMESPACE, subsystem=SUBSYSTEM, registry=self.registry)
        self.slots_in_use = Gauge("slots_in_use", "Slots taken by experiments and direct Encode/Decode calls",
                                  namespace=telemetry.NAMESPACE, subsystem=SUBSYSTEM, registry=self.registry)
        self.slots = Gauge("slots", "Slots of this worker (--slots)", namespace=telemetry.NAMESPACE,
                           subsystem=SUBSYSTEM, registry=self.registry)
        self.draining = Gauge("draining", "1 while the worker drains (SIGTERM): it takes no new work",
                              namespace=telemetry.NAMESPACE, subsystem=SUBSYSTEM, registry=self.registry)

    def sandbox_started(self, role: sandbox_pb2.SandboxRole.ValueType, seconds: float) -> None:
        """Observes one sandbox start (the hook of :class:`worker_svc.sandboxed_agent.SandboxSettings`)."""
        name = sandbox_pb2.SandboxRole.Name(role).removeprefix("SANDBOX_ROLE_").lower()
        self.sandbox_start.labels(name).observe(seconds)

    def watch(self, slots: int, in_use: Callable[[], int], draining: Callable[[], bool]) -> None:
        """Makes the slot and drain gauges read the servicer's state at each scrape."""
        self.slots.set(slots)
        self.slots_in_use.set_function(lambda: float(in_use()))
        self.draining.set_function(lambda: 1.0 if draining() else 0.0)


__all__ = ["CANCELLED", "DRAINED", "WorkerTelemetry"]
