"""The worker's link to an orchestrator: enrollment, heartbeats and blob reads.

The worker registers with the enrollment secret as its bearer token and receives a per-worker
credential bound to its id. It sends that credential on ``Heartbeat`` and ``ReadBlob``, and
accepts it (through :class:`worker_svc.server.WorkerGuard`) when the orchestrator calls back. It
keeps the credential for its whole life and presents it when it registers again (after a broken
link or an orchestrator restart: the orchestrator stored the binding, so the id stays this worker's).
"""

from __future__ import annotations

import asyncio

import grpc

from codecbench import logs, rpc
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from worker_svc.handles import DrainableWorker, RegisteredWorker

#: Longest wait for one blob read, connection included (blobs are at most ~129 MiB).
BLOB_READ_TIMEOUT_S = 300.0
#: Longest wait for the orchestrator to hear that this worker drains.
DRAIN_ANNOUNCE_TIMEOUT_S = 10.0


class OrchestratorLink:
    """Channels to the orchestrator: one for enrollment, one that carries the worker's credential.

    Args:
        address: the orchestrator's ``host:port``.
        enroll_secret: the enrollment secret (``--enroll-token-file``).
        tls: the worker's TLS settings as a client (its certificate for mutual TLS, the CA).
    """

    def __init__(self, address: str, enroll_secret: str, tls: rpc.TlsConfig = rpc.NO_TLS) -> None:
        self.address = address
        self.credential = ""
        self._enroll_channel = rpc.channel(address, enroll_secret, tls)
        self._enroll_stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self._enroll_channel)
        self.channel = rpc.channel(address, lambda: self.credential, tls)
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    async def read_blob(self, sha256: str) -> bytes:
        """All chunks of one blob (the caller verifies the digest).

        Raises:
            grpc.aio.AioRpcError: the orchestrator is unreachable or does not have the blob.
        """
        parts = []
        # wait_for_ready: right after an orchestrator restart this channel may still be in its
        # reconnect backoff; failing fast then would refuse a dispatch from the very orchestrator
        # that is up again (and cost the experiment an attempt).
        request = orchestrator_pb2.ReadBlobRequest(sha256=sha256)
        async for response in self.stub.ReadBlob(request, wait_for_ready=True, timeout=BLOB_READ_TIMEOUT_S):
            parts.append(response.data)
        return b"".join(parts)

    async def register(self, handle: RegisteredWorker) -> orchestrator_pb2.RegisterWorkerResponse:
        """Registers once (presenting the credential of an earlier registration, if any) and makes
        the worker accept the credential it gets back.

        Raises:
            grpc.aio.AioRpcError: refused (UNAUTHENTICATED: wrong enrollment secret; ALREADY_EXISTS:
                the id is bound to another credential) or unreachable.
        """
        reply = await self._enroll_stub.RegisterWorker(orchestrator_pb2.RegisterWorkerRequest(
            worker=handle.info, worker_credential=self.credential))
        self.credential = reply.worker_credential
        handle.guard.orchestrator_credential = reply.worker_credential
        return reply

    async def keep_registered(self, handle: RegisteredWorker, retry_s: float = 1.0) -> None:
        """Registers, then sends heartbeats at the interval the orchestrator asks for; registers
        again after any failure (an orchestrator restart forgets nothing it stored, but a new one
        must learn this worker's address)."""
        log = logs.get_logger("worker.registration", worker_id=handle.info.worker_id,
                              orchestrator=self.address)
        while True:
            try:
                reply = await self.register(handle)
                log.info("worker.registered", state=orchestrator_pb2.WorkerState.Name(reply.status.state))
                while True:
                    await asyncio.sleep(reply.heartbeat_interval_s or 2.0)
                    await self.stub.Heartbeat(orchestrator_pb2.HeartbeatRequest(
                        worker_id=handle.info.worker_id,
                        slots_in_use=handle.servicer.slots_in_use,
                    ))
            except grpc.aio.AioRpcError as exc:
                log.warning("worker.heartbeat_failed", code=exc.code().name, detail=exc.details())
                await asyncio.sleep(retry_s)

    async def drain(self, handle: DrainableWorker, grace_s: float) -> int:
        """The graceful stop of a worker (SIGTERM; a rolling upgrade): tells the orchestrator that
        this worker drains (DrainWorker on itself: no new dispatches), then drains it
        (:meth:`worker_svc.server.WorkerServicer.drain`). Heartbeats must go on meanwhile, or the
        orchestrator would call the worker LOST and requeue its experiments as lost attempts.

        Args:
            handle: the running worker.
            grace_s: how long its running experiments may take to finish; those still running
                then are stopped, and the orchestrator requeues them without spending an attempt.

        Returns:
            How many experiments were stopped.
        """
        log = logs.get_logger("worker.registration", worker_id=handle.info.worker_id, orchestrator=self.address)
        try:
            await self.stub.DrainWorker(orchestrator_pb2.DrainWorkerRequest(worker_id=handle.info.worker_id),
                                        timeout=DRAIN_ANNOUNCE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            # The worker refuses new work itself (WORKER_DRAINING), which drains it there too.
            log.warning("worker.drain_unannounced", code=exc.code().name, detail=exc.details())
        return await handle.drain(grace_s)

    async def exiting(self, handle: DrainableWorker) -> None:
        """Tells the orchestrator that this drained worker stops (DrainWorker ``exiting``), so that
        it leaves the worker list instead of turning LOST once its heartbeats stop. Heartbeats must
        have stopped first: one arriving after would find the worker unknown."""
        try:
            await self.stub.DrainWorker(
                orchestrator_pb2.DrainWorkerRequest(worker_id=handle.info.worker_id, exiting=True),
                timeout=DRAIN_ANNOUNCE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:  # it turns LOST after its heartbeat timeout instead
            log = logs.get_logger("worker.registration", worker_id=handle.info.worker_id, orchestrator=self.address)
            log.warning("worker.exit_unannounced", code=exc.code().name, detail=exc.details())

    async def close(self) -> None:
        """Closes both channels to the orchestrator."""
        await self.channel.close()
        await self._enroll_channel.close()
