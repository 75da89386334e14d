"""The orchestrator's view of its workers: identity, state, free slots, heartbeats.

States: PENDING (registered, not yet reached at its address: it gets no work), READY (free slot),
BUSY (all slots in use), DRAINING (no new work), STALE (its build id
is not the expected one: it runs other code and gets no work), LOST (its stream broke or its
heartbeats stopped).

Before a worker gets work, the orchestrator proves that it answers at the address it registered,
on the channel experiments will be dispatched on (same TLS, same credential): a ``GetWorkerInfo``
call with the worker's credential must return the same worker id. A plain health check was rejected
as the proof: any gRPC server answers it, so a registration could point at someone else's worker.
A worker that does not answer stays PENDING (and costs no experiment an attempt) until it does, or
until its heartbeats stop and it is LOST.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from codecbench import devices, logs, rpc
from codecbench.v1 import orchestrator_pb2, worker_pb2, worker_pb2_grpc

READY = orchestrator_pb2.WORKER_STATE_READY
BUSY = orchestrator_pb2.WORKER_STATE_BUSY
DRAINING = orchestrator_pb2.WORKER_STATE_DRAINING
STALE = orchestrator_pb2.WORKER_STATE_STALE
LOST = orchestrator_pb2.WORKER_STATE_LOST
PENDING = orchestrator_pb2.WORKER_STATE_PENDING


@dataclass
class WorkerEntry:
    """One registered worker and the experiments this orchestrator runs on it."""

    info: worker_pb2.WorkerInfo
    expected_build: str
    channel: grpc.aio.Channel
    stub: worker_pb2_grpc.WorkerServiceAsyncStub
    last_heartbeat: float = field(default_factory=time.time)
    draining: bool = False
    lost_reason: str = ""
    # When it became LOST (time.time()); the registry prunes it a TTL later.
    lost_time: float = 0.0
    running: set[str] = field(default_factory=set)
    # Reached at its address with its credential (see the module docstring); PENDING until then.
    verified: bool = False
    pending_reason: str = "not yet reached at its address"
    # Slots in use as the worker last reported them (its heartbeat): they include slots taken by
    # direct Encode/Decode calls, which this orchestrator never sees, so they are a floor.
    reported_in_use: int = 0
    # Until when (time.time()) the worker counts as full: it refused a dispatch (NO_FREE_SLOT).
    # Cleared by its next heartbeat, which reports the truth; the time bounds it if none comes.
    full_until: float = 0.0

    @property
    def slots_in_use(self) -> int:
        """Slots taken: this orchestrator's dispatches, at least what the worker last reported."""
        return max(len(self.running), self.reported_in_use)

    @property
    def free_slots(self) -> int:
        """Slots free for a dispatch; 0 while it counts as full after a NO_FREE_SLOT refusal."""
        if self.full_until > time.time():
            return 0
        return max(self.info.slots - self.slots_in_use, 0)

    def refused_for_lack_of_slot(self, backoff_s: float) -> None:
        """Marks the worker full (it refused a dispatch: NO_FREE_SLOT) until its next heartbeat,
        or ``backoff_s`` seconds at most."""
        self.full_until = time.time() + backoff_s

    def heard(self, slots_in_use: int) -> None:
        """Records a heartbeat reporting ``slots_in_use`` (clears a NO_FREE_SLOT mark)."""
        self.last_heartbeat = time.time()
        self.reported_in_use = max(slots_in_use, 0)
        self.full_until = 0.0

    @property
    def worker_id(self) -> str:
        """The worker's id (from its registration)."""
        return self.info.worker_id

    @property
    def stale_reason(self) -> str:
        """Why the worker is STALE (its build differs from the expected one); "" when it is not."""
        if self.info.build_id == self.expected_build:
            return ""
        return (
            f"build {self.info.build_id or '(none)'} differs from the expected build {self.expected_build}: "
            "it runs other worker/sandbox/protocol code; restart it from the current version"
        )

    @property
    def state(self) -> orchestrator_pb2.WorkerState.ValueType:
        """LOST, STALE, PENDING, DRAINING, BUSY or READY, the first that applies, in this order."""
        if self.lost_reason:
            return LOST
        if self.stale_reason:
            return STALE
        if not self.verified:
            return PENDING
        if self.draining:
            return DRAINING
        return BUSY if self.free_slots == 0 else READY

    @property
    def has_cuda(self) -> bool:
        """Whether the worker offers a CUDA device."""
        return any(d.kind == devices.CUDA for d in self.info.devices)

    def can_take(self, device: devices.Device.ValueType) -> bool:
        """READY, with a free slot, offering the device (CPU and ANY run anywhere)."""
        return self.state == READY and (device != devices.CUDA or self.has_cuda)

    def run_device(self, device: devices.Device.ValueType) -> devices.Device.ValueType:
        """The device (CPU or CUDA) an experiment asking for ``device`` runs on here."""
        return devices.CUDA if device == devices.CUDA or (device == devices.ANY and self.has_cuda) else devices.CPU

    def status(self) -> orchestrator_pb2.WorkerStatus:
        """The worker as ``ListWorkers`` reports it: info, state and its reason, load, last heartbeat."""
        beat = timestamp_pb2.Timestamp()
        beat.FromMicroseconds(int(self.last_heartbeat * 1e6))
        return orchestrator_pb2.WorkerStatus(
            info=self.info,
            state=self.state,
            state_reason=self.lost_reason
            or self.stale_reason
            or (self.pending_reason if not self.verified else "")
            or ("draining: finishes its running experiments, takes no new ones" if self.draining else ""),
            slots_in_use=self.slots_in_use,
            last_heartbeat_time=beat,
            running_experiment_ids=sorted(self.running),
        )


class WorkerRegistry:
    """Workers by id. A worker that registers again (e.g. after an orchestrator restart) keeps
    its id and gets a fresh channel.

    Args:
        expected_build: the build id a worker must report to get work.
        tls: the orchestrator's TLS settings as a client of its workers (mutual with a CA).
        probe_interval_s: pause between attempts to reach a PENDING worker.
        on_ready: called when a worker becomes reachable (wakes the scheduler).
    """

    def __init__(self, expected_build: str, tls: rpc.TlsConfig = rpc.NO_TLS, probe_interval_s: float = 0.5,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.expected_build = expected_build
        self.tls = tls
        self.probe_interval_s = probe_interval_s
        self.on_ready = on_ready
        self.workers: dict[str, WorkerEntry] = {}
        self._probes: set[asyncio.Task[None]] = set()
        self.log = logs.get_logger("workers")

    async def register(self, info: worker_pb2.WorkerInfo, credential: str) -> WorkerEntry:
        """Adds or refreshes a worker; a new entry is PENDING until :meth:`_probe` reaches it.

        Args:
            info: what the worker reported.
            credential: its per-worker credential, presented on every call to it.
        """
        old = self.workers.get(info.worker_id)
        if old is not None and old.info.address == info.address and not old.lost_reason:
            old.info = info
            old.last_heartbeat = time.time()
            return old
        if old is not None:
            await old.channel.close()
        channel = rpc.channel(info.address, credential, self.tls)
        entry = WorkerEntry(
            info=info,
            expected_build=self.expected_build,
            channel=channel,
            stub=worker_pb2_grpc.WorkerServiceStub(channel),
            draining=old.draining if old else False,
        )
        self.workers[info.worker_id] = entry
        task = asyncio.create_task(self._probe(entry))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        return entry

    async def _probe(self, entry: WorkerEntry) -> None:
        """Calls GetWorkerInfo on the dispatch channel until the worker answers as itself."""
        while self.workers.get(entry.worker_id) is entry and not entry.lost_reason:
            try:
                reply = await entry.stub.GetWorkerInfo(worker_pb2.GetWorkerInfoRequest(), timeout=5.0)
                if reply.worker.worker_id == entry.worker_id:
                    entry.verified = True
                    self.log.info("worker.reached", worker_id=entry.worker_id, address=entry.info.address)
                    if self.on_ready is not None:
                        self.on_ready()
                    return
                entry.pending_reason = (f"the service at {entry.info.address} answers as worker "
                                        f"{reply.worker.worker_id!r}, not as this one")
            except grpc.aio.AioRpcError as exc:
                entry.pending_reason = (f"not reached at {entry.info.address} "
                                        f"({exc.code().name}: {(exc.details() or '')[:200]})")
            await asyncio.sleep(self.probe_interval_s)  # a retry pause, not synchronisation

    def get(self, worker_id: str) -> WorkerEntry | None:
        """The worker with this id, or None."""
        return self.workers.get(worker_id)

    def takeable_devices(self) -> set[devices.Device.ValueType]:
        """The experiment devices (CPU, CUDA, ANY) that some worker can take right now."""
        takeable: set[devices.Device.ValueType] = set()
        for worker in self.workers.values():
            if worker.can_take(devices.CPU):
                takeable |= {devices.CPU, devices.ANY}
            if worker.can_take(devices.CUDA):
                takeable.add(devices.CUDA)
        return takeable

    def unschedulable_reason(self, device: devices.Device.ValueType) -> str:
        """Why no registered worker can run an experiment for ``device`` now, or ``""`` when one can
        (READY; BUSY: it only waits for a free slot; PENDING: it registered and is being reached).

        The reason names what is missing: no worker at all, none offering CUDA, or those that do
        are STALE (another build), DRAINING or LOST.
        """
        offering = [w for w in self.workers.values() if device != devices.CUDA or w.has_cuda]
        if any(w.state in (READY, BUSY, PENDING) for w in offering):
            return ""
        wanted = "a CUDA device" if device == devices.CUDA else "a CPU"
        if not self.workers:
            return "no worker is registered"
        if not offering:
            return f"no registered worker offers {wanted} ({len(self.workers)} registered, none with CUDA)"
        states: dict[str, list[str]] = {}
        for w in offering:
            states.setdefault(orchestrator_pb2.WorkerState.Name(w.state).removeprefix("WORKER_STATE_"), []).append(
                w.worker_id)
        listed = "; ".join(f"{state}: {', '.join(sorted(ids)[:5])}" for state, ids in sorted(states.items()))
        return f"every registered worker offering {wanted} is unable to take work ({listed})"

    async def prune_lost(self, before: float) -> list[str]:
        """Forgets the workers LOST before ``before`` (Unix time) and closes their channels.

        Their history stays where it was recorded: each experiment's events name the worker it
        ran on and why it was lost; the log has ``worker.lost`` and ``worker.pruned``.

        Returns:
            The ids of the pruned workers.
        """
        gone = [w for w in self.workers.values() if w.lost_reason and w.lost_time < before]
        pruned: list[str] = []
        for entry in gone:
            # Each close awaits: a worker that registered again meanwhile has a fresh entry to keep.
            if self.workers.get(entry.worker_id) is not entry:
                continue
            del self.workers[entry.worker_id]
            pruned.append(entry.worker_id)
            await entry.channel.close()
            self.log.info("worker.pruned", worker_id=entry.worker_id, reason=entry.lost_reason)
        return pruned

    async def remove_exited(self, entry: WorkerEntry) -> None:
        """Forgets a worker that drained and exits (DrainWorker ``exiting``) and closes its channel:
        a clean exit leaves the worker list at once, not LOST after its heartbeats stop."""
        if self.workers.get(entry.worker_id) is entry:
            del self.workers[entry.worker_id]
            await entry.channel.close()
            self.log.info("worker.exited", worker_id=entry.worker_id)

    def silent_since(self, deadline: float) -> list[WorkerEntry]:
        """Workers not yet LOST whose last heartbeat is older than ``deadline``."""
        return [w for w in self.workers.values() if not w.lost_reason and w.last_heartbeat < deadline]

    async def close(self) -> None:
        """Stops the probes of PENDING workers and closes every worker's channel."""
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        for entry in self.workers.values():
            await entry.channel.close()
