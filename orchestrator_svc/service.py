"""``codecbench.v1.OrchestratorService``: validation at the door, then the store, ledger and scheduler.

Every malformed request gets INVALID_ARGUMENT naming the field and the limit; the service never
crashes on a request.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from codecbench import bundles, datasets, devices, logs, rpc, validation
from codecbench.blobs import BlobStore
from codecbench.states import QUEUED, TERMINAL_STATES, is_terminal_event
from codecbench.v1 import experiment_pb2, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from orchestrator_svc.ledger import Ledger
from orchestrator_svc.scheduler import Scheduler
from orchestrator_svc.store import DuplicateRequest, Store
from orchestrator_svc.workers import WorkerRegistry

DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 10
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_DATASET_IMAGES = 100_000


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _labels_problem(labels: dict[str, str]) -> str | None:
    for key, value in labels.items():
        if not key or len(key) > 200:
            return f"labels: key {key!r} must have 1 to 200 characters"
        if len(value) > 1000:
            return f"labels[{key!r}]: value longer than 1000 characters"
    return None


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        scheduler: Scheduler,
        registry: WorkerRegistry,
        blobs: BlobStore,
        max_bundle_bytes: int,
        heartbeat_interval_s: float,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.scheduler = scheduler
        self.registry = registry
        self.blobs = blobs
        self.max_bundle_bytes = max_bundle_bytes
        self.heartbeat_interval_s = heartbeat_interval_s
        # Blobs served to workers, by digest: shows that each crosses the network once per worker.
        self.blob_reads: Counter[str] = Counter()
        self.log = logs.get_logger("orchestrator")

    # -- experiments -------------------------------------------------------------------------

    def _create_problem(
        self, request: orchestrator_pb2.CreateExperimentRequest, dataset: orchestrator_pb2.Dataset | None
    ) -> str | None:
        problem = bundles.validate(request.agent)
        if problem:
            return problem
        size = sum(len(f.content) or f.size_bytes for f in request.agent.files)
        if size > self.max_bundle_bytes:
            return f"agent.files: the bundle has {size} bytes, over the limit of {self.max_bundle_bytes} bytes"
        for i, f in enumerate(request.agent.files):
            if not f.content and f.size_bytes and not self.blobs.has(f.sha256):
                return f"agent.files[{i}].content: missing, and no stored blob has sha256 {f.sha256}"
        if not request.dataset:
            return "dataset: missing (a dataset name such as 'photos', or a dataset digest)"
        if dataset is None:
            known = ", ".join(d.name for d in self.store.list_datasets())
            return f"dataset: unknown dataset {request.dataset!r} (known: {known})"
        return (
            validation.points_problem(request.points)
            or validation.device_problem(request.device, allowed=(devices.CPU, devices.CUDA, devices.ANY))
            or validation.timeouts_problem(request.timeouts)
            or (
                f"max_attempts: {request.max_attempts} must be between 0 (default {DEFAULT_MAX_ATTEMPTS}) "
                f"and {MAX_ATTEMPTS_LIMIT}"
                if not 0 <= request.max_attempts <= MAX_ATTEMPTS_LIMIT
                else None
            )
            or _labels_problem(dict(request.labels))
            or ("request_id: longer than 200 characters" if len(request.request_id) > 200 else None)
        )

    async def CreateExperiment(self, request, context):  # noqa: N802 - gRPC method name
        dataset = self.store.find_dataset(request.dataset) if request.dataset else None
        problem = self._create_problem(request, dataset)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if request.request_id:
            existing = self.store.find_by_request_id(request.request_id)
            if existing:
                return orchestrator_pb2.CreateExperimentResponse(experiment=self.store.get_experiment(existing))
        for f in request.agent.files:
            if f.content:
                self.blobs.put(f.content)
        exp = orchestrator_pb2.Experiment(
            experiment_id=f"exp-{uuid.uuid4().hex[:16]}",
            state=QUEUED,
            attempt=1,
            max_attempts=request.max_attempts or DEFAULT_MAX_ATTEMPTS,
            agent=bundles.without_content(request.agent),
            dataset=dataset.name,
            points=request.points or [types_pb2.ParameterPoint()],
            device=devices.resolve(request.device),
            timeouts=request.timeouts,
            labels=request.labels,
            request_id=request.request_id,
            priority=request.priority,
            create_time=_now(),
        )
        try:
            self.store.create_experiment(exp)
        except DuplicateRequest as dup:  # a concurrent repeat of the same request_id won the race
            return orchestrator_pb2.CreateExperimentResponse(experiment=self.store.get_experiment(dup.experiment_id))
        await self.ledger.created(exp)
        self.log.info(
            "experiment.created",
            experiment_id=exp.experiment_id,
            agent=exp.agent.name,
            dataset=exp.dataset,
            points=len(exp.points),
        )
        self.scheduler.wake.set()
        return orchestrator_pb2.CreateExperimentResponse(experiment=self.store.get_experiment(exp.experiment_id))

    async def _experiment(self, context, experiment_id: str) -> orchestrator_pb2.Experiment:  # noqa: ANN001
        if not experiment_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "experiment_id: missing")
        exp = self.store.get_experiment(experiment_id)
        if exp is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"experiment_id: no experiment {experiment_id!r}")
        return exp

    async def GetExperiment(self, request, context):  # noqa: N802
        return orchestrator_pb2.GetExperimentResponse(experiment=await self._experiment(context, request.experiment_id))

    async def ListExperiments(self, request, context):  # noqa: N802
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"page_size: {request.page_size} must be 0..{MAX_PAGE_SIZE}"
            )
        for state in request.states:
            if state not in experiment_pb2.ExperimentState.values() or state == 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"states: unknown state {state}")
        after_row = None
        if request.page_token:
            try:
                after_row = int(base64.urlsafe_b64decode(request.page_token.encode()).decode())
            except ValueError:
                after_row = -1
            if not 0 < after_row < 2**62:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token this service issued")
        created_after = None
        if request.HasField("created_after"):
            try:
                created_after = request.created_after.ToMicroseconds() / 1e6
            except ValueError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"created_after: {exc}")
        page, next_row = self.store.list_experiments(
            list(request.states), dict(request.labels), request.page_size or DEFAULT_PAGE_SIZE, after_row, created_after
        )
        token = base64.urlsafe_b64encode(str(next_row).encode()).decode() if next_row is not None else ""
        return orchestrator_pb2.ListExperimentsResponse(experiments=page, next_page_token=token)

    async def CancelExperiment(self, request, context):  # noqa: N802
        await self._experiment(context, request.experiment_id)
        exp = await self.scheduler.cancel(request.experiment_id)
        self.log.info("experiment.cancel_requested", experiment_id=request.experiment_id)
        return orchestrator_pb2.CancelExperimentResponse(experiment=exp)

    async def WatchExperiment(self, request, context) -> AsyncIterator[orchestrator_pb2.WatchExperimentResponse]:  # noqa: N802
        exp = await self._experiment(context, request.experiment_id)
        if request.after_sequence < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "after_sequence: must be >= 0")
        last = request.after_sequence
        last_stored = exp.last_sequence
        if exp.state in TERMINAL_STATES and last >= last_stored:
            return  # a watcher resuming after the terminal event: nothing more will come
        while True:
            for event in self.store.events_after(request.experiment_id, last):
                yield orchestrator_pb2.WatchExperimentResponse(event=event)
                last = event.sequence
                if is_terminal_event(event):
                    return
            await self.ledger.wait_beyond(request.experiment_id, last, last_stored)

    # -- datasets and blobs ------------------------------------------------------------------

    async def CreateDataset(self, request_iterator, context):  # noqa: N802
        name = ""
        parts: dict[str, list[bytes]] = {}
        sizes: dict[str, int] = {}
        closed: list[str] = []
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if part == "header":
                name = message.header.name
                continue
            if not name:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "header: the first message must name the dataset")
            chunk = message.chunk
            if len(chunk.data) > rpc.CHUNK_BYTES:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"chunk.data: {len(chunk.data)} bytes exceed the chunk limit of {rpc.CHUNK_BYTES}",
                )
            if not chunk.image_name or "/" in chunk.image_name or chunk.image_name in closed:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"chunk.image_name: {chunk.image_name!r} is empty, has '/', or was already closed",
                )
            sizes[chunk.image_name] = sizes.get(chunk.image_name, 0) + len(chunk.data)
            if sizes[chunk.image_name] > MAX_IMAGE_BYTES:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"chunk.data: image {chunk.image_name!r} exceeds {MAX_IMAGE_BYTES} bytes",
                )
            parts.setdefault(chunk.image_name, []).append(chunk.data)
            if chunk.last:
                closed.append(chunk.image_name)
            if len(parts) > MAX_DATASET_IMAGES:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk: more than {MAX_DATASET_IMAGES} images")
        problem = (
            "header.name: missing"
            if not name
            else f"header.name: {name!r} is a built-in dataset"
            if name in datasets.BUILTIN_DATASETS
            else f"header.name: {name!r} must be 1-200 characters without '/'"
            if len(name) > 200 or "/" in name
            else "chunk: no images uploaded"
            if not parts
            else f"chunk.last: image {sorted(set(parts) - set(closed))[0]!r} was never closed"
            if set(parts) - set(closed)
            else None
        )
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        images = []
        for image_name in sorted(parts):
            data = b"".join(parts[image_name])
            try:
                # Decoding proves the file is an image; in a thread, so other RPCs are served meanwhile.
                await asyncio.to_thread(datasets.decode_rgb, image_name, data)
            except datasets.ImageDecodeError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk.data: {exc}")
            digest = await asyncio.to_thread(self.blobs.put, data)
            images.append(types_pb2.BlobRef(name=image_name, sha256=digest, size_bytes=len(data)))
        dataset = orchestrator_pb2.Dataset(
            name=name,
            digest=datasets.dataset_digest([(i.name, i.sha256) for i in images]),
            images=images,
            create_time=_now(),
        )
        existing = self.store.find_dataset(name)
        if existing is not None and existing.name == name:
            if existing.digest == dataset.digest:
                return orchestrator_pb2.CreateDatasetResponse(dataset=existing)  # the same upload again
            # Queued experiments name this dataset: its images must not change under them.
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"header.name: dataset {name!r} exists with other images (digest {existing.digest}); "
                "upload under another name",
            )
        self.store.put_dataset(dataset)
        self.log.info("dataset.created", dataset=name, images=len(images), digest=dataset.digest)
        return orchestrator_pb2.CreateDatasetResponse(dataset=dataset)

    async def ListDatasets(self, request, context):  # noqa: N802
        return orchestrator_pb2.ListDatasetsResponse(datasets=self.store.list_datasets())

    async def ReadBlob(self, request, context):  # noqa: N802
        try:
            path = self.blobs.path(request.sha256)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sha256: {exc}")
        if not path.exists():
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sha256: no blob {request.sha256}")
        size = path.stat().st_size
        self.blob_reads[request.sha256] += 1
        with path.open("rb") as f:
            first = True
            while chunk := f.read(rpc.CHUNK_BYTES):
                yield orchestrator_pb2.ReadBlobResponse(data=chunk, size_bytes=size if first else 0)
                first = False

    # -- workers -----------------------------------------------------------------------------

    async def RegisterWorker(self, request, context):  # noqa: N802
        info = request.worker
        if not info.worker_id or not info.address:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "worker: worker_id and address are required")
        if info.slots < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"worker.slots: {info.slots} must be at least 1")
        known = self.registry.get(info.worker_id)
        if known is not None and known.info.address != info.address:
            # Whatever ran under this id at the old address is no longer ours to wait for.
            self.scheduler.mark_lost(known, f"registered again from {info.address}")
        entry = await self.registry.register(info)
        self.log.info(
            "worker.registered",
            worker_id=info.worker_id,
            address=info.address,
            build_id=info.build_id,
            state=orchestrator_pb2.WorkerState.Name(entry.state),
        )
        self.scheduler.wake.set()
        return orchestrator_pb2.RegisterWorkerResponse(
            status=entry.status(), heartbeat_interval_s=self.heartbeat_interval_s
        )

    async def Heartbeat(self, request, context):  # noqa: N802
        entry = self.registry.get(request.worker_id)
        if entry is None or entry.lost_reason:
            # A LOST worker must register again: its experiments were already requeued.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"worker_id: {request.worker_id!r} is not registered")
        entry.last_heartbeat = time.time()
        return orchestrator_pb2.HeartbeatResponse(status=entry.status())

    async def ListWorkers(self, request, context):  # noqa: N802
        return orchestrator_pb2.ListWorkersResponse(workers=[w.status() for w in self.registry.workers.values()])

    async def DrainWorker(self, request, context):  # noqa: N802
        entry = self.registry.get(request.worker_id)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"worker_id: no worker {request.worker_id!r}")
        entry.draining = True
        self.log.info("worker.draining", worker_id=request.worker_id)
        return orchestrator_pb2.DrainWorkerResponse(status=entry.status())
