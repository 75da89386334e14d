"""Figure 5: the orchestrator with a large queue and many workers, and many watchers.

The workers are fakes in this process that speak the real worker protocol: each is a
``grpc.aio`` server implementing ``codecbench.v1.WorkerService`` whose ``RunExperiment`` answers
at once with one result event, registered through ``RegisterWorker`` with this code's build id
and kept alive by ``Heartbeat`` calls. The orchestrator is a child process with its own data
directory (its peak RSS is read from /proc). Phases:

1. **submit** N experiments with no worker registered (submission rate, per-call latency);
2. **backlog**: register W fakes and wait until the queue is empty (dispatch rate; create → start);
3. **live**: with the fakes up, submit L more (create → start is now the scheduler's latency);
4. **watch a finished experiment** with K concurrent ``WatchExperiment`` streams;
5. **watch a running experiment** (the fakes now stream progress events for ~2 s first) with K
   streams: every stream must get every event; delivery lag of the terminal event.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from bench import harness, profiling
from bench.harness import BenchContext, System
from bench.report import Figure
from codecbench import build, bundles, datasets, local, rpc, states
from codecbench.local import LocalService
from codecbench.v1 import (
    experiment_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    types_pb2,
    worker_pb2,
    worker_pb2_grpc,
)
from worker_svc.registration import OrchestratorLink

NUMBER = 5
TITLE = "Orchestrator scale (queue, simulated workers, watchers)"
TIMEOUT_S = 600.0  # full size; --quick halves it
QUEUED = experiment_pb2.EXPERIMENT_STATE_QUEUED
RUNNING = experiment_pb2.EXPERIMENT_STATE_RUNNING
SUBMITTERS = 16  # concurrent CreateExperiment calls
WATCH_CHANNELS = 8  # the watchers share this many channels, as a few client processes would
HEARTBEAT_MAX_S = 3600.0


@dataclass
class Behaviour:
    """What every fake worker does with an experiment: ``progress_events`` events ``interval_s``
    apart, then the result."""

    progress_events: int = 0
    interval_s: float = 0.0


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class FakeWorker(worker_pb2_grpc.WorkerServiceServicer):
    """A worker that does no work: the real protocol, an instant (or paced) answer."""

    def __init__(self, info: worker_pb2.WorkerInfo, behaviour: Behaviour) -> None:
        self.info = info
        self.behaviour = behaviour
        self.calls = 0
        self.in_use = 0
        # What OrchestratorLink.register needs of a worker (a RegisteredWorker): the fake answers
        # every call, so the credential it is given is only kept.
        self.orchestrator_credential = ""

    @property
    def servicer(self) -> FakeWorker:
        """Itself: the heartbeat reads ``slots_in_use`` here."""
        return self

    @property
    def guard(self) -> FakeWorker:
        """Itself: registration stores the per-worker credential here."""
        return self

    @property
    def slots_in_use(self) -> int:
        """Experiments the fake is answering now."""
        return self.in_use

    async def GetWorkerInfo(  # noqa: N802 - gRPC method name
        self,
        request: worker_pb2.GetWorkerInfoRequest,
        context: grpc.aio.ServicerContext[worker_pb2.GetWorkerInfoRequest, worker_pb2.GetWorkerInfoResponse],
    ) -> worker_pb2.GetWorkerInfoResponse:
        return worker_pb2.GetWorkerInfoResponse(worker=self.info)

    def _event(self, request: worker_pb2.RunExperimentRequest, sequence: int, **kind: Any
               ) -> worker_pb2.RunExperimentResponse:
        return worker_pb2.RunExperimentResponse(event=experiment_pb2.ExperimentEvent(
            experiment_id=request.experiment_id, sequence=sequence, time=_now(), attempt=request.attempt, **kind,
        ))

    async def RunExperiment(  # noqa: N802
        self,
        request: worker_pb2.RunExperimentRequest,
        context: grpc.aio.ServicerContext[worker_pb2.RunExperimentRequest, worker_pb2.RunExperimentResponse],
    ) -> AsyncIterator[worker_pb2.RunExperimentResponse]:
        self.calls += 1
        self.in_use += 1
        try:
            events = self.behaviour.progress_events
            for i in range(events):
                await asyncio.sleep(self.behaviour.interval_s)
                yield self._event(request, i + 1, progress=experiment_pb2.Progress(
                    phase=types_pb2.PHASE_ENCODE, point_count=1, image_index=i, image_count=events, image_name=f"i{i}",
                ))
            point = request.points[0] if request.points else types_pb2.ParameterPoint()
            result = experiment_pb2.ExperimentResult(
                points=[experiment_pb2.PointResult(
                    point_index=0, params=point, image_count=1, total_bytes=4, bpp=0.01)],
                wall_ms=0.0, worker_id=self.info.worker_id,
            )
            yield self._event(request, events + 1, result=result)
        finally:
            self.in_use -= 1


def _worker_info(index: int, port: int, slots: int) -> worker_pb2.WorkerInfo:
    return worker_pb2.WorkerInfo(
        worker_id=f"fake-{index:03d}-{os.getpid()}", build_id=build.build_id(), protocol_version=build.PROTOCOL_VERSION,
        pid=os.getpid(), host=socket.gethostname(), start_time=_now(),
        devices=[worker_pb2.DeviceInfo(kind=types_pb2.DEVICE_CPU, name="cpu", description="simulated")],
        slots=slots, isolation=types_pb2.ISOLATION_PROCESS, address=f"127.0.0.1:{port}",
    )


@dataclass
class Fleet:
    fakes: list[FakeWorker]
    links: list[OrchestratorLink] = field(default_factory=list)
    heartbeat_failures: list[str] = field(default_factory=list)


async def _heartbeats(fleet: Fleet, interval_s: float) -> None:
    """Heartbeats for every fake each ``interval_s``, with its own credential; a fake the
    orchestrator forgot registers again."""
    for _ in range(int(HEARTBEAT_MAX_S / interval_s)):
        await asyncio.sleep(interval_s)
        replies = await asyncio.gather(
            *(link.stub.Heartbeat(orchestrator_pb2.HeartbeatRequest(worker_id=f.info.worker_id,
                                                                    slots_in_use=f.in_use))
              for f, link in zip(fleet.fakes, fleet.links, strict=True)),
            return_exceptions=True,
        )
        for fake, link, reply in zip(fleet.fakes, fleet.links, replies, strict=True):
            if isinstance(reply, grpc.aio.AioRpcError):
                fleet.heartbeat_failures.append(f"{fake.info.worker_id}: {reply.code().name}")
                if reply.code() == grpc.StatusCode.NOT_FOUND:
                    await link.register(fake)


@asynccontextmanager
async def fake_fleet(
    orchestrator: str, enroll_secret: str, count: int, slots: int, behaviour: Behaviour
) -> AsyncIterator[Fleet]:
    """``count`` fake workers with ``slots`` slots each, enrolled with ``enroll_secret`` (each gets
    its own credential, as a real worker does), READY and heartbeating."""
    servers: list[grpc.aio.Server] = []
    beats: asyncio.Task[None] | None = None
    fleet = Fleet([])
    try:
        for index in range(count):
            server = grpc.aio.server(options=rpc.server_options())
            port = rpc.bind(server, "127.0.0.1", 0)
            # Encode/Decode are left to the generated base, which answers UNIMPLEMENTED (abstract in the stubs).
            fake = FakeWorker(_worker_info(index, port, slots), behaviour)  # type: ignore[abstract]
            worker_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
            await server.start()
            servers.append(server)
            fleet.fakes.append(fake)
        fleet.links = [OrchestratorLink(orchestrator, enroll_secret) for _ in fleet.fakes]
        replies = await asyncio.gather(*(link.register(f) for f, link in zip(fleet.fakes, fleet.links, strict=True)))
        stale = [r.status.state_reason for r in replies if r.status.state == orchestrator_pb2.WORKER_STATE_STALE]
        if stale:
            raise RuntimeError(f"the orchestrator lists the fakes as STALE: {stale[0]}")
        beats = asyncio.create_task(_heartbeats(fleet, replies[0].heartbeat_interval_s or 1.0))
        yield fleet
    finally:
        if beats is not None:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
        await asyncio.gather(*(s.stop(0) for s in servers), return_exceptions=True)
        await asyncio.gather(*(link.close() for link in fleet.links), return_exceptions=True)


async def submit_many(
    system: System, bundle: types_pb2.AgentBundle, count: int
) -> tuple[float, list[float], list[str]]:
    """``count`` CreateExperiment calls from ``SUBMITTERS`` concurrent tasks.

    Returns:
        Wall time in s, the latency of each call in ms, the experiment ids.
    """
    indices = iter(range(count))
    latencies_ms: list[float] = []
    ids: list[str] = []

    async def submitter() -> None:
        for _ in indices:  # shared: the tasks together make exactly ``count`` calls
            start = time.perf_counter()
            exp = await system.client.submit(bundle, dataset=datasets.PHOTOS, no_cache=True)
            latencies_ms.append((time.perf_counter() - start) * 1000.0)
            ids.append(exp.experiment_id)

    start = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    return time.perf_counter() - start, latencies_ms, ids


async def wait_drained(system: System, timeout_s: float) -> None:
    """Waits until no experiment is QUEUED or RUNNING.

    Raises:
        TimeoutError: not within ``timeout_s``.
    """

    async def drained() -> bool:
        page = await system.client.stub.ListExperiments(
            orchestrator_pb2.ListExperimentsRequest(states=[QUEUED, RUNNING], page_size=1)
        )
        return not page.experiments

    await local.eventually(drained, timeout_s, interval_s=0.2, what="every experiment finished")


@dataclass
class WatchOutcome:
    """One WatchExperiment stream: time to its terminal event (s), events received, and the lag of
    the terminal event (receipt − the event's stored time, s)."""

    wall_s: float
    events: int
    terminal_lag_s: float


async def watch_many(
    system: System, experiment_id: str, count: int, timeout_s: float
) -> tuple[float, list[WatchOutcome]]:
    """``count`` concurrent WatchExperiment streams from the first event; returns the wall time until
    all ended and each stream's outcome."""
    token = (system.data_dir / "client.token").read_text().strip()
    channels = [rpc.channel(system.orchestrator.address, token) for _ in range(WATCH_CHANNELS)]
    stubs = [orchestrator_pb2_grpc.OrchestratorServiceStub(c) for c in channels]

    async def one(index: int) -> WatchOutcome:
        start = time.perf_counter()
        events = 0
        lag = float("nan")
        request = orchestrator_pb2.WatchExperimentRequest(experiment_id=experiment_id)
        async for response in stubs[index % len(stubs)].WatchExperiment(request):
            events += 1
            if response.event.WhichOneof("event") in ("result", "error"):
                lag = time.time() - harness.timestamp_s(response.event.time)
                break
        return WatchOutcome(time.perf_counter() - start, events, lag)

    try:
        start = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            outcomes = await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - start, list(outcomes)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def _db_bytes(system: System) -> tuple[int, int]:
    """Sizes of the SQLite file and its write-ahead log, in bytes."""
    folder = system.data_dir / "orchestrator"
    sizes = []
    for name in ("codecbench.db", "codecbench.db-wal"):
        path = folder / name
        sizes.append(path.stat().st_size if path.exists() else 0)
    return sizes[0], sizes[1]


async def watch_running(system: System, bundle: types_pb2.AgentBundle, behaviour: Behaviour, watchers: int
                        ) -> tuple[float, list[WatchOutcome], orchestrator_pb2.Experiment]:
    """Submits one experiment that the fakes run for ~2 s (40 progress events 50 ms apart) and
    follows it with ``watchers`` streams from the moment it is RUNNING.

    Returns:
        The wall time until every stream ended (s), each stream's outcome, the finished experiment.
    """
    behaviour.progress_events, behaviour.interval_s = 40, 0.05
    try:
        exp = await system.client.submit(bundle, dataset=datasets.PHOTOS, no_cache=True)

        async def running() -> bool:
            return (await system.client.get(exp.experiment_id)).state == RUNNING

        await local.eventually(running, 30.0, interval_s=0.01, what="the watched experiment RUNNING")
        wall, outcomes = await watch_many(system, exp.experiment_id, watchers, 120.0)
    finally:
        behaviour.progress_events, behaviour.interval_s = 0, 0.0
    return wall, outcomes, await system.client.get(exp.experiment_id)


def _record_running_watch(fig: Figure, wall: float, outcomes: list[WatchOutcome],
                          final: orchestrator_pb2.Experiment) -> None:
    watchers = len(outcomes)
    complete = sum(1 for o in outcomes if o.events == final.last_sequence)
    fig.add(f"{watchers} watchers of a running experiment: terminal event delivery lag", "ms",
            [o.terminal_lag_s * 1000 for o in outcomes])
    fig.values[f"running experiment: streams that got all {final.last_sequence} events"] = (complete, "streams")
    fig.values["running experiment: all watchers done, from first watch call"] = (wall, "s")


async def _phases(ctx: BenchContext, fig: Figure, system: System) -> None:
    sizes = ctx.sizes
    bundle = bundles.bundle_from_dir(harness.TRIVIAL_AGENT)
    behaviour = Behaviour()
    n, workers = sizes.scale_experiments, sizes.scale_workers

    submit_s, submit_ms, backlog_ids = await submit_many(system, bundle, n)
    fig.add(f"CreateExperiment latency ({SUBMITTERS} concurrent submitters, no workers)", "ms", submit_ms)
    fig.values["submission rate"] = (n / submit_s, "experiments/s")
    rss_after_submit = harness.peak_rss_bytes(system.orchestrator) or 0

    registered = time.perf_counter()
    cpu_at_registration = _cpu_s(system.orchestrator.pid)
    async with fake_fleet(system.orchestrator.address, system.enroll_secret(), workers, sizes.scale_slots,
                          behaviour) as fleet:
        await wait_drained(system, timeout_s=max(60.0, ctx.figure_timeout_s * 0.5))
        backlog_s = time.perf_counter() - registered
        backlog_cpu_s = _cpu_s(system.orchestrator.pid) - cpu_at_registration
        _, live_ms, live_ids = await submit_many(system, bundle, sizes.scale_live)
        await wait_drained(system, timeout_s=120.0)
        finished = {e.experiment_id: e for e in await system.client.list(limit=n + sizes.scale_live + 10)}
        backlog = [finished[i] for i in backlog_ids if i in finished]
        live = [finished[i] for i in live_ids if i in finished]
        fig.values["dispatch rate, backlog (registration → queue empty)"] = (len(backlog) / backlog_s, "experiments/s")
        starts = [harness.timestamp_s(e.start_time) for e in backlog]
        ends = [harness.timestamp_s(e.end_time) for e in backlog]
        fig.values["dispatch rate, backlog (first start → last end, orchestrator clock)"] = (
            len(backlog) / max(max(ends) - min(starts), 1e-9), "experiments/s")
        fig.values["orchestrator CPU per experiment, backlog (registration → queue empty)"] = (
            backlog_cpu_s / max(len(backlog), 1) * 1000, "ms")
        fig.values["dispatch capacity of the orchestrator on one free core (1 / CPU per experiment)"] = (
            len(backlog) / max(backlog_cpu_s, 1e-9), "experiments/s")
        fig.add(f"backlog of {n}: create → start (queue wait)", "s",
                [harness.timestamp_s(e.start_time) - harness.timestamp_s(e.create_time) for e in backlog])
        fig.add(f"live ({sizes.scale_live} submitted with workers up): create → start", "ms",
                [(harness.timestamp_s(e.start_time) - harness.timestamp_s(e.create_time)) * 1000 for e in live])
        fig.add(f"live: CreateExperiment latency ({SUBMITTERS} concurrent submitters)", "ms", live_ms)
        succeeded = sum(1 for e in [*backlog, *live] if e.state == states.SUCCEEDED)
        fig.headline += ["submission rate", "dispatch rate, backlog (registration → queue empty)",
                         "dispatch capacity of the orchestrator on one free core (1 / CPU per experiment)"]
        fig.values["experiments SUCCEEDED / submitted"] = (succeeded / (n + sizes.scale_live), "fraction")
        fig.values["experiments that needed more than one attempt"] = (
            sum(1 for e in [*backlog, *live] if e.attempt > 1), "experiments")
        fig.values["fake workers / slots each"] = (workers, f"workers × {sizes.scale_slots} slots")

        watched = backlog[-1].experiment_id
        wall, outcomes = await watch_many(system, watched, sizes.scale_watchers, 120.0)
        fig.add(f"{sizes.scale_watchers} watchers of a finished experiment: time to the terminal event", "ms",
                [o.wall_s * 1000 for o in outcomes])
        fig.values["finished experiment: all watchers done"] = (wall, "s")
        _record_running_watch(fig, *await watch_running(system, bundle, behaviour, sizes.scale_watchers))
        if fleet.heartbeat_failures:
            fig.notes.append(f"{len(fleet.heartbeat_failures)} heartbeat calls failed, e.g. "
                             f"{fleet.heartbeat_failures[0]}.")

    _rss_and_db(fig, system.orchestrator, system, rss_after_submit, n + sizes.scale_live + 1)


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, s) a process has used so far, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_and_db(fig: Figure, orchestrator: LocalService, system: System, rss_after_submit: int, total: int) -> None:
    peak = harness.peak_rss_bytes(orchestrator) or 0
    db, wal = _db_bytes(system)
    fig.values["orchestrator peak RSS (VmHWM), after the submissions"] = (rss_after_submit / 2**20, "MiB")
    fig.values["orchestrator peak RSS (VmHWM), end"] = (peak / 2**20, "MiB")
    fig.values["SQLite codecbench.db"] = (db / 2**20, "MiB")
    fig.values["SQLite codecbench.db-wal"] = (wal / 2**20, "MiB")
    fig.values["SQLite bytes per experiment (db + wal)"] = ((db + wal) / max(total, 1), "bytes")
    fig.headline.append("orchestrator peak RSS (VmHWM), end")


async def run(ctx: BenchContext) -> Figure:
    fig = Figure("scale", NUMBER, TITLE)
    async with harness.running_system(ctx, "scale", slots=0) as system:
        await _phases(ctx, fig, system)
    fig.notes += [
        "No target is set for this figure. The fake workers, the submitters and the watchers all run in the "
        "bench process, on the same 2 shared cores as the orchestrator; the rates are a lower bound of what the "
        "orchestrator alone could do.",
        "The orchestrator's CPU per experiment (its user + system time from /proc during the backlog phase, "
        "over the experiments run) is what the machine's load changes least: its inverse is the dispatch rate "
        "the orchestrator would reach with a core of its own, the workers and clients elsewhere.",
        "Backlog create → start is mostly queue wait (the experiments were all queued before any worker "
        "registered); the live phase shows the scheduler's own dispatch latency.",
    ]
    # This figure exists to find the orchestrator's limits: its (short) profiling pass runs unless --profile never.
    if ctx.profile != "never":
        quick = harness.Sizes.quick()

        watchers = ctx.sizes.scale_watchers
        watched_events: list[int] = []

        async def workload(profiled: System) -> None:
            bundle = bundles.bundle_from_dir(harness.TRIVIAL_AGENT)
            await submit_many(profiled, bundle, quick.scale_experiments)
            behaviour = Behaviour()
            async with fake_fleet(profiled.orchestrator.address, profiled.enroll_secret(), quick.scale_workers,
                                  quick.scale_slots, behaviour):
                await wait_drained(profiled, 120.0)
                _, _, watched = await watch_running(profiled, bundle, behaviour, watchers)
                watched_events.append(watched.last_sequence)

        await profiling.profile_into(fig, ctx, "scale-profile", workload, slots=0)
        fig.notes.append(f"The profiling pass ran {quick.scale_experiments} experiments on {quick.scale_workers} "
                         f"fakes (submit, then dispatch), then {watchers} watchers of one running experiment.")
        _findings(fig, quick.scale_experiments, watchers, watched_events[0] if watched_events else 0)
    return fig


def _findings(fig: Figure, experiments: int, watchers: int, watched_events: int) -> None:
    """What the orchestrator's profile says about the costs per experiment and per watcher."""
    profile = next((p for p in fig.profiles if p.process == "orchestrator"), None)
    if profile is None:
        return
    create_calls, _, create = profile.find("service.py", "(CreateExperiment)")
    find_calls, _, find = profile.find("store.py", "(find_dataset)")
    heads_calls, _, heads = profile.find("store.py", "(queued_heads)")
    dispatch_calls, _, dispatch = profile.find("store.py", "(dispatch_many)")
    append_calls, _, append = profile.find("store.py", "(append_many)")
    after_calls, _, after = profile.find("store.py", "(events_after)")
    fig.findings += [
        f"Per experiment, in the orchestrator's profile ({experiments} experiments): CreateExperiment "
        f"{create / max(create_calls, 1) * 1000:.1f} ms a call; store.find_dataset {find_calls} calls ({find:.2f} s).",
        f"The scheduler: store.queued_heads {heads_calls} reads of the queue's heads ({heads:.2f} s; each serves "
        f"many rounds), store.dispatch_many {dispatch_calls} rounds ({dispatch:.2f} s; one transaction each), "
        f"store.append_many {append_calls} group commits of the workers' events ({append:.2f} s).",
        f"Watchers: store.events_after {after_calls} calls ({after:.2f} s), almost all of them while {watchers} "
        f"watchers followed one experiment of {watched_events} events: every stored event wakes every watcher "
        "of the experiment (Ledger's Condition.notify_all) and each "
        "runs its own SQLite query for the new events, on the event loop; handing the new event to the waiting "
        "watchers from memory would make a fan-out of N watchers cost one query instead of N.",
    ]
