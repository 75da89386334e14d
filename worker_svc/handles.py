"""What the orchestrator link needs of a running worker: the typed handle of ``keep_registered``.

:class:`RegisteredWorker` is a Protocol, not the concrete ``worker_svc.server.WorkerHandle``, so the
registration module depends on three read-only attributes (and, to drain, :class:`DrainableWorker`'s
method) instead of the whole server (and tests can register a stand-in). ``WorkerHandle`` satisfies
both; mypy checks that below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from codecbench.v1 import worker_pb2


class SlotCounter(Protocol):
    """The part of the worker's servicer a heartbeat reports."""

    @property
    def slots_in_use(self) -> int:
        """Experiment slots taken now (a heartbeat carries it to the orchestrator)."""
        ...


class CredentialHolder(Protocol):
    """The part of the worker's guard that registration sets: the credential it accepts."""

    orchestrator_credential: str


class RegisteredWorker(Protocol):
    """A running worker as ``OrchestratorLink.keep_registered`` sees it."""

    @property
    def info(self) -> worker_pb2.WorkerInfo:
        """What the worker registers with: id, build, address, slots, devices."""
        ...

    @property
    def servicer(self) -> SlotCounter:
        """Where the heartbeat reads the slots in use."""
        ...

    @property
    def guard(self) -> CredentialHolder:
        """Where registration puts the credential the orchestrator will present when it calls."""
        ...


class DrainableWorker(RegisteredWorker, Protocol):
    """A registered worker that can drain (``OrchestratorLink.drain``)."""

    async def drain(self, grace_s: float) -> int:
        """Takes no new work, lets running experiments end within ``grace_s``, stops the rest;
        returns how many it stopped."""
        ...


if TYPE_CHECKING:  # a static check only: the real handle is a RegisteredWorker
    from worker_svc.server import WorkerHandle

    def _handle_is_registered_worker(handle: WorkerHandle) -> DrainableWorker:
        return handle
