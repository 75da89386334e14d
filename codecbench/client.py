"""The Python client of the orchestrator (the CLI uses it too).

Example::

    import asyncio
    from codecbench.client import Client

    async def main():
        async with Client("127.0.0.1:50051") as client:
            exp = await client.submit("agents/jpeg", dataset="photos", points=[{"quality": q} for q in (10, 50, 90)])
            async for event in client.watch(exp.experiment_id):
                print(event.sequence, event.WhichOneof("event"))
            exp = await client.get(exp.experiment_id)
            for point in exp.result.points:
                print(point.bpp, point.psnr_db)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

from codecbench import bundles, datasets, devices, rpc, values
from codecbench.v1 import experiment_pb2, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

DEFAULT_SERVER = "127.0.0.1:50051"


def default_server() -> str:
    """``$CODECBENCH_SERVER`` or 127.0.0.1:50051."""
    return os.environ.get("CODECBENCH_SERVER", DEFAULT_SERVER)


class Client:
    """An asyncio client; use as ``async with Client(address) as client``."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address or default_server()
        self.channel = rpc.insecure_channel(self.address)
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def submit(
        self,
        agent: str | Path | types_pb2.AgentBundle,
        dataset: str = datasets.PHOTOS,
        points: Iterable[Mapping[str, Any]] = (),
        device: str | devices.Device.ValueType = devices.CPU,
        timeouts: types_pb2.Timeouts | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str = "",
        max_attempts: int = 0,
        priority: int = 0,
        entry_module: str = "",
    ) -> orchestrator_pb2.Experiment:
        """Queues an experiment: an agent folder (or bundle), a dataset, parameter points.

        Raises:
            grpc.aio.AioRpcError: INVALID_ARGUMENT naming the bad field, or a transport error.
            ValueError: the folder has no identifiable entry module.
        """
        bundle = (
            agent if isinstance(agent, types_pb2.AgentBundle) else bundles.bundle_from_dir(Path(agent), entry_module)
        )
        request = orchestrator_pb2.CreateExperimentRequest(
            agent=bundle,
            dataset=dataset,
            points=[values.params_from_python(dict(p)) for p in points],
            device=devices.parse(device) if isinstance(device, str) else device,
            timeouts=timeouts,
            labels=dict(labels or {}),
            request_id=request_id,
            max_attempts=max_attempts,
            priority=priority,
        )
        return (await self.stub.CreateExperiment(request)).experiment

    async def get(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        return (
            await self.stub.GetExperiment(orchestrator_pb2.GetExperimentRequest(experiment_id=experiment_id))
        ).experiment

    async def list(
        self,
        states: Iterable[int] = (),
        labels: Mapping[str, str] | None = None,
        limit: int = 50,
        created_after: float | None = None,
    ) -> list[orchestrator_pb2.Experiment]:
        """Up to ``limit`` experiments, newest first, following page tokens."""
        out: list[orchestrator_pb2.Experiment] = []
        token = ""
        while len(out) < limit:
            request = orchestrator_pb2.ListExperimentsRequest(
                states=list(states),
                labels=dict(labels or {}),
                page_size=min(limit - len(out), 500),
                page_token=token,
            )
            if created_after is not None:
                request.created_after.FromMicroseconds(int(created_after * 1e6))
            page = await self.stub.ListExperiments(request)
            out.extend(page.experiments)
            token = page.next_page_token
            if not token:
                break
        return out

    async def cancel(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        request = orchestrator_pb2.CancelExperimentRequest(experiment_id=experiment_id)
        return (await self.stub.CancelExperiment(request)).experiment

    async def watch(
        self, experiment_id: str, after_sequence: int = 0, reconnect_s: float = 30.0
    ) -> AsyncIterator[experiment_pb2.ExperimentEvent]:
        """Events after ``after_sequence`` until the terminal one. A broken stream is resumed from
        the last sequence seen (for up to ``reconnect_s`` of failed attempts), so nothing is missed
        or seen twice."""
        last = after_sequence
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                request = orchestrator_pb2.WatchExperimentRequest(experiment_id=experiment_id, after_sequence=last)
                async for response in self.stub.WatchExperiment(request):
                    failing_since = None
                    last = response.event.sequence
                    yield response.event
                    if response.event.WhichOneof("event") in ("result", "error"):
                        return
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                failing_since = failing_since or loop.time()
                if loop.time() - failing_since > reconnect_s:
                    raise
                await asyncio.sleep(0.5)

    async def wait(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        """Waits for the terminal event and returns the finished experiment."""
        async for _ in self.watch(experiment_id):
            pass
        return await self.get(experiment_id)

    async def upload_dataset(self, name: str, folder: Path) -> orchestrator_pb2.Dataset:
        """Uploads every PNG/JPEG of a folder as a dataset, in chunks of at most 1 MiB.

        Raises:
            FileNotFoundError: the folder does not exist.
            grpc.aio.AioRpcError: INVALID_ARGUMENT naming the unreadable image, for instance.
        """
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES)

        async def messages() -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
            yield orchestrator_pb2.CreateDatasetRequest(header=orchestrator_pb2.CreateDatasetHeader(name=name))
            for path in files:
                data = path.read_bytes()
                offsets = range(0, max(len(data), 1), rpc.CHUNK_BYTES)
                for i, start in enumerate(offsets):
                    yield orchestrator_pb2.CreateDatasetRequest(
                        chunk=orchestrator_pb2.ImageChunk(
                            image_name=path.name,
                            data=data[start : start + rpc.CHUNK_BYTES],
                            last=i == len(offsets) - 1,
                        )
                    )

        return (await self.stub.CreateDataset(messages())).dataset

    async def datasets(self) -> list[orchestrator_pb2.Dataset]:
        return list((await self.stub.ListDatasets(orchestrator_pb2.ListDatasetsRequest())).datasets)

    async def workers(self) -> list[orchestrator_pb2.WorkerStatus]:
        return list((await self.stub.ListWorkers(orchestrator_pb2.ListWorkersRequest())).workers)

    async def drain(self, worker_id: str) -> orchestrator_pb2.WorkerStatus:
        return (await self.stub.DrainWorker(orchestrator_pb2.DrainWorkerRequest(worker_id=worker_id))).status
