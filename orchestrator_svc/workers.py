"""The orchestrator's view of its workers: identity, state, free slots, heartbeats.

States: READY (free slot), BUSY (all slots in use), DRAINING (no new work), STALE (its build id
is not the expected one: it runs other code and gets no work), LOST (its stream broke or its
heartbeats stopped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from codecbench import devices, rpc
from codecbench.v1 import orchestrator_pb2, worker_pb2, worker_pb2_grpc

READY = orchestrator_pb2.WORKER_STATE_READY
BUSY = orchestrator_pb2.WORKER_STATE_BUSY
DRAINING = orchestrator_pb2.WORKER_STATE_DRAINING
STALE = orchestrator_pb2.WORKER_STATE_STALE
LOST = orchestrator_pb2.WORKER_STATE_LOST


@dataclass
class WorkerEntry:
    """One registered worker and the experiments this orchestrator runs on it."""

    info: worker_pb2.WorkerInfo
    expected_build: str
    channel: grpc.aio.Channel
    stub: worker_pb2_grpc.WorkerServiceStub
    last_heartbeat: float = field(default_factory=time.time)
    draining: bool = False
    lost_reason: str = ""
    running: set[str] = field(default_factory=set)

    @property
    def worker_id(self) -> str:
        return self.info.worker_id

    @property
    def stale_reason(self) -> str:
        if self.info.build_id == self.expected_build:
            return ""
        return (
            f"build {self.info.build_id or '(none)'} differs from the expected build {self.expected_build}: "
            "it runs other worker/sandbox/protocol code; restart it from the current version"
        )

    @property
    def state(self) -> int:
        if self.lost_reason:
            return LOST
        if self.stale_reason:
            return STALE
        if self.draining:
            return DRAINING
        return BUSY if len(self.running) >= self.info.slots else READY

    @property
    def has_cuda(self) -> bool:
        return any(d.kind == devices.CUDA for d in self.info.devices)

    def can_take(self, device: devices.Device.ValueType) -> bool:
        """READY, with a free slot, offering the device (CPU and ANY run anywhere)."""
        return self.state == READY and (device != devices.CUDA or self.has_cuda)

    def run_device(self, device: devices.Device.ValueType) -> devices.Device.ValueType:
        """The device (CPU or CUDA) an experiment asking for ``device`` runs on here."""
        return devices.CUDA if device == devices.CUDA or (device == devices.ANY and self.has_cuda) else devices.CPU

    def status(self) -> orchestrator_pb2.WorkerStatus:
        beat = timestamp_pb2.Timestamp()
        beat.FromMicroseconds(int(self.last_heartbeat * 1e6))
        return orchestrator_pb2.WorkerStatus(
            info=self.info,
            state=self.state,
            state_reason=self.lost_reason
            or self.stale_reason
            or ("draining: finishes its running experiments, takes no new ones" if self.draining else ""),
            slots_in_use=len(self.running),
            last_heartbeat_time=beat,
            running_experiment_ids=sorted(self.running),
        )


class WorkerRegistry:
    """Workers by id. A worker that registers again (e.g. after an orchestrator restart) keeps
    its id and gets a fresh channel."""

    def __init__(self, expected_build: str) -> None:
        self.expected_build = expected_build
        self.workers: dict[str, WorkerEntry] = {}

    async def register(self, info: worker_pb2.WorkerInfo) -> WorkerEntry:
        old = self.workers.get(info.worker_id)
        if old is not None and old.info.address == info.address and not old.lost_reason:
            old.info = info
            old.last_heartbeat = time.time()
            return old
        if old is not None:
            await old.channel.close()
        channel = rpc.insecure_channel(info.address)
        entry = WorkerEntry(
            info=info,
            expected_build=self.expected_build,
            channel=channel,
            stub=worker_pb2_grpc.WorkerServiceStub(channel),
            draining=old.draining if old else False,
        )
        self.workers[info.worker_id] = entry
        return entry

    def get(self, worker_id: str) -> WorkerEntry | None:
        return self.workers.get(worker_id)

    def pick(self, device: devices.Device.ValueType) -> WorkerEntry | None:
        """A worker that can take an experiment for ``device``: the one with most free slots."""
        candidates = [w for w in self.workers.values() if w.can_take(device)]
        return max(candidates, key=lambda w: (w.info.slots - len(w.running), w.last_heartbeat), default=None)

    def free_slots(self) -> int:
        """Free slots over the workers that take work (READY)."""
        return sum(w.info.slots - len(w.running) for w in self.workers.values() if w.state == READY)

    def takeable_devices(self) -> set[devices.Device.ValueType]:
        """The experiment devices (CPU, CUDA, ANY) that some worker can take right now."""
        takeable: set[devices.Device.ValueType] = set()
        for worker in self.workers.values():
            if worker.can_take(devices.CPU):
                takeable |= {devices.CPU, devices.ANY}
            if worker.can_take(devices.CUDA):
                takeable.add(devices.CUDA)
        return takeable

    def silent_since(self, deadline: float) -> list[WorkerEntry]:
        """Workers not yet LOST whose last heartbeat is older than ``deadline``."""
        return [w for w in self.workers.values() if not w.lost_reason and w.last_heartbeat < deadline]

    async def close(self) -> None:
        for entry in self.workers.values():
            await entry.channel.close()
