"""``codecbench.v1.OrchestratorService``: validation at the door, then the store, ledger and scheduler.

Handlers raise the request errors of :mod:`codecbench.errors` (a malformed request gets
:class:`~codecbench.errors.InvalidArgument` naming the field and the limit); the server's
:class:`codecbench.status.ErrorBoundary` turns them into statuses, so the service never crashes on
a request and never ends a call with a status itself.

Every handler runs after the guard (:mod:`orchestrator_svc.access`) authenticated the caller;
handlers check ownership on :func:`codecbench.auth.current`: a user sees, watches and cancels only
their own experiments and reads only their own blobs and datasets plus shared ones and ``photos``;
admins see everything; a worker reads only the blobs of experiments dispatched to it.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import grpc
from google.protobuf import timestamp_pb2

from codecbench import auth, bundles, datasets, devices, errors, logs, rpc, validation
from codecbench.blobs import TEMP_PREFIX, BlobStore
from codecbench.errors import AlreadyExists, InvalidArgument, NotFound, OutOfRange, PermissionDenied, echo
from codecbench.states import QUEUED, SUCCEEDED, TERMINAL_STATES, is_terminal_event, state_name
from codecbench.status import in_field, request_error, spec_error
from codecbench.v1 import experiment_pb2, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from orchestrator_svc import cache
from orchestrator_svc.disk import REASON_DISK_FULL, RESERVE_BYTES, is_disk_full
from orchestrator_svc.ledger import Ledger
from orchestrator_svc.scheduler import Scheduler
from orchestrator_svc.store import EVERYONE, DuplicateRequest, RequestRecord, Store
from orchestrator_svc.workers import READY, WorkerRegistry

DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 10
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_DATASET_IMAGES = 100_000
# The bytes of one dataset upload in all (the default of OrchestratorConfig.max_dataset_bytes): the
# upload goes to disk as it arrives, so this bounds the disk an upload can take, not the memory.
MAX_DATASET_BYTES = 4 * 1024 * 1024 * 1024
# A file name (255 bytes on Linux); it is repeated in every image result.
MAX_IMAGE_NAME_CHARS = 255
MAX_WORKER_ID_CHARS = 64
MAX_WORKER_SLOTS = 1024
# Specs of one CreateExperiments call (each up to the bundle limit: the message limit bounds the sum).
MAX_BATCH_SPECS = 1000
# Experiments one WatchExperiments stream follows.
MAX_WATCHED = 100_000


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def spec_fingerprint(request: orchestrator_pb2.CreateExperimentRequest) -> str:
    """SHA-256 (hex) of a spec without its request id, with agent files by digest only: a spec sent
    again with the same request id must have the same fingerprint (inline content or a reference to
    the same digest count as the same)."""
    spec = orchestrator_pb2.CreateExperimentRequest()
    spec.CopyFrom(request)
    spec.ClearField("request_id")
    spec.agent.CopyFrom(bundles.without_content(request.agent))
    return bundles.sha256_hex(spec.SerializeToString(deterministic=True))


def _may_see_dataset(dataset: orchestrator_pb2.Dataset, principal: auth.Principal) -> bool:
    return dataset.builtin or dataset.shared or principal.is_admin or dataset.owner == principal.name


def _public_status(status: orchestrator_pb2.WorkerStatus) -> orchestrator_pb2.WorkerStatus:
    """What a non-admin sees of a worker: id, state, slots and devices; no address, build, host,
    pid or other users' experiment ids."""
    public = orchestrator_pb2.WorkerStatus(
        state=status.state, slots_in_use=status.slots_in_use, last_heartbeat_time=status.last_heartbeat_time,
    )
    info = status.info
    public.info.worker_id = info.worker_id
    public.info.slots = info.slots
    public.info.isolation = info.isolation
    public.info.devices.extend(info.devices)
    public.info.default_timeouts.CopyFrom(info.default_timeouts)
    return public


# How much of a refused upload is still read (and dropped) so the client sees the refusal, not INTERNAL.
DISCARD_BYTES = 1024 * 1024 * 1024
# Closed images of one upload checked and stored at the same time (in threads): enough to keep
# both cores busy while the next images stream in, few enough that memory stays bounded (each
# check holds one image file, datasets.MAX_FILE_BYTES at most).
VALIDATING_IMAGES = 4


async def _while_checking(
    messages: AsyncIterator[orchestrator_pb2.CreateDatasetRequest],
    checking: Mapping[str, asyncio.Future[str]],
    harvest: Callable[[], None],
) -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
    """The upload's messages; while image checks run, each wait for the next message also takes the
    checks' outcomes (``harvest``), so a refused image ends the upload even if the client sends
    nothing more."""
    iterator = aiter(messages)
    while True:
        if not checking:
            try:
                yield await anext(iterator)
            except StopAsyncIteration:
                return
            continue
        following: asyncio.Future[orchestrator_pb2.CreateDatasetRequest] = asyncio.ensure_future(anext(iterator))
        try:
            while not following.done():
                waiting: list[asyncio.Future[Any]] = [following, *checking.values()]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                harvest()
        except BaseException:
            following.cancel()
            raise
        if isinstance(following.exception(), StopAsyncIteration):
            return
        yield following.result()


async def _discard(messages: AsyncIterator[orchestrator_pb2.CreateDatasetRequest], limit: int) -> None:
    """Reads and drops the rest of a refused upload, up to ``limit`` bytes of chunks."""
    dropped = 0
    async for message in messages:
        dropped += len(message.chunk.data)
        if dropped > limit:
            return


def _check_dataset_name(name: str) -> None:
    """Raises InvalidArgument (field ``header.name``) for a name a dataset cannot have."""
    if not name:
        raise InvalidArgument("header.name", "missing")
    if name in datasets.BUILTIN_DATASETS:
        raise InvalidArgument("header.name", f"{echo(name)} is a built-in dataset")
    if len(name) > 200 or "/" in name or validation.has_control_characters(name):
        raise InvalidArgument(
            "header.name", f"{echo(name)} must be 1-200 characters without '/' or control characters"
        )


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Implements OrchestratorService: experiments, datasets, blobs and workers, per caller.

    Args:
        store: experiments, datasets, tokens and credentials.
        ledger: stores events and state changes, and announces them to watchers.
        scheduler: dispatches queued experiments (woken on submission and registration).
        registry: the registered workers.
        blobs: the content-addressed files (dataset images, agent files).
        max_bundle_bytes: the largest agent bundle accepted.
        heartbeat_interval_s: what a worker is told to wait between heartbeats.
        max_dataset_bytes: the most bytes one dataset upload may have in all.
    """

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        scheduler: Scheduler,
        registry: WorkerRegistry,
        blobs: BlobStore,
        max_bundle_bytes: int,
        heartbeat_interval_s: float,
        max_dataset_bytes: int = MAX_DATASET_BYTES,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.scheduler = scheduler
        self.registry = registry
        self.blobs = blobs
        self.max_bundle_bytes = max_bundle_bytes
        self.max_dataset_bytes = max_dataset_bytes
        self.heartbeat_interval_s = heartbeat_interval_s
        # Blobs served to workers, by digest: shows that each crosses the network once per worker.
        self.blob_reads: Counter[str] = Counter()
        # Blobs of dataset uploads in progress (stored, not yet referenced): garbage collection keeps them.
        self.uploading: Counter[str] = Counter()
        self.log = logs.get_logger("orchestrator")

    # -- experiments -------------------------------------------------------------------------

    def _checked_dataset(
        self, request: orchestrator_pb2.CreateExperimentRequest, batch: Mapping[str, bytes] | None = None
    ) -> orchestrator_pb2.Dataset:
        """Checks a CreateExperiment request and returns the dataset it names (looked up once).

        Args:
            request: the spec.
            batch: contents carried by the specs of the same CreateExperiments call, by digest: a
                file sent by digest alone may name one of them.

        Raises:
            InvalidArgument: naming the first bad field.
        """
        batch = batch or {}
        bundles.validate(request.agent)
        size = sum(len(f.content) or f.size_bytes for f in request.agent.files)
        if size > self.max_bundle_bytes:
            raise InvalidArgument(
                "agent.files", f"the bundle has {size} bytes, over the limit of {self.max_bundle_bytes} bytes"
            )
        principal = auth.current()
        for i, f in enumerate(request.agent.files):
            # A file sent by digest must be one the caller may read, or an agent could be assembled
            # from another user's code; "not stored" and "not yours" read the same.
            if f.content or not f.size_bytes:
                continue
            if f.sha256 in batch:
                if len(batch[f.sha256]) != f.size_bytes:
                    raise InvalidArgument(
                        f"agent.files[{i}].size_bytes",
                        f"{f.size_bytes} disagrees with the {len(batch[f.sha256])} bytes of {f.sha256} in this batch",
                    )
                continue
            if not (self.blobs.has(f.sha256) and self._may_read(f.sha256)):
                raise InvalidArgument(
                    f"agent.files[{i}].content", f"missing, and no stored blob has sha256 {f.sha256}",
                    reason=errors.REASON_BLOB_MISSING,
                )
            if (stored := self.blobs.path(f.sha256).stat().st_size) != f.size_bytes:
                # The bundle limit above summed the declared sizes: they must be the real ones.
                raise InvalidArgument(
                    f"agent.files[{i}].size_bytes",
                    f"{f.size_bytes} disagrees with the {stored} bytes of blob {f.sha256}",
                )
        if not request.dataset:
            raise InvalidArgument("dataset", "missing (a dataset name such as 'photos', or a dataset digest)")
        validation.check_text(request.dataset, "dataset", validation.MAX_NAME_CHARS)
        dataset = self.store.find_dataset(request.dataset, lambda d: _may_see_dataset(d, principal))
        if dataset is None:
            known = ", ".join(d.name for d in self.store.list_datasets() if _may_see_dataset(d, principal))
            raise InvalidArgument(
                "dataset", f"unknown dataset {echo(request.dataset)} (known: {known})",
                reason=errors.REASON_DATASET_UNKNOWN,
            )
        validation.check_points(request.points)
        validation.check_device(request.device, allowed=(devices.CPU, devices.CUDA, devices.ANY))
        validation.check_timeouts(request.timeouts)
        if not math.isfinite(request.queue_timeout_s) or not 0 <= request.queue_timeout_s <= validation.MAX_TIMEOUT_S:
            raise InvalidArgument(
                "queue_timeout_s",
                f"{request.queue_timeout_s} must be between 0 (none) and {validation.MAX_TIMEOUT_S:g} seconds",
            )
        if not 0 <= request.keep_reconstructions <= validation.MAX_KEEP_RECONSTRUCTIONS:
            raise InvalidArgument(
                "keep_reconstructions",
                f"{request.keep_reconstructions} must be between 0 (none) and {validation.MAX_KEEP_RECONSTRUCTIONS}",
            )
        if not 0 <= request.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise InvalidArgument(
                "max_attempts",
                f"{request.max_attempts} must be between 0 (default {DEFAULT_MAX_ATTEMPTS}) and {MAX_ATTEMPTS_LIMIT}",
            )
        validation.check_labels(request.labels, max_count=validation.MAX_LABELS)
        validation.check_text(request.request_id, "request_id", validation.MAX_ID_CHARS)
        return dataset

    async def CreateExperiment(  # noqa: N802 - gRPC method name
        self,
        request: orchestrator_pb2.CreateExperimentRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.CreateExperimentRequest, orchestrator_pb2.CreateExperimentResponse
        ],
    ) -> orchestrator_pb2.CreateExperimentResponse:
        """Validates and queues an experiment, idempotent on request_id (documented in orchestrator.proto)."""
        exp = await self._create(request)
        self.scheduler.wake.set()
        return orchestrator_pb2.CreateExperimentResponse(experiment=exp)

    async def CreateExperiments(  # noqa: N802
        self,
        request: orchestrator_pb2.CreateExperimentsRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.CreateExperimentsRequest, orchestrator_pb2.CreateExperimentsResponse
        ],
    ) -> orchestrator_pb2.CreateExperimentsResponse:
        """Validates and queues many experiments, one result per spec (documented in orchestrator.proto).

        A spec refused by a request error gets that error as its result and the others go on
        (partial success). Any other failure (a full disk) fails the call: the specs created
        before it stay created, and the same batch sent again returns them by their request ids.
        """
        if not request.requests:
            raise InvalidArgument("requests", "empty: a batch needs at least one spec")
        validation.check_count(len(request.requests), "requests", MAX_BATCH_SPECS)
        batch: dict[str, bytes] = {}
        for spec in request.requests:
            for f in spec.agent.files:
                # Only content that matches its digest may stand in for the other specs' references.
                if f.content and f.sha256 not in batch and bundles.sha256_hex(f.content) == f.sha256:
                    batch[f.sha256] = f.content
        stored: set[str] = set()
        seen: set[str] = set()
        results = []
        for spec in request.requests:
            result = orchestrator_pb2.CreateExperimentsResult(request_id=spec.request_id)
            try:
                if not spec.request_id:
                    raise InvalidArgument(
                        "request_id", "missing: every spec of a batch needs its own request id (a retried batch "
                        "then creates nothing twice)")
                if spec.request_id in seen:
                    raise InvalidArgument(
                        "request_id", f"{echo(spec.request_id)} is the request id of an earlier spec of this batch")
                seen.add(spec.request_id)
                result.experiment.CopyFrom(await self._create(spec, batch, stored))
            except Exception as exc:  # noqa: BLE001 - only request errors become a spec's result
                refusal = request_error(exc)
                if not isinstance(refusal, errors.RequestError):
                    raise
                result.error.CopyFrom(spec_error(refusal))
            results.append(result)
        self.scheduler.wake.set()
        created = sum(1 for r in results if r.HasField("experiment"))
        self.log.info("experiments.batch_created", specs=len(results), created=created,
                      refused=len(results) - created, owner=auth.current().name)
        return orchestrator_pb2.CreateExperimentsResponse(results=results)

    async def _create(
        self,
        request: orchestrator_pb2.CreateExperimentRequest,
        batch: Mapping[str, bytes] | None = None,
        stored: set[str] | None = None,
    ) -> orchestrator_pb2.Experiment:
        """Validates one spec and stores it QUEUED (or returns the experiment of its request_id).

        Args:
            request: the spec.
            batch: contents carried by other specs of the same batch, by digest.
            stored: digests already stored for the caller during this call (skipped).

        Raises:
            InvalidArgument: naming the first bad field.
        """
        batch = batch or {}
        stored = set() if stored is None else stored
        dataset = self._checked_dataset(request, batch)
        owner = auth.current().name
        fingerprint = spec_fingerprint(request)
        if request.request_id:
            existing = self.store.find_by_request_id(owner, request.request_id)
            if existing:
                return self._repeated(request, existing, fingerprint)
        for f in request.agent.files:
            content = f.content or batch.get(f.sha256, b"")
            if content and f.sha256 not in stored:
                self.store.add_blob_owner(self.blobs.put(content), owner)
                stored.add(f.sha256)
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
            queue_timeout_s=request.queue_timeout_s,
            keep_reconstructions=request.keep_reconstructions,
            create_time=_now(),
            owner=owner,
        )
        key = cache.cache_key(exp, dataset.digest, self.registry.expected_build)
        # a cached result has no reconstructions to show (unless its source kept them): evaluate again
        reuse = not request.no_cache and not request.keep_reconstructions
        original = cache.choose(self.store.cached(key, owner)) if reuse else None
        more_events = self._copy_outcome(exp, original) if original is not None else []
        try:
            await self.ledger.create(exp, key, more_events, fingerprint if request.request_id else None,
                                     request.no_cache)
        except DuplicateRequest as dup:  # a concurrent repeat of the same request_id won the race
            return self._repeated(request, dup.record, fingerprint)
        self.log.info(
            "experiment.created",
            experiment_id=exp.experiment_id,
            agent=exp.agent.name,
            dataset=exp.dataset,
            points=len(exp.points),
            owner=owner,
            cached_from=exp.cached_from,
        )
        return self._experiment(exp.experiment_id)

    def _repeated(
        self, request: orchestrator_pb2.CreateExperimentRequest, record: RequestRecord, fingerprint: str
    ) -> orchestrator_pb2.Experiment:
        """The experiment of a request id sent again with the same spec.

        Raises:
            AlreadyExists: (reason REQUEST_ID_REUSED) the id was first sent with a different spec.
        """
        # Ids stored before migration 5 have no fingerprint: they keep the old behaviour.
        if record.fingerprint is not None and record.fingerprint != fingerprint:
            raise AlreadyExists(
                f"{echo(request.request_id)} was first sent with a different spec, which created "
                f"{record.experiment_id}; send a new request id for a new experiment",
                field="request_id", reason=errors.REASON_REQUEST_ID_REUSED,
                metadata={"experiment_id": record.experiment_id})
        return self._experiment(record.experiment_id)

    @staticmethod
    def _copy_outcome(
        exp: orchestrator_pb2.Experiment, original: orchestrator_pb2.Experiment
    ) -> list[experiment_pb2.ExperimentEvent]:
        """Finishes ``exp`` with ``original``'s outcome (the result cache) and returns the events that
        follow "created": a note naming the original, then the terminal result or error."""
        source = original.cached_from or original.experiment_id
        exp.cached_from = source
        exp.state = original.state
        exp.start_time.CopyFrom(exp.create_time)
        exp.end_time.CopyFrom(exp.create_time)
        note = experiment_pb2.ExperimentEvent(attempt=exp.attempt, log=experiment_pb2.LogLine(
            stream=experiment_pb2.LOG_STREAM_SYSTEM,
            text=f"outcome reused from {source} (same agent files, dataset, parameter points, device kind and "
                 "worker build); submit with no_cache (--no-cache) to evaluate it again"))
        terminal = experiment_pb2.ExperimentEvent(attempt=exp.attempt)
        if original.HasField("result"):
            exp.result.CopyFrom(original.result)
            terminal.result.CopyFrom(original.result)
        else:
            exp.error.CopyFrom(original.error)
            terminal.error.CopyFrom(original.error)
        return [note, terminal]

    def _experiment(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        """An experiment the caller may see.

        Raises:
            InvalidArgument: no id.
            NotFound: no experiment has this id.
            PermissionDenied: it is another user's (and the caller is no admin).
        """
        validation.check_text(experiment_id, "experiment_id", validation.MAX_ID_CHARS, required=True)
        exp = self.store.get_experiment(experiment_id)
        if exp is None:
            raise NotFound(f"no experiment {echo(experiment_id)}", field="experiment_id")
        principal = auth.current()
        if not principal.is_admin and exp.owner != principal.name:
            raise PermissionDenied(f"experiment {echo(experiment_id)} belongs to another user", field="experiment_id")
        return self._with_waiting_reason(exp)

    def _with_waiting_reason(self, exp: orchestrator_pb2.Experiment) -> orchestrator_pb2.Experiment:
        """``exp`` with ``waiting_reason`` set when it is QUEUED and no registered worker can run it."""
        if exp.state == QUEUED:
            exp.waiting_reason = self.registry.unschedulable_reason(exp.device)
        return exp

    def _may_read(self, sha256: str) -> bool:
        """Whether the caller may read a blob: a user's own or a shared dataset's, any for an admin,
        and for a worker the blobs of the experiments dispatched to it now."""
        principal = auth.current()
        if principal.is_admin:
            return True
        if principal.role == auth.ROLE_WORKER:
            return any(d.worker.worker_id == principal.name and sha256 in d.digests
                       for d in self.scheduler.running.values())
        return self.store.may_read_blob(sha256, principal.name)

    async def GetExperiment(  # noqa: N802
        self,
        request: orchestrator_pb2.GetExperimentRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.GetExperimentRequest, orchestrator_pb2.GetExperimentResponse
        ],
    ) -> orchestrator_pb2.GetExperimentResponse:
        """One experiment of the caller (admins: any) (documented in orchestrator.proto)."""
        return orchestrator_pb2.GetExperimentResponse(experiment=self._experiment(request.experiment_id))

    async def ListExperiments(  # noqa: N802
        self,
        request: orchestrator_pb2.ListExperimentsRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.ListExperimentsRequest, orchestrator_pb2.ListExperimentsResponse
        ],
    ) -> orchestrator_pb2.ListExperimentsResponse:
        """The caller's experiments, newest first, filtered and paged (documented in orchestrator.proto)."""
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"{request.page_size} must be 0..{MAX_PAGE_SIZE}")
        validation.check_count(len(request.states), "states", len(experiment_pb2.ExperimentState.values()))
        for state in request.states:
            if state not in experiment_pb2.ExperimentState.values() or state == 0:
                raise InvalidArgument("states", f"unknown state {state}")
        validation.check_labels(request.labels, max_count=validation.MAX_LABEL_FILTERS)
        after_row = None
        if request.page_token:
            try:
                after_row = int(base64.urlsafe_b64decode(request.page_token.encode()).decode())
            except ValueError:
                after_row = -1
            if not 0 < after_row < 2**62:
                raise InvalidArgument("page_token", "not a token this service issued")
        created_after = None
        if request.HasField("created_after"):
            try:
                created_after = request.created_after.ToMicroseconds() / 1e6
            except ValueError as exc:
                raise InvalidArgument("created_after", str(exc)) from exc
        principal = auth.current()
        page, next_row = self.store.list_experiments(
            list(request.states), dict(request.labels), request.page_size or DEFAULT_PAGE_SIZE, after_row,
            created_after, owner=None if principal.is_admin else principal.name,
        )
        page = [self._with_waiting_reason(exp) for exp in page]
        token = base64.urlsafe_b64encode(str(next_row).encode()).decode() if next_row is not None else ""
        return orchestrator_pb2.ListExperimentsResponse(experiments=page, next_page_token=token)

    async def CancelExperiment(  # noqa: N802
        self,
        request: orchestrator_pb2.CancelExperimentRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.CancelExperimentRequest, orchestrator_pb2.CancelExperimentResponse
        ],
    ) -> orchestrator_pb2.CancelExperimentResponse:
        """Cancels one of the caller's experiments (documented in orchestrator.proto)."""
        self._experiment(request.experiment_id)
        exp = await self.scheduler.cancel(request.experiment_id)
        self.log.info("experiment.cancel_requested", experiment_id=request.experiment_id, by=auth.current().name)
        return orchestrator_pb2.CancelExperimentResponse(experiment=exp)

    async def WatchExperiment(  # noqa: N802
        self,
        request: orchestrator_pb2.WatchExperimentRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.WatchExperimentRequest, orchestrator_pb2.WatchExperimentResponse
        ],
    ) -> AsyncIterator[orchestrator_pb2.WatchExperimentResponse]:
        """Replays stored events, then follows live ones to the terminal one (documented in orchestrator.proto)."""
        exp = self._experiment(request.experiment_id)
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence", "must be >= 0")
        last = request.after_sequence
        last_stored = exp.last_sequence
        if last > last_stored:
            # No event past the last stored one was ever sent: waiting for it could last forever
            # (the stream would never see the terminal event it ends on).
            raise OutOfRange(
                f"{last} is past the last event ({last_stored}) of experiment {echo(request.experiment_id)}",
                field="after_sequence", metadata={"last_sequence": str(last_stored)},
            )
        if exp.state in TERMINAL_STATES and last >= last_stored:
            return  # a watcher resuming after the terminal event: nothing more will come
        while True:
            for event in self.store.events_after(request.experiment_id, last):
                yield orchestrator_pb2.WatchExperimentResponse(event=event)
                last = event.sequence
                if is_terminal_event(event):
                    return
            await self.ledger.wait_beyond(request.experiment_id, last, last_stored)

    async def WatchExperiments(  # noqa: N802
        self,
        request: orchestrator_pb2.WatchExperimentsRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.WatchExperimentsRequest, orchestrator_pb2.WatchExperimentsResponse
        ],
    ) -> AsyncIterator[orchestrator_pb2.WatchExperimentsResponse]:
        """The events of the caller's experiments matching a label selector, interleaved, to the
        last terminal one (documented in orchestrator.proto)."""
        if not request.labels:
            raise InvalidArgument("labels", "empty: give at least one label to select the experiments")
        validation.check_labels(request.labels, max_count=validation.MAX_LABEL_FILTERS)
        validation.check_count(len(request.after_sequences), "after_sequences", MAX_WATCHED)
        for experiment_id, sequence in request.after_sequences.items():
            validation.check_text(experiment_id, "after_sequences", validation.MAX_ID_CHARS, required=True)
            if sequence < 0:
                raise InvalidArgument(f"after_sequences[{echo(experiment_id)}]", f"{sequence} must be >= 0")
        principal = auth.current()
        owner = None if principal.is_admin else principal.name
        sent = dict(request.after_sequences)
        # Per selected experiment: the last sequence number stored (as far as known) and whether the
        # stream has sent its terminal event. The selection is read again only when experiments were
        # created; new events are found in the ledger's memory, so a wake-up costs no query.
        stored: dict[str, int] = {}
        ended: set[str] = set()
        created = -1
        while True:
            # Read the counters first: an event stored after them wakes the wait below.
            generation = self.ledger.generation
            if created != self.ledger.created:
                created = self.ledger.created
                rows = self.store.watch_rows(dict(request.labels), owner)
                if len(rows) > MAX_WATCHED:
                    raise InvalidArgument("labels", f"select {len(rows)} experiments, over the limit of {MAX_WATCHED}")
                for experiment_id, state, last_sequence in rows:
                    if sent.get(experiment_id, 0) > last_sequence:
                        # As in WatchExperiment: that event never existed, so waiting for it (or
                        # for the terminal event behind it) would never end.
                        raise OutOfRange(
                            f"{sent[experiment_id]} is past the last event ({last_sequence}) of experiment "
                            f"{echo(experiment_id)}", field=f"after_sequences[{echo(experiment_id)}]",
                            metadata={"last_sequence": str(last_sequence)})
                    stored[experiment_id] = max(stored.get(experiment_id, 0), last_sequence)
                    if state in TERMINAL_STATES and sent.get(experiment_id, 0) >= last_sequence:
                        ended.add(experiment_id)  # finished before this stream, and seen already
            for experiment_id in stored:
                stored[experiment_id] = max(stored[experiment_id], self.ledger.latest(experiment_id))
                after = sent.get(experiment_id, 0)
                if experiment_id in ended or stored[experiment_id] <= after:
                    continue
                for event in self.store.events_after(experiment_id, after):
                    yield orchestrator_pb2.WatchExperimentsResponse(event=event)
                    sent[experiment_id] = event.sequence
                    if is_terminal_event(event):
                        ended.add(experiment_id)
            if stored and len(ended) == len(stored):
                return
            await self.ledger.wait_any(generation)

    # -- datasets and blobs ------------------------------------------------------------------

    async def CreateDataset(  # noqa: N802
        self,
        request_iterator: AsyncIterator[orchestrator_pb2.CreateDatasetRequest],
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.CreateDatasetRequest, orchestrator_pb2.CreateDatasetResponse
        ],
    ) -> orchestrator_pb2.CreateDatasetResponse:
        """Stores a dataset uploaded as a header, then image chunks (documented in orchestrator.proto).

        Memory stays bounded and the checks overlap the transfer: each image's chunks go to a
        temporary file in the blob store as they arrive, and once its last chunk came the image is
        checked (:func:`codecbench.datasets.check_image`), hashed and stored in a thread while the
        next images stream in (at most :data:`VALIDATING_IMAGES` at a time); an undecodable one is
        refused as soon as its check fails, before the stream ends. The new blobs reach the disk
        with one ``sync`` per dataset, before the dataset is recorded. The upload's total is limited
        by :attr:`max_dataset_bytes` and by the data directory's free space.
        """
        name = ""
        open_files: dict[str, tuple[Path, BinaryIO]] = {}  # images whose last chunk has not come yet
        sizes: dict[str, int] = {}
        checking: dict[str, asyncio.Future[str]] = {}  # closed images being checked and stored
        images: dict[str, types_pb2.BlobRef] = {}  # closed (checked and stored, or being so)
        total = 0
        free_at_start = 0
        owner = auth.current().name
        written: list[str] = []  # blobs this upload stored: removed again if it fails
        held: list[str] = []  # digests this upload holds in self.uploading

        def harvest() -> None:
            """Takes the outcome of each finished check: the blob is held for this upload, or the
            upload is refused naming the image."""
            for image_name, future in list(checking.items()):
                if not future.done():
                    continue
                del checking[image_name]
                with in_field("chunk.data"):
                    digest = future.result()
                self.uploading[digest] += 1
                held.append(digest)
                self.store.add_blob_owner(digest, owner)
                images[image_name].sha256 = digest

        try:
            async for message in _while_checking(request_iterator, checking, harvest):
                part = message.WhichOneof("part")
                if part == "header":
                    if name:  # a second header would rename the dataset halfway through its images
                        raise InvalidArgument("header", "sent twice; one upload is one dataset")
                    name = message.header.name
                    _check_dataset_name(name)
                    free_at_start = shutil.disk_usage(self.blobs.root).free
                    continue
                if not name:
                    raise InvalidArgument("header", "the first message must name the dataset")
                chunk = message.chunk
                if len(chunk.data) > rpc.CHUNK_BYTES:
                    raise InvalidArgument(
                        "chunk.data", f"{len(chunk.data)} bytes exceed the chunk limit of {rpc.CHUNK_BYTES}"
                    )
                if (not chunk.image_name or len(chunk.image_name) > MAX_IMAGE_NAME_CHARS or "/" in chunk.image_name
                        or validation.has_control_characters(chunk.image_name) or chunk.image_name in images):
                    raise InvalidArgument(
                        "chunk.image_name",
                        f"{echo(chunk.image_name)} is empty, longer than {MAX_IMAGE_NAME_CHARS} characters, has "
                        "'/' or a control character, or was already closed",
                    )
                sizes[chunk.image_name] = sizes.get(chunk.image_name, 0) + len(chunk.data)
                if sizes[chunk.image_name] > datasets.MAX_FILE_BYTES:
                    raise InvalidArgument(
                        "chunk.data", f"image {echo(chunk.image_name)} exceeds {datasets.MAX_FILE_BYTES} bytes")
                total += len(chunk.data)
                too_big: errors.CodecbenchError | None = None
                if total > self.max_dataset_bytes:
                    too_big = InvalidArgument(
                        "chunk.data", f"the dataset exceeds the limit of {self.max_dataset_bytes} bytes in all "
                        "(MAX_DATASET_BYTES)")
                elif total > free_at_start - RESERVE_BYTES:
                    too_big = errors.ResourceExhausted(
                        f"the dataset's {total} bytes so far exceed the free space of the data directory "
                        f"{self.blobs.root.parent} ({free_at_start} bytes free when the upload began): free space "
                        "there, or upload fewer images",
                        reason=REASON_DISK_FULL, retryable=True,
                        metadata={"data_dir": str(self.blobs.root.parent), "free_bytes": str(free_at_start)})
                if too_big is not None:
                    # The rest is read and dropped (memory and disk stay bounded) before the refusal:
                    # a client still sending when the status arrives would see INTERNAL instead.
                    await _discard(request_iterator, DISCARD_BYTES)
                    raise too_big
                if len(sizes) > MAX_DATASET_IMAGES:
                    raise InvalidArgument("chunk", f"more than {MAX_DATASET_IMAGES} images")
                if chunk.image_name not in open_files:
                    fd, temp = tempfile.mkstemp(dir=self.blobs.root, prefix=TEMP_PREFIX)
                    open_files[chunk.image_name] = (Path(temp), os.fdopen(fd, "wb"))
                temp_path, file = open_files[chunk.image_name]
                await asyncio.to_thread(file.write, chunk.data)
                if chunk.last:
                    del open_files[chunk.image_name]
                    file.close()
                    images[chunk.image_name] = types_pb2.BlobRef(
                        name=chunk.image_name, size_bytes=sizes[chunk.image_name])
                    # Checked in a thread (zlib and Pillow release the GIL) while the next images arrive.
                    checking[chunk.image_name] = asyncio.ensure_future(
                        asyncio.to_thread(self._store_image, chunk.image_name, temp_path, written))
                    if len(checking) >= VALIDATING_IMAGES:  # bounded: the checks must keep up with the stream
                        await asyncio.wait(checking.values(), return_when=asyncio.FIRST_COMPLETED)
            if not name:
                raise InvalidArgument("header.name", "missing")
            if open_files:
                raise InvalidArgument("chunk.last", f"image {echo(sorted(open_files)[0])} was never closed")
            if not images:
                raise InvalidArgument("chunk", "no images uploaded: a dataset needs at least one PNG or JPEG image")
            while checking:
                await asyncio.wait(checking.values(), return_when=asyncio.FIRST_COMPLETED)
                harvest()
            if written:
                await asyncio.to_thread(os.sync)  # the dataset's new blobs on disk: one sync, not one per file
            existing = self.store.find_dataset(name)
            if existing is not None and existing.name == name and existing.owner != owner:
                raise AlreadyExists(f"dataset name {echo(name)} is taken; upload under another name",
                                    field="header.name")
            return await self._store_dataset(name, owner, [images[n] for n in sorted(images)], existing)
        except BaseException as exc:
            # The checks still running finish first: a blob renamed after the clean-up would stay.
            await asyncio.gather(*checking.values(), return_exceptions=True)
            self._remove_unreferenced(written)
            if is_disk_full(exc):
                await _discard(request_iterator, DISCARD_BYTES)  # see the total limit above
            raise
        finally:
            for temp_path, file in open_files.values():
                file.close()
                temp_path.unlink(missing_ok=True)
            self.uploading.subtract(held)
            self.uploading += Counter()  # drops the digests no upload holds any more

    def _store_image(self, image_name: str, temp_path: Path, written: list[str]) -> str:
        """Checks one closed image from its temporary file and stores it as a blob (in a thread);
        the temporary file is gone when this returns.

        Returns:
            Its sha256; appended to ``written`` when this call stored it.

        Raises:
            ImageDecodeError: not an image a worker can decode (datasets.check_image).
            OSError: the blob could not be written (e.g. ``ENOSPC``).
        """
        try:
            data = temp_path.read_bytes()  # one image at most (datasets.MAX_FILE_BYTES)
            datasets.check_image(image_name, data)
            digest = bundles.sha256_hex(data)
            if not self.blobs.has(digest):
                # The temporary file becomes the blob (a rename: no second copy on a nearly full disk).
                self.blobs.path(digest).parent.mkdir(mode=0o700, exist_ok=True)
                os.replace(temp_path, self.blobs.path(digest))
                written.append(digest)
            return digest
        finally:
            temp_path.unlink(missing_ok=True)

    def _remove_unreferenced(self, digests: list[str]) -> None:
        """Deletes the blobs of a failed upload that nothing references (a full disk stays not full)."""
        if not digests:
            return
        referenced = self.store.referenced_blobs()
        for digest in digests:
            if digest not in referenced and self.uploading[digest] <= 1:
                self.blobs.remove(digest)

    async def _store_dataset(
        self, name: str, owner: str, images: list[types_pb2.BlobRef], existing: orchestrator_pb2.Dataset | None
    ) -> orchestrator_pb2.CreateDatasetResponse:
        """Stores an uploaded dataset (its blobs are stored) unless one with this name exists.

        Raises:
            AlreadyExists: the name is taken by another user's dataset or by other images.
        """
        dataset = orchestrator_pb2.Dataset(
            name=name,
            digest=datasets.dataset_digest([(i.name, i.sha256) for i in images]),
            images=images,
            create_time=_now(),
            owner=owner,
        )
        if existing is not None and existing.name == name:
            if existing.digest == dataset.digest:
                return orchestrator_pb2.CreateDatasetResponse(dataset=existing)  # the same upload again
            # Queued experiments name this dataset: its images must not change under them.
            raise AlreadyExists(
                f"dataset {echo(name)} exists with other images (digest {existing.digest}); upload under another name",
                field="header.name",
                metadata={"digest": existing.digest},
            )
        self.store.put_dataset(dataset)
        self.log.info("dataset.created", dataset=name, images=len(images), digest=dataset.digest, owner=owner)
        return orchestrator_pb2.CreateDatasetResponse(dataset=dataset)

    async def ListDatasets(  # noqa: N802
        self,
        request: orchestrator_pb2.ListDatasetsRequest,
        context: grpc.aio.ServicerContext[orchestrator_pb2.ListDatasetsRequest, orchestrator_pb2.ListDatasetsResponse],
    ) -> orchestrator_pb2.ListDatasetsResponse:
        """The datasets the caller may see (documented in orchestrator.proto)."""
        principal = auth.current()
        return orchestrator_pb2.ListDatasetsResponse(
            datasets=[d for d in self.store.list_datasets() if _may_see_dataset(d, principal)]
        )

    async def ShareDataset(  # noqa: N802
        self,
        request: orchestrator_pb2.ShareDatasetRequest,
        context: grpc.aio.ServicerContext[orchestrator_pb2.ShareDatasetRequest, orchestrator_pb2.ShareDatasetResponse],
    ) -> orchestrator_pb2.ShareDatasetResponse:
        """Admins only: makes a dataset readable by every user, or private again (documented in orchestrator.proto)."""
        validation.check_text(request.name, "name", validation.MAX_NAME_CHARS)
        dataset = self.store.find_dataset(request.name) if request.name else None
        if dataset is None or dataset.name != request.name:
            raise NotFound(f"no dataset {echo(request.name)}", field="name")
        if dataset.builtin:
            raise InvalidArgument("name", f"{echo(request.name)} is built-in: every user reads it already")
        dataset.shared = request.shared
        self.store.put_dataset(dataset)
        # Images are content-addressed: one shared dataset makes its images readable by everyone.
        # Unsharing leaves that mark on images that another shared dataset still has.
        still_shared = {i.sha256 for d in self.store.list_datasets() if d.shared for i in d.images}
        for image in dataset.images:
            if request.shared:
                self.store.add_blob_owner(image.sha256, EVERYONE)
            elif image.sha256 not in still_shared:
                self.store.remove_blob_owner(image.sha256, EVERYONE)
        self.log.info("dataset.shared", dataset=dataset.name, shared=request.shared, by=auth.current().name)
        return orchestrator_pb2.ShareDatasetResponse(dataset=dataset)

    async def ShareExperiment(  # noqa: N802
        self,
        request: orchestrator_pb2.ShareExperimentRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.ShareExperimentRequest, orchestrator_pb2.ShareExperimentResponse],
    ) -> orchestrator_pb2.ShareExperimentResponse:
        """Admins only: makes a SUCCEEDED experiment a shared result-cache entry, or its owner's only
        again (documented in orchestrator.proto; the cache: orchestrator_svc.cache)."""
        validation.check_text(request.experiment_id, "experiment_id", validation.MAX_NAME_CHARS)
        exp = self.store.get_experiment(request.experiment_id) if request.experiment_id else None
        if exp is None:
            raise NotFound(f"no experiment {echo(request.experiment_id)}", field="experiment_id")
        if exp.state != SUCCEEDED or exp.cached_from:
            raise errors.FailedPrecondition(
                f"experiment {exp.experiment_id} is {state_name(exp.state)}"
                f"{f', a copy of {exp.cached_from}' if exp.cached_from else ''}: only a SUCCEEDED experiment that "
                "was evaluated (not copied from the cache) can be a shared cache entry"
                + (f"; share {exp.cached_from} instead" if exp.cached_from else ""),
                field="experiment_id")
        self.store.share_cache_entry(exp.experiment_id, request.shared, auth.current().name)
        self.log.info("experiment.cache_shared", experiment_id=exp.experiment_id, shared=request.shared,
                      by=auth.current().name)
        return orchestrator_pb2.ShareExperimentResponse(experiment=exp)

    async def ReadBlob(  # noqa: N802
        self,
        request: orchestrator_pb2.ReadBlobRequest,
        context: grpc.aio.ServicerContext[orchestrator_pb2.ReadBlobRequest, orchestrator_pb2.ReadBlobResponse],
    ) -> AsyncIterator[orchestrator_pb2.ReadBlobResponse]:
        """Streams a blob the caller may read, in chunks (documented in orchestrator.proto)."""
        if not bundles.is_sha256(request.sha256):
            raise InvalidArgument("sha256", f"{echo(request.sha256)} is not 64 lower-case hex digits")
        path = self.blobs.path(request.sha256)
        # Not readable by this caller reads as not stored: a digest's existence is not revealed.
        if not path.exists() or not self._may_read(request.sha256):
            raise NotFound(f"no blob {request.sha256}", field="sha256", reason=errors.REASON_BLOB_MISSING)
        size = path.stat().st_size
        self.blob_reads[request.sha256] += 1
        with path.open("rb") as f:
            first = True
            while chunk := f.read(rpc.CHUNK_BYTES):
                yield orchestrator_pb2.ReadBlobResponse(data=chunk, size_bytes=size if first else 0)
                first = False

    # -- workers -----------------------------------------------------------------------------

    async def RegisterWorker(  # noqa: N802
        self,
        request: orchestrator_pb2.RegisterWorkerRequest,
        context: grpc.aio.ServicerContext[
            orchestrator_pb2.RegisterWorkerRequest, orchestrator_pb2.RegisterWorkerResponse
        ],
    ) -> orchestrator_pb2.RegisterWorkerResponse:
        """Registers a worker and returns its per-worker credential (documented in orchestrator.proto)."""
        info = request.worker
        validation.check_text(info.worker_id, "worker.worker_id", MAX_WORKER_ID_CHARS, required=True)
        validation.check_text(info.address, "worker.address", validation.MAX_NAME_CHARS, required=True)
        validation.check_text(info.build_id, "worker.build_id", validation.MAX_ID_CHARS)
        validation.check_text(info.protocol_version, "worker.protocol_version", validation.MAX_ID_CHARS)
        validation.check_text(info.host, "worker.host", validation.MAX_NAME_CHARS)
        validation.check_text(request.worker_credential, "worker_credential", validation.MAX_ID_CHARS)
        validation.check_count(len(info.devices), "worker.devices", validation.MAX_DEVICES)
        for i, device in enumerate(info.devices):
            validation.check_text(device.name, f"worker.devices[{i}].name", validation.MAX_NAME_CHARS)
            validation.check_text(device.description, f"worker.devices[{i}].description", validation.MAX_NAME_CHARS)
        if not 1 <= info.slots <= MAX_WORKER_SLOTS:
            raise InvalidArgument("worker.slots", f"{info.slots} must be between 1 and {MAX_WORKER_SLOTS}")
        validation.check_timeouts(info.default_timeouts, "worker.default_timeouts")
        bound = self.store.worker_credential(info.worker_id)
        if bound is not None:
            # A known id is taken only by the holder of its credential (after an orchestrator
            # restart too: the binding is stored); anyone else is refused, never takes its place.
            presented = auth.token_hash(request.worker_credential) if request.worker_credential else ""
            if not auth.same_secret(presented, bound):
                self.log.warning("worker.registration_refused", worker_id=info.worker_id, address=info.address)
                raise AlreadyExists(
                    f"worker id {echo(info.worker_id)} is registered with another credential (a restarted worker "
                    "takes a new id)", field="worker.worker_id",
                )
            credential = request.worker_credential
        else:
            credential = auth.new_token()
            self.store.bind_worker_credential(info.worker_id, auth.token_hash(credential))
        known = self.registry.get(info.worker_id)
        if known is not None and known.info.address != info.address:
            # Whatever ran under this id at the old address is no longer ours to wait for.
            self.scheduler.mark_lost(known, f"registered again from {info.address}")
        entry = await self.registry.register(info, credential)
        self.log.info(
            "worker.registered",
            worker_id=info.worker_id,
            address=info.address,
            build_id=info.build_id,
            state=orchestrator_pb2.WorkerState.Name(entry.state),
        )
        self.scheduler.wake.set()
        return orchestrator_pb2.RegisterWorkerResponse(
            status=entry.status(), heartbeat_interval_s=self.heartbeat_interval_s, worker_credential=credential
        )

    async def Heartbeat(  # noqa: N802
        self,
        request: orchestrator_pb2.HeartbeatRequest,
        context: grpc.aio.ServicerContext[orchestrator_pb2.HeartbeatRequest, orchestrator_pb2.HeartbeatResponse],
    ) -> orchestrator_pb2.HeartbeatResponse:
        """Records that the calling worker is alive and answers with its status (documented in orchestrator.proto)."""
        if request.worker_id != auth.current().name:
            raise PermissionDenied(f"a worker sends heartbeats for itself, not for {echo(request.worker_id)}",
                                   field="worker_id")
        entry = self.registry.get(request.worker_id)
        if entry is None or entry.lost_reason:
            # A LOST worker must register again: its experiments were already requeued.
            raise NotFound(f"{echo(request.worker_id)} is not registered", field="worker_id")
        was_ready = entry.state == READY
        entry.heard(request.slots_in_use)
        if entry.state == READY and not was_ready:
            self.scheduler.wake.set()  # a slot freed outside this orchestrator's dispatches
        return orchestrator_pb2.HeartbeatResponse(status=entry.status())

    async def ListWorkers(  # noqa: N802
        self,
        request: orchestrator_pb2.ListWorkersRequest,
        context: grpc.aio.ServicerContext[orchestrator_pb2.ListWorkersRequest, orchestrator_pb2.ListWorkersResponse],
    ) -> orchestrator_pb2.ListWorkersResponse:
        """Every registered worker's status; less of it to non-admins (documented in orchestrator.proto)."""
        principal = auth.current()
        statuses = [w.status() for w in self.registry.workers.values()]
        if not principal.is_admin:
            statuses = [_public_status(s) for s in statuses]
        queues = [
            orchestrator_pb2.OwnerQueue(owner=owner, queued=queued, running=running,
                                        weight=self.scheduler.fair.weight(owner))
            for owner, (queued, running) in sorted(self.store.queue_depths().items())
            if principal.is_admin or owner == principal.name  # other users' names are not shown
        ]
        return orchestrator_pb2.ListWorkersResponse(workers=statuses, owner_queues=queues)

    async def DrainWorker(  # noqa: N802
        self,
        request: orchestrator_pb2.DrainWorkerRequest,
        context: grpc.aio.ServicerContext[orchestrator_pb2.DrainWorkerRequest, orchestrator_pb2.DrainWorkerResponse],
    ) -> orchestrator_pb2.DrainWorkerResponse:
        """Stops dispatching to a worker; its running experiments finish (documented in orchestrator.proto).

        Raises:
            PermissionDenied: a worker asked to drain another worker.
        """
        validation.check_text(request.worker_id, "worker_id", MAX_WORKER_ID_CHARS, required=True)
        principal = auth.current()
        if principal.role == auth.ROLE_WORKER and request.worker_id != principal.name:
            raise PermissionDenied(f"a worker drains itself, not {echo(request.worker_id)}", field="worker_id")
        if request.exiting and principal.role != auth.ROLE_WORKER:
            raise PermissionDenied("only a worker says that it exits, of itself", field="exiting")
        entry = self.registry.get(request.worker_id)
        if entry is None:
            raise NotFound(f"no worker {echo(request.worker_id)}", field="worker_id")
        entry.draining = True
        if request.exiting:
            status = entry.status()
            if entry.running:  # it exits with work still here: that work is lost, as with any loss
                self.scheduler.mark_lost(entry, "it exited while running experiments")
            else:
                await self.registry.remove_exited(entry)
            return orchestrator_pb2.DrainWorkerResponse(status=status)
        self.log.info("worker.draining", worker_id=request.worker_id, by=principal.name)
        return orchestrator_pb2.DrainWorkerResponse(status=entry.status())
