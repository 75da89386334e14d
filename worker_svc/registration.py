"""The worker's link to an orchestrator: registration, heartbeats and blob reads."""

from __future__ import annotations

import asyncio

import grpc

from codecbench import logs, rpc
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc


class OrchestratorLink:
    """A channel to the orchestrator, used for heartbeats and content-addressed blob reads."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = rpc.insecure_channel(address)
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    async def read_blob(self, sha256: str) -> bytes:
        """All chunks of one blob (the caller verifies the digest).

        Raises:
            grpc.aio.AioRpcError: the orchestrator is unreachable or does not have the blob.
        """
        parts = []
        async for response in self.stub.ReadBlob(orchestrator_pb2.ReadBlobRequest(sha256=sha256)):
            parts.append(response.data)
        return b"".join(parts)

    async def keep_registered(self, handle: object, retry_s: float = 1.0) -> None:
        """Registers, then sends heartbeats at the interval the orchestrator asks for; registers
        again after any failure (an orchestrator restart forgets nothing it stored, but a new one
        must learn this worker's address)."""
        log = logs.get_logger("worker.registration", worker_id=handle.info.worker_id, orchestrator=self.address)
        while True:
            try:
                reply = await self.stub.RegisterWorker(orchestrator_pb2.RegisterWorkerRequest(worker=handle.info))
                log.info("worker.registered", state=orchestrator_pb2.WorkerState.Name(reply.status.state))
                while True:
                    await asyncio.sleep(reply.heartbeat_interval_s or 2.0)
                    await self.stub.Heartbeat(orchestrator_pb2.HeartbeatRequest(
                        worker_id=handle.info.worker_id, slots_in_use=handle.servicer.slots_in_use,
                    ))
            except grpc.aio.AioRpcError as exc:
                log.warning("worker.heartbeat_failed", code=exc.code().name, detail=exc.details())
                await asyncio.sleep(retry_s)

    async def close(self) -> None:
        await self.channel.close()
