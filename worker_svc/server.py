"""The worker's gRPC server (``codecbench.v1.WorkerService``), with health and reflection.

:func:`start_worker` binds (port 0 picks a free port), starts serving and returns a handle whose
``port`` tests and the CLI use; :meth:`WorkerHandle.stop` flips health to NOT_SERVING, then stops
gracefully.

Only the orchestrator runs code here: every WorkerService call must carry, as its bearer token,
the per-worker credential that the orchestrator issued at registration (and presents back when it
dispatches), or the worker's local admin token (``--admin-token-file``, for debugging with
``grpcurl -H 'authorization: Bearer TOKEN'``). Health and reflection stay open. The data
directory is 0700, cached blobs 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import torch
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health as grpc_health

from codecbench import auth, build, bundles, datasets, devices, errors, logs, rpc, tensors, validation, values
from codecbench.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable, echo
from codecbench.status import ErrorBoundary, in_field
from codecbench.telemetry import MetricsServer, serve_metrics
from codecbench.timeouts import default_timeouts
from codecbench.timeouts import resolve as resolve_timeouts
from codecbench.v1 import sandbox_pb2, types_pb2, worker_pb2, worker_pb2_grpc
from sandbox import isolation
from sandbox.launchers import make_launcher
from sandbox.process import OutputBudget, SandboxLimits
from sandbox.view import agent_view
from worker_svc import devices as device_detection
from worker_svc import metrics
from worker_svc.blob_cache import BlobCache, RemoteFetch
from worker_svc.executor import Teardowns, agent_report, run_experiment
from worker_svc.image_cache import DecodedImages, digest_of
from worker_svc.sandboxed_agent import SandboxedAgent, SandboxSettings, payload_bytes
from worker_svc.telemetry import CANCELLED, DRAINED, WorkerTelemetry

ResponseT = TypeVar("ResponseT")
ItemT = TypeVar("ItemT")
SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
# How long a drain waits, after stopping the experiments still running, for their slots to free.
DRAIN_STOP_WAIT_S = 10.0
# The most images a dataset reference lists (the orchestrator accepts no larger dataset).
MAX_DATASET_IMAGES = 100_000
WEAK_ISOLATION = (
    "agents run as plain child processes (isolation: process), with the worker's user, filesystem view and "
    "network and no PID namespace: a decoder can read the original images. Install the package 'bubblewrap'."
)


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of one worker process.

    Attributes:
        data_dir: the blob cache; hidden from agents.
        device: DEVICE_CPU or DEVICE_CUDA: the device this worker offers experiments.
        slots: experiments run at once.
        build_id: overrides the computed build id (tests of STALE workers).
        use_bwrap: False forces process-only isolation even when bwrap is installed.
        warm_template: fork agent processes from a warm template (needs bwrap and namespaces);
            False starts a new interpreter for each.
        admin_token: a local token accepted on every WorkerService call besides the orchestrator's
            credential (debugging with grpcurl; tests of a standalone worker); "" accepts none.
        tls: this worker's certificate and key; with a CA, callers (the orchestrator) must present a
            certificate it signed, and the worker verifies the orchestrator with it.
        insecure: allow plaintext on a non-loopback address.
        metrics_port: serve Prometheus metrics at ``http://metrics_host:metrics_port/metrics``
            (0 picks a free port); None (default): no metrics endpoint. See docs/metrics.md.
        metrics_host: the address the metrics endpoint binds (plain HTTP, no authentication).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    slots: int = 1
    device: devices.Device.ValueType = devices.CPU
    build_id: str = ""
    use_bwrap: bool = True
    warm_template: bool = True
    # Limits where a request leaves a timeout at 0; reported in WorkerInfo.default_timeouts.
    timeouts: types_pb2.Timeouts = field(default_factory=default_timeouts)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    admin_token: str = field(default="", repr=False)
    tls: rpc.TlsConfig = rpc.NO_TLS
    insecure: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


class WorkerGuard:
    """Admits the orchestrator (this worker's credential) and the local admin token (a
    :data:`codecbench.status.Guard`).

    Attributes:
        orchestrator_credential: the per-worker credential the orchestrator issued at registration
            (set by :class:`worker_svc.registration.OrchestratorLink`); "" before.
    """

    def __init__(self, admin_token: str) -> None:
        self.admin_token = admin_token
        self.orchestrator_credential = ""

    def __call__(self, full_method: str, metadata: object) -> auth.Principal | None:
        """Authenticates one call.

        Returns:
            The caller, or None for health and reflection.

        Raises:
            errors.Unauthenticated: no token, or another one.
        """
        if full_method.startswith(auth.OPEN_SERVICES):
            return None
        token = auth.bearer(metadata)  # type: ignore[arg-type]
        if not token:
            raise errors.Unauthenticated(
                "missing bearer token: only the orchestrator this worker registered with (or a local admin token, "
                "--admin-token-file) may call it")
        if auth.same_secret(token, self.orchestrator_credential):
            return auth.Principal("orchestrator", auth.ROLE_ORCHESTRATOR)
        if auth.same_secret(token, self.admin_token):
            return auth.Principal("local-admin", auth.ROLE_ADMIN)
        raise errors.Unauthenticated("the bearer token is not this worker's orchestrator credential or admin token")


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Implements WorkerService; agent code only ever runs in sandbox children."""

    def __init__(self, config: WorkerConfig, info: worker_pb2.WorkerInfo, blobs: BlobCache,
                 settings: SandboxSettings, stats: WorkerTelemetry | None = None) -> None:
        self.config = config
        self.info = info
        self.blobs = blobs
        self.settings = settings
        self.stats = stats or WorkerTelemetry()
        self._free_slots = config.slots
        self.running: set[str] = set()
        self.log = logs.get_logger("worker", worker_id=info.worker_id)
        # The drain (see :meth:`drain`): no new work once draining; the experiments still running
        # when ``_stop_runs`` is set end with UNAVAILABLE (reason WORKER_DRAINING).
        self.draining = False
        self._stop_runs = asyncio.Event()
        self._grace_over = asyncio.Event()  # set by end_grace(): a second SIGTERM or Ctrl-C
        self._idle = asyncio.Event()  # set while no slot is taken
        self._idle.set()
        self.decoded_images = DecodedImages()
        # Agent processes of finished runs being ended after their terminal event (executor).
        self.teardowns = Teardowns()


    @property
    def slots_in_use(self) -> int:
        """Slots taken by running experiments (RunExperiment) and single Encode/Decode calls."""
        return self.config.slots - self._free_slots

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """Holds one of the worker's slots for the block: every call that runs agent code takes one.

        Raises:
            ResourceExhausted: none is free (reason ``NO_FREE_SLOT``, retryable).
        """
        if self.draining:
            # The orchestrator requeues the experiment elsewhere on this reason, without spending an attempt.
            raise Unavailable("this worker is draining (it is stopping): it takes no new work",
                              reason=errors.REASON_WORKER_DRAINING)
        if self._free_slots <= 0:
            # The orchestrator puts the experiment back in the queue on this reason.
            raise ResourceExhausted(
                f"all {self.config.slots} slots of this worker are busy",
                reason=errors.REASON_NO_FREE_SLOT,
                metadata={"slots": str(self.config.slots)},
                retryable=True,
            )
        self._free_slots -= 1
        self._idle.clear()
        try:
            yield
        finally:
            self._free_slots += 1
            if self._free_slots == self.config.slots:
                self._idle.set()

    def end_grace(self) -> None:
        """Ends a drain's grace period now (a second SIGTERM or Ctrl-C): :meth:`drain` stops the
        experiments still running as when the grace period runs out."""
        self.log.warning("worker.drain_grace_cut_short", running=sorted(self.running))
        self._grace_over.set()

    async def drain(self, grace_s: float) -> int:
        """Takes no new work, lets the running calls end within ``grace_s`` seconds, then stops the
        experiments still running: each ends its stream with UNAVAILABLE, reason
        ``WORKER_DRAINING``, so the orchestrator requeues it at once (a new attempt, not counted
        against its limit) instead of waiting for this worker's heartbeats to stop.

        Args:
            grace_s: how long running experiments may take to finish (``--drain-grace-s``);
                :meth:`end_grace` ends it sooner.

        Returns:
            How many experiments were stopped (0: all finished within the grace period).
        """
        self.draining = True
        self.log.info("worker.draining", grace_s=grace_s, running=sorted(self.running))
        waits = [asyncio.create_task(self._idle.wait()), asyncio.create_task(self._grace_over.wait())]
        try:
            await asyncio.wait(waits, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._idle.is_set():
            return 0
        stopped = len(self.running)
        self.log.warning("worker.drain_grace_over", stopped=sorted(self.running))
        self._stop_runs.set()
        with contextlib.suppress(TimeoutError):
            # Stopped runs end at once (their sandboxes are killed); a direct Encode/Decode call
            # still running ends with the server's stop.
            await asyncio.wait_for(self._idle.wait(), timeout=DRAIN_STOP_WAIT_S)
        return stopped

    async def _unless_stopped(self, items: AsyncIterator[ItemT]) -> AsyncIterator[ItemT]:
        """``items`` until the drain's grace period ends; then the step in progress is cancelled
        (which finalises ``items``: its sandboxes are killed) and this raises.

        Raises:
            Unavailable: the drain stopped the experiment (reason ``WORKER_DRAINING``).
        """
        stop = asyncio.ensure_future(self._stop_runs.wait())
        step: asyncio.Future[ItemT] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(items))
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    raise Unavailable(
                        "this worker stopped the experiment: it drains (it is stopping) and its grace period of "
                        "--drain-grace-s ran out; the orchestrator runs it again elsewhere",
                        reason=errors.REASON_WORKER_DRAINING)
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            stop.cancel()
            if step is not None and not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)

    async def GetWorkerInfo(  # noqa: N802 - gRPC method name
        self,
        request: worker_pb2.GetWorkerInfoRequest,
        context: grpc.aio.ServicerContext[worker_pb2.GetWorkerInfoRequest, worker_pb2.GetWorkerInfoResponse],
    ) -> worker_pb2.GetWorkerInfoResponse:
        """Identity, build and capacity of this worker (the RPC is documented in worker.proto)."""
        return worker_pb2.GetWorkerInfoResponse(worker=self.info)

    def _check_run_args(
        self, agent: types_pb2.AgentBundle, device: devices.Device.ValueType, timeouts: types_pb2.Timeouts
    ) -> None:
        """Checks what Encode, Decode and RunExperiment share.

        Raises:
            InvalidArgument: a bad bundle, device or timeout.
            FailedPrecondition: CUDA requested from a worker without a GPU (reason ``NO_GPU``).
        """
        bundles.validate(agent)
        validation.check_device(device, allowed=(devices.CPU, devices.CUDA))
        validation.check_timeouts(timeouts)
        if device == devices.CUDA and not device_detection.has_cuda(list(self.info.devices)):
            raise FailedPrecondition("DEVICE_CUDA requested, this worker has no GPU", field="device",
                                     reason=errors.REASON_NO_GPU)

    async def _fetch_agent(self, agent: types_pb2.AgentBundle) -> None:
        """Brings the files sent by digest into the blob cache.

        Raises:
            FailedPrecondition: a file is neither cached nor fetchable (reason ``BLOB_MISSING``).
        """
        with in_field("agent.files"):
            await self.blobs.ensure(f.sha256 for f in agent.files if not f.content and f.size_bytes)

    async def _single_call(
        self,
        agent: types_pb2.AgentBundle,
        params: types_pb2.ParameterPoint,
        device: devices.Device.ValueType,
        timeouts: types_pb2.Timeouts,
        role: sandbox_pb2.SandboxRole.ValueType,
        call: Callable[[SandboxedAgent, types_pb2.Timeouts], Awaitable[ResponseT]],
    ) -> ResponseT:
        """Opens one agent side, binds the parameters, runs ``call`` on it.

        Raises:
            errors.RequestError: the request is refused.
            errors.CodecbenchError: the agent failed (the status carries its ``codecbench.v1.Error``).
        """
        device = devices.resolve(device)
        self._check_run_args(agent, device, timeouts)
        validation.check_point(params, "params")
        with self._slot():
            await self._fetch_agent(agent)
            limits = resolve_timeouts(timeouts, self.config.timeouts)
            budget = OutputBudget(self.config.limits.output_bytes, lambda *_: None)
            side = None
            try:
                side = await SandboxedAgent.open(
                    self.settings, agent, role, device, budget, limits.load_s, self.blobs.get
                )
                await side.set_params(params, limits.load_s)
                return await call(side, limits)
            finally:
                if side is not None:
                    side.process.kill()
                    await asyncio.shield(side.close())

    async def Encode(  # noqa: N802
        self,
        request: worker_pb2.EncodeRequest,
        context: grpc.aio.ServicerContext[worker_pb2.EncodeRequest, worker_pb2.EncodeResponse],
    ) -> worker_pb2.EncodeResponse:
        """Encodes one image with an agent (the RPC is documented in worker.proto).

        Raises:
            InvalidArgument: a malformed image, an image for a seed encoder that takes none, or
                none for an encoder that takes one.
        """
        pixels = None
        if request.HasField("image"):
            image = request.image
            if image.dtype != types_pb2.D_TYPE_UINT8 or len(image.shape) != 3 or image.shape[0] != 3:
                raise InvalidArgument("image", "must be uint8 with shape [3, H, W]")
            with in_field("image"):
                pixels = tensors.to_torch(image)

        async def encode(side: SandboxedAgent, limits: types_pb2.Timeouts) -> worker_pb2.EncodeResponse:
            if side.takes_image and pixels is None:
                raise InvalidArgument("image", "missing: this agent's encoder takes an image (uint8 [3, H, W])")
            if not side.takes_image and pixels is not None:
                raise InvalidArgument(
                    "image", "this agent's run_encoding_agent takes no image (the old runner's own shape): send none")
            encoded, ms = await side.encode(pixels, limits.encode_s)
            bitstream = payload_bytes(encoded)
            return worker_pb2.EncodeResponse(
                bitstream=bitstream, bitstream_sha256=bundles.sha256_hex(bitstream), encode_ms=ms
            )

        return await self._single_call(
            request.agent, request.params, request.device, request.timeouts, sandbox_pb2.SANDBOX_ROLE_ENCODER, encode
        )

    async def Decode(  # noqa: N802
        self,
        request: worker_pb2.DecodeRequest,
        context: grpc.aio.ServicerContext[worker_pb2.DecodeRequest, worker_pb2.DecodeResponse],
    ) -> worker_pb2.DecodeResponse:
        """Decodes one bitstream with an agent in a fresh sandbox (the RPC is documented in worker.proto).

        Raises:
            InvalidArgument: a seed agent's bitstream that is not a serialized ``codecbench.v1.Value``.
            ResourceExhausted: the reconstruction does not fit in one gRPC message (the limit named).
        """
        async def decode(side: SandboxedAgent, limits: types_pb2.Timeouts) -> worker_pb2.DecodeResponse:
            if side.contract == types_pb2.CONTRACT_SEED:
                try:
                    encoding_data = types_pb2.Value.FromString(request.bitstream)
                    values.from_value(encoding_data)  # every tensor in it must be well-formed
                except (DecodeError, tensors.TensorFormatError, RecursionError) as exc:
                    raise InvalidArgument(
                        "bitstream",
                        "a seed agent decodes a serialized codecbench.v1.Value, as Encode returns it "
                        f"({type(exc).__name__}: {exc})",
                    ) from exc
                encoded = sandbox_pb2.SandboxEncoded(encoding_data=encoding_data)
            else:
                encoded = sandbox_pb2.SandboxEncoded(bitstream=request.bitstream)
            decoded, ms = await side.decode(encoded, limits.decode_s)
            response = worker_pb2.DecodeResponse(decode_ms=ms)
            if decoded.HasField("decoding_data"):  # a seed agent's own figures: typed, as in RunExperiment
                response.agent_report.CopyFrom(await asyncio.to_thread(agent_report, decoded.decoding_data))
                if not side.takes_image:
                    response.agent_report.encoding_data_bytes = len(request.bitstream)
            if side.takes_image:
                shape = list(decoded.reconstruction.shape)
                height, width = (int(shape[1]), int(shape[2])) if len(shape) == 3 else (-1, -1)
                recon = metrics.reconstruction_to_uint8(decoded.reconstruction, height, width)
                response.reconstruction.CopyFrom(tensors.from_torch(recon))
                _check_response_size(response, f"a [3, {height}, {width}] uint8 reconstruction")
            return response

        return await self._single_call(
            request.agent, request.params, request.device, request.timeouts, sandbox_pb2.SANDBOX_ROLE_DECODER, decode
        )

    async def _images(self, ref: types_pb2.DatasetRef) -> list[datasets.DatasetImage]:
        """The decoded images of a dataset reference.

        Raises:
            InvalidArgument: an unknown built-in name, a bad digest, an unreadable image.
            FailedPrecondition: an image sent by digest is neither cached nor fetchable.
        """
        if not ref.images:
            if ref.name == datasets.PHOTOS:
                return list(datasets.load_photos())
            raise InvalidArgument(
                "dataset.name",
                f"unknown built-in dataset {echo(ref.name)} (built-in: {', '.join(datasets.BUILTIN_DATASETS)}); "
                "other datasets must list their images",
                reason=errors.REASON_DATASET_UNKNOWN,
            )
        validation.check_count(len(ref.images), "dataset.images", MAX_DATASET_IMAGES)
        for i, img in enumerate(ref.images):
            validation.check_text(img.name, f"dataset.images[{i}].name", validation.MAX_NAME_CHARS)
            bundles.check_size(img, f"dataset.images[{i}]")
            if not img.content and not bundles.is_sha256(img.sha256):
                raise InvalidArgument(
                    f"dataset.images[{i}].sha256", "64 lower-case hex digits needed for an image sent without content"
                )
        with in_field("dataset.images"):
            await self.blobs.ensure(img.sha256 for img in ref.images if not img.content)
            return [self._decoded(img) for img in ref.images]

    def _decoded(self, img: types_pb2.BlobRef) -> datasets.DatasetImage:
        """One dataset image, decoded once per worker (:class:`DecodedImages`).

        Raises:
            datasets.ImageDecodeError: not an image Pillow can read, or too large.
        """
        if img.content:
            return self.decoded_images.get(img.name, digest_of(img.content), lambda: img.content)
        return self.decoded_images.get(img.name, img.sha256, lambda: self.blobs.get(img.sha256))

    async def RunExperiment(  # noqa: N802
        self,
        request: worker_pb2.RunExperimentRequest,
        context: grpc.aio.ServicerContext[worker_pb2.RunExperimentRequest, worker_pb2.RunExperimentResponse],
    ) -> AsyncIterator[worker_pb2.RunExperimentResponse]:
        """Runs a whole experiment and streams its events (the RPC is documented in worker.proto)."""
        device = devices.resolve(request.device)
        validation.check_text(request.experiment_id, "experiment_id", validation.MAX_ID_CHARS)
        self._check_run_args(request.agent, device, request.timeouts)
        validation.check_points(request.points)
        with self._slot():
            # aclosing: a closed call (the orchestrator went away) finalises the run at once.
            async with contextlib.aclosing(self._run(request, device)) as responses:
                async for response in self._unless_stopped(responses):
                    yield response

    async def _run(
        self, request: worker_pb2.RunExperimentRequest, device: devices.Device.ValueType
    ) -> AsyncGenerator[worker_pb2.RunExperimentResponse, None]:
        log = self.log.bind(experiment_id=request.experiment_id, attempt=request.attempt)
        self.running.add(request.experiment_id)
        try:
            await self._fetch_agent(request.agent)
            images = await self._images(request.dataset)
            run = request
            if device != request.device:
                run = worker_pb2.RunExperimentRequest()
                run.CopyFrom(request)
                run.device = device
            log.info("experiment.started", images=len(images), points=len(request.points))
            if self.info.isolation != types_pb2.ISOLATION_BWRAP:
                log.warning("sandbox.weak_isolation", detail=WEAK_ISOLATION)
            async for response in run_experiment(
                run, images, self.settings, self.config.timeouts, self.info.worker_id, self.blobs.get,
                self.teardowns,
            ):
                event = response.event
                if event.HasField("error"):
                    log.info("experiment.failed", error=errors.describe(event.error))
                    self.stats.experiments.labels("failed", errors.kind_name(event.error.kind)).inc()
                elif event.HasField("result"):
                    log.info("experiment.succeeded", wall_ms=round(event.result.wall_ms, 1))
                    self.stats.experiments.labels("succeeded", "none").inc()
                yield response
        except asyncio.CancelledError:
            outcome = DRAINED if self._stop_runs.is_set() else CANCELLED
            log.info(f"experiment.{outcome}")
            self.stats.experiments.labels(outcome, "none").inc()
            raise
        finally:
            self.running.discard(request.experiment_id)


def _check_response_size(response: worker_pb2.DecodeResponse, what: str) -> None:
    """Refuses a unary response over the gRPC message limit before gRPC's own send fails, naming
    the limit and the way round it.

    Raises:
        ResourceExhausted: ``response`` is over :data:`codecbench.rpc.MAX_MESSAGE_BYTES`.
    """
    size = response.ByteSize()
    if size > rpc.MAX_MESSAGE_BYTES:
        largest = rpc.MAX_MESSAGE_BYTES // 3
        raise ResourceExhausted(
            f"the DecodeResponse with {what} is {size} bytes, over the gRPC message limit of "
            f"{rpc.MAX_MESSAGE_BYTES} bytes ({rpc.MAX_MESSAGE_BYTES >> 20} MiB): the unary Decode returns images "
            f"of up to about {largest} pixels; larger ones (up to the image limit of {datasets.MAX_PIXELS} pixels) "
            "are decoded and measured inside RunExperiment",
            metadata={"limit_bytes": str(rpc.MAX_MESSAGE_BYTES), "size_bytes": str(size)},
        )


def make_worker_info(config: WorkerConfig, address: str) -> worker_pb2.WorkerInfo:
    """Identity of this worker process: id, build, pid, host, start time, devices, isolation."""
    start = timestamp_pb2.Timestamp()
    start.GetCurrentTime()
    mode = isolation.available_isolation() if config.use_bwrap else types_pb2.ISOLATION_PROCESS
    found = device_detection.detect_devices()
    return worker_pb2.WorkerInfo(
        worker_id=f"w-{uuid.uuid4().hex[:12]}",
        build_id=config.build_id or build.build_id(),
        protocol_version=build.PROTOCOL_VERSION,
        pid=os.getpid(),
        host=socket.gethostname(),
        start_time=start,
        devices=[d for d in found if config.device == devices.CUDA or d.kind == devices.CPU],
        slots=config.slots,
        isolation=mode,
        address=address,
        default_timeouts=resolve_timeouts(config.timeouts, default_timeouts()),
    )


@dataclass
class WorkerHandle:
    """A running worker server."""

    server: grpc.aio.Server
    port: int
    info: worker_pb2.WorkerInfo
    servicer: WorkerServicer
    health: grpc_health.aio.HealthServicer
    guard: WorkerGuard
    # The /metrics endpoint (config.metrics_port); None when it is off.
    metrics: MetricsServer | None = None

    @property
    def address(self) -> str:
        """``host:port`` the worker listens on."""
        return self.info.address

    async def drain(self, grace_s: float) -> int:
        """Drains the worker (:meth:`WorkerServicer.drain`); returns how many experiments it stopped."""
        return await self.servicer.drain(grace_s)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Reports NOT_SERVING, then stops; running experiments get ``grace_s`` to end."""
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
            self.metrics = None
        await rpc.set_serving(self.health, [SERVICE_NAME], serving=False)
        await self.server.stop(grace_s)
        await self.servicer.teardowns.drain()
        await self.servicer.settings.launcher.close()


async def start_worker(config: WorkerConfig, remote_blobs: RemoteFetch | None = None) -> WorkerHandle:
    """Starts a worker server on ``config.host:config.port`` (0 picks a free port).

    Raises:
        rpc.BindError: the address could not be bound.
        ValueError: a non-loopback address without TLS or ``config.insecure``.
    """
    rpc.check_listen_security(config.host, config.tls, config.insecure)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    # The worker's own torch work is metrics: the cores its agents leave free (metrics_threads).
    torch.set_num_threads(metrics.metrics_threads(config.slots))
    guard = WorkerGuard(config.admin_token)
    stats = WorkerTelemetry()
    server = grpc.aio.server(options=rpc.server_options(), interceptors=[stats.rpcs, ErrorBoundary(guard)])
    port = rpc.bind(server, config.host, config.port, config.tls)
    info = make_worker_info(config, f"{config.host}:{port}")
    log = logs.get_logger("worker", worker_id=info.worker_id)
    if info.isolation != types_pb2.ISOLATION_BWRAP:
        log.warning("sandbox.weak_isolation", detail=WEAK_ISOLATION)
    view = agent_view(hidden=(config.data_dir.resolve(),), gpu=config.device == devices.CUDA)
    scratch = config.data_dir / "agent-tmp"  # private TMPDIRs under process isolation
    shutil.rmtree(scratch, ignore_errors=True)  # what a killed worker left
    scratch.mkdir()
    launcher = await make_launcher(info.isolation, view, warm=config.warm_template, scratch_dir=scratch)
    settings = SandboxSettings(launcher=launcher, limits=config.limits, started=stats.sandbox_started)
    servicer = WorkerServicer(config, info, BlobCache(config.data_dir / "blobs", remote_blobs), settings, stats)
    stats.watch(config.slots, lambda: servicer.slots_in_use, lambda: servicer.draining)
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    health = rpc.add_health_and_reflection(server, [SERVICE_NAME])
    metrics_server = None
    if config.metrics_port is not None:
        metrics_server = serve_metrics(stats.registry, config.metrics_host, config.metrics_port)
    await server.start()
    await rpc.set_serving(health, [SERVICE_NAME], serving=True)
    log.info("worker.started", address=info.address, build_id=info.build_id, slots=config.slots,
             isolation=types_pb2.Isolation.Name(info.isolation),
             metrics=metrics_server.url if metrics_server else "off")
    return WorkerHandle(server=server, port=port, info=info, servicer=servicer, health=health, guard=guard,
                        metrics=metrics_server)
