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

A refused or failed call raises the :mod:`codecbench.errors` tree, never a raw gRPC error:
:class:`~codecbench.errors.InvalidArgument` (with ``field`` and ``violations``),
:class:`~codecbench.errors.NotFound`, :class:`~codecbench.errors.Unavailable` (orchestrator not
reachable), ... with the status's ``reason`` and ``metadata`` on the exception
(:func:`codecbench.status.from_rpc_error`, applied in one place: :func:`_calls`).

Every call carries the user's bearer token as gRPC call credentials (:func:`codecbench.rpc.channel`);
the token is found by :func:`codecbench.auth.find_token` (``$CODECBENCH_TOKEN``, a token file, or
the file ``codecbench up`` writes). Without one, calls fail with
:class:`~codecbench.errors.Unauthenticated`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from codecbench import analysis, auth, bundles, datasets, devices, errors, rpc, values
from codecbench.status import from_rpc_error, from_spec_error
from codecbench.v1 import experiment_pb2, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

DEFAULT_SERVER = "127.0.0.1:50051"
# Default deadlines: a unary call answers in well under a second on a healthy service; an upload
# moves up to gigabytes in 1 MiB chunks.
DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_UPLOAD_TIMEOUT_S = 3600.0
# One CreateExperiments call carries at most this many specs (the service's limit is 1000) and
# about this many bytes of file content (the message limit is 64 MiB).
_BATCH_SPECS = 500
_BATCH_CONTENT_BYTES = 32 * 1024 * 1024
# How long a broken watch stream waits before it resumes (a back-off, not synchronisation).
_RECONNECT_PAUSE_S = 0.5


def default_server() -> str:
    """``$CODECBENCH_SERVER`` or 127.0.0.1:50051."""
    return os.environ.get("CODECBENCH_SERVER", DEFAULT_SERVER)


@contextlib.contextmanager
def _calls() -> Iterator[None]:
    """The client's one translation point: a failed call leaves as the :mod:`codecbench.errors` tree.

    Raises:
        errors.CodecbenchError: the tree's error for the failed call (``raise ... from`` the gRPC error).
    """
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


@dataclass(frozen=True)
class Submission:
    """The outcome of one spec of :meth:`Client.submit_many`: an experiment, or why it was refused.

    Attributes:
        request_id: the spec's request id.
        experiment: the experiment as stored; None when refused.
        error: the refusal (``errors.InvalidArgument`` with ``field`` naming the spec's bad field, ...);
            None when created.
    """

    request_id: str
    experiment: orchestrator_pb2.Experiment | None = None
    error: errors.RequestError | None = None



async def _resumed(open_stream: Callable[[], AsyncIterable[Any]], reconnect_s: float) -> AsyncIterator[Any]:
    """The responses of ``open_stream()``, opened again after UNAVAILABLE for up to ``reconnect_s``
    seconds of failed attempts; ``open_stream`` resumes from the caller's last position."""
    failing_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        try:
            with _calls():
                async for response in open_stream():
                    failing_since = None
                    yield response
            return
        except errors.Unavailable:
            failing_since = failing_since or loop.time()
            if loop.time() - failing_since > reconnect_s:
                raise
            await asyncio.sleep(_RECONNECT_PAUSE_S)

class Client:
    """An asyncio client of the orchestrator; use as ``async with Client(address) as client``.

    Every method raises :class:`codecbench.errors.Unavailable` when the orchestrator cannot be
    reached, besides the errors it lists.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        token_file: Path | None = None,
        tls: rpc.TlsConfig | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
    ) -> None:
        """Opens a channel (connecting lazily).

        Every unary call has a deadline (``call_timeout_s``; a dataset upload ``upload_timeout_s``),
        so a service that stops answering fails the call with :class:`~codecbench.errors.Unavailable`
        instead of leaving it waiting forever. A watch has no deadline (it lasts as long as the
        experiment); the channel's HTTP/2 keepalive pings (:func:`codecbench.rpc.channel_options`)
        find a dead connection under it, and the watch resumes or fails.

        Args:
            address: ``host:port``; default ``$CODECBENCH_SERVER`` or 127.0.0.1:50051.
            token: the bearer token; default: found by :func:`codecbench.auth.find_token`.
            token_file: a file holding the token (used when ``token`` is not given).
            tls: TLS settings (``ca`` to verify the orchestrator, ``cert``/``key`` for mutual TLS);
                plaintext when None.
            call_timeout_s: deadline of each unary call, in seconds.
            upload_timeout_s: deadline of a dataset upload, in seconds.

        Raises:
            OSError: ``token_file`` cannot be read.
        """
        self.address = address or default_server()
        self.call_timeout_s = call_timeout_s
        self.upload_timeout_s = upload_timeout_s
        self.channel = rpc.channel(self.address, auth.find_token(token, token_file), tls or rpc.NO_TLS)
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
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
        queue_timeout_s: float = 0.0,
        no_cache: bool = False,
        keep_reconstructions: int = 0,
    ) -> orchestrator_pb2.Experiment:
        """Queues an experiment: an agent folder (or bundle), a dataset, parameter points.

        Args:
            agent: the agent's folder, or a bundle built with :func:`codecbench.bundles.bundle_from_dir`.
            dataset: a dataset name (``photos`` or an uploaded one) or a dataset digest.
            points: parameter points, e.g. ``[{"quality": 10}, {"quality": 90}]``; none: one empty point.
            device: ``DEVICE_CPU`` (the default), ``DEVICE_CUDA`` or ``DEVICE_ANY``, or their short
                names ``cpu``, ``cuda``, ``any``.
            timeouts: limits in seconds; 0 keeps the worker's default.
            labels: key/value tags to find the experiment by.
            request_id: makes the submission idempotent: the same id returns the first experiment.
            max_attempts: attempts when workers are lost (0: the orchestrator's default).
            priority: higher runs first.
            entry_module: the agent's entry module when the folder's cannot be guessed.
            queue_timeout_s: fail it with UNSCHEDULABLE when, this many seconds after creation, no
                registered worker can run it (0: wait however long it takes).
            no_cache: evaluate it even when an identical earlier experiment of the caller (same agent
                files, dataset, points, device kind, worker build) succeeded; by default that one's
                result is copied at once (``cached_from`` names it).
            keep_reconstructions: keep the decoded images of the first N dataset images of each
                point as PNG blobs (``ImageResult.reconstruction``, read with :meth:`read_blob`);
                0 to 16.

        Returns:
            The experiment as stored: QUEUED, or already finished when its outcome came from the
            result cache, or an older one that ``request_id`` found.

        Raises:
            errors.InvalidArgument: a field is bad (``exc.field`` names it), e.g. an unknown dataset
                (``exc.reason == "DATASET_UNKNOWN"``).
            values.ValueConversionError: a parameter value has no protocol equivalent.
            FileNotFoundError: the agent folder does not exist.
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
            queue_timeout_s=queue_timeout_s,
            no_cache=no_cache,
            keep_reconstructions=keep_reconstructions,
        )
        with _calls():
            return (await self.stub.CreateExperiment(request, timeout=self.call_timeout_s)).experiment

    async def submit_many(
        self,
        agents: Iterable[str | Path | types_pb2.AgentBundle],
        dataset: str = datasets.PHOTOS,
        points: Iterable[Mapping[str, Any]] = (),
        device: str | devices.Device.ValueType = devices.CPU,
        timeouts: types_pb2.Timeouts | None = None,
        labels: Mapping[str, str] | None = None,
        max_attempts: int = 0,
        priority: int = 0,
        no_cache: bool = False,
        request_ids: Sequence[str] | None = None,
    ) -> builtins.list[Submission]:
        """Queues many candidates with the same dataset, points and settings (``CreateExperiments``).

        A file that several candidates share (same content) is uploaded once. Specs go in batches of
        up to 500; a refused spec does not stop the others (partial success).

        Args:
            agents: the candidates' folders or bundles.
            dataset: as in :meth:`submit`.
            points: as in :meth:`submit`, the same for every candidate.
            device: as in :meth:`submit`.
            timeouts: as in :meth:`submit`.
            labels: as in :meth:`submit`; a ``run`` label groups the candidates for :meth:`watch_many`
                and ranking.
            max_attempts: as in :meth:`submit`.
            priority: as in :meth:`submit` (it orders the caller's own experiments only).
            no_cache: evaluate each even when an identical earlier result could be reused.
            request_ids: one per agent (default: fresh ones); sending the same again creates nothing twice.

        Returns:
            One :class:`Submission` per agent, in order.

        Raises:
            values.ValueConversionError: a parameter value has no protocol equivalent.
            FileNotFoundError: an agent folder does not exist.
            ValueError: a folder has no identifiable entry module, or ``request_ids`` has another length.
            errors.InvalidArgument: the batch itself is malformed.
        """
        agents = list(agents)
        # Folders are read with one copy of each distinct content (files by digest in the bundles).
        from_dirs, contents = bundles.bundles_from_dirs(
            Path(a) for a in agents if not isinstance(a, types_pb2.AgentBundle))
        read = iter(from_dirs)
        bundles_ = [a if isinstance(a, types_pb2.AgentBundle) else next(read) for a in agents]
        if request_ids is None:
            prefix = uuid.uuid4().hex[:12]
            request_ids = [f"{prefix}-{i}" for i in range(len(bundles_))]
        if len(request_ids) != len(bundles_):
            raise ValueError(f"{len(request_ids)} request ids for {len(bundles_)} agents")
        point_list = [values.params_from_python(dict(p)) for p in points]
        requests = [
            orchestrator_pb2.CreateExperimentRequest(
                agent=bundle, dataset=dataset, points=point_list,
                device=devices.parse(device) if isinstance(device, str) else device, timeouts=timeouts,
                labels=dict(labels or {}), request_id=request_id, max_attempts=max_attempts, priority=priority,
                no_cache=no_cache,
            )
            for bundle, request_id in zip(bundles_, request_ids, strict=True)
        ]
        return await self.create_many(requests, contents)

    async def create_many(
        self, requests: Iterable[orchestrator_pb2.CreateExperimentRequest],
        contents: Mapping[str, bytes] | None = None,
    ) -> builtins.list[Submission]:
        """Sends specs in ``CreateExperiments`` batches, each shared file's content once.

        Args:
            requests: the specs, each with its own ``request_id``; their files carry content (sent
                once per digest, by digest afterwards: the requests are modified).
            contents: by sha256, the content of files that the specs name by digest only; it is
                attached to the first spec of a batch that needs it, and dropped after the call.

        Returns:
            One :class:`Submission` per spec, in order.

        Raises:
            errors.InvalidArgument: the batch itself is malformed.
        """
        out: list[Submission] = []
        uploaded: set[str] = set()  # stored for this caller by an earlier batch
        pending = list(requests)
        start = 0
        while start < len(pending):
            batch: list[orchestrator_pb2.CreateExperimentRequest] = []
            carried: set[str] = set()  # content sent by an earlier spec of this batch
            size = 0
            while start < len(pending) and len(batch) < _BATCH_SPECS and size < _BATCH_CONTENT_BYTES:
                request = pending[start]
                start += 1
                for f in request.agent.files:
                    if f.sha256 in uploaded or f.sha256 in carried:
                        f.ClearField("content")  # the service finds it by digest
                        continue
                    if not f.content and contents and f.sha256 in contents:
                        f.content = contents[f.sha256]
                    if f.content:
                        carried.add(f.sha256)
                        size += len(f.content)
                batch.append(request)
            with _calls():
                reply = await self.stub.CreateExperiments(
                    orchestrator_pb2.CreateExperimentsRequest(requests=batch), timeout=self.upload_timeout_s)
            if contents:  # the attached copies: ``contents`` keeps the one needed later
                for request in batch:
                    for f in request.agent.files:
                        if f.sha256 in contents:
                            f.ClearField("content")
            for request, result in zip(batch, reply.results, strict=True):
                if result.HasField("experiment"):
                    # A created spec's files are stored and the caller's: later batches send digests.
                    uploaded.update(f.sha256 for f in request.agent.files)
                    out.append(Submission(result.request_id, experiment=result.experiment))
                else:
                    out.append(Submission(result.request_id, error=from_spec_error(result.error)))
        return out

    async def get(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        """One experiment, with its result or error once it has ended.

        Args:
            experiment_id: as :meth:`submit` returned it.

        Returns:
            The stored experiment.

        Raises:
            errors.NotFound: no experiment has this id.
            errors.InvalidArgument: the id is empty.
        """
        with _calls():
            request = orchestrator_pb2.GetExperimentRequest(experiment_id=experiment_id)
            return (await self.stub.GetExperiment(request, timeout=self.call_timeout_s)).experiment

    async def list(
        self,
        states: Iterable[experiment_pb2.ExperimentState.ValueType] = (),
        labels: Mapping[str, str] | None = None,
        limit: int = 50,
        created_after: float | None = None,
    ) -> builtins.list[orchestrator_pb2.Experiment]:
        """Up to ``limit`` experiments, newest first, following page tokens.

        Args:
            states: only experiments in one of these ``ExperimentState`` values (none: all).
            labels: only experiments carrying all of these labels.
            limit: the most experiments returned.
            created_after: only experiments created after this Unix time, in seconds.

        Returns:
            The experiments, newest first.

        Raises:
            errors.InvalidArgument: an unknown state, or a time out of range.
        """
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
            with _calls():
                page = await self.stub.ListExperiments(request, timeout=self.call_timeout_s)
            out.extend(page.experiments)
            token = page.next_page_token
            if not token:
                break
        return out

    async def cancel(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        """Cancels an experiment (a running one's sandbox processes are killed).

        Args:
            experiment_id: as :meth:`submit` returned it.

        Returns:
            The experiment after the request (CANCELLED, or the terminal state it had reached).

        Raises:
            errors.NotFound: no experiment has this id.
        """
        with _calls():
            request = orchestrator_pb2.CancelExperimentRequest(experiment_id=experiment_id)
            return (await self.stub.CancelExperiment(request, timeout=self.call_timeout_s)).experiment

    async def watch(
        self, experiment_id: str, after_sequence: int = 0, reconnect_s: float = 30.0
    ) -> AsyncIterator[experiment_pb2.ExperimentEvent]:
        """Events after ``after_sequence`` until the terminal one.

        A broken stream is resumed from the last sequence seen (for up to ``reconnect_s`` of failed
        attempts), so nothing is missed or seen twice.

        Args:
            experiment_id: as :meth:`submit` returned it.
            after_sequence: the last sequence number already seen (0: from the start).
            reconnect_s: how long to keep trying to resume a broken stream, in seconds.

        Returns:
            An async iterator of events; it ends after the terminal event (result or error).

        Raises:
            errors.NotFound: no experiment has this id.
            errors.Unavailable: the stream stayed broken for ``reconnect_s``.
        """
        last = after_sequence

        def stream() -> AsyncIterable[orchestrator_pb2.WatchExperimentResponse]:
            return self.stub.WatchExperiment(
                orchestrator_pb2.WatchExperimentRequest(experiment_id=experiment_id, after_sequence=last))

        async for response in _resumed(stream, reconnect_s):
            last = response.event.sequence
            yield response.event
            if response.event.WhichOneof("event") in ("result", "error"):
                return

    async def watch_many(
        self, labels: Mapping[str, str], after_sequences: Mapping[str, int] | None = None, reconnect_s: float = 30.0
    ) -> AsyncIterator[experiment_pb2.ExperimentEvent]:
        """Events of every experiment carrying ``labels``, interleaved, until each has ended.

        A broken stream is resumed from the last sequence seen of each experiment (for up to
        ``reconnect_s`` of failed attempts), so nothing is missed or seen twice.

        Args:
            labels: the selector (at least one label); experiments created with them meanwhile join.
            after_sequences: per experiment id, the last sequence number already seen.
            reconnect_s: how long to keep trying to resume a broken stream, in seconds.

        Returns:
            An async iterator of events (``event.experiment_id`` tells whose).

        Raises:
            errors.InvalidArgument: no labels.
            errors.Unavailable: the stream stayed broken for ``reconnect_s``.
        """
        seen = dict(after_sequences or {})

        def stream() -> AsyncIterable[orchestrator_pb2.WatchExperimentsResponse]:
            return self.stub.WatchExperiments(
                orchestrator_pb2.WatchExperimentsRequest(labels=dict(labels), after_sequences=seen))

        async for response in _resumed(stream, reconnect_s):
            seen[response.event.experiment_id] = response.event.sequence
            yield response.event

    async def wait(self, experiment_id: str) -> orchestrator_pb2.Experiment:
        """Waits for the terminal event and returns the finished experiment.

        Args:
            experiment_id: as :meth:`submit` returned it.

        Returns:
            The experiment in its terminal state.

        Raises:
            errors.NotFound: no experiment has this id.
            errors.Unavailable: the orchestrator could not be reached for longer than the watch allows.
        """
        async for _ in self.watch(experiment_id):
            pass
        return await self.get(experiment_id)

    async def rank(
        self, baseline_id: str, labels: Mapping[str, str], metric: str = "psnr", limit: int = 100_000
    ) -> analysis.Ranking:
        """The experiments carrying ``labels`` ranked by BD-rate against a baseline (client-side:
        :func:`codecbench.analysis.rank`), with the ones that have none and the failures grouped.

        Args:
            baseline_id: a SUCCEEDED experiment, the anchor.
            labels: the candidates' labels, e.g. ``{"run": "tonight"}``.
            metric: ``psnr`` or ``ms_ssim``.
            limit: the most candidates looked at (newest first).

        Returns:
            The ranking.

        Raises:
            errors.NotFound: no baseline with this id.
            ValueError: the baseline has no RD curve, or an unknown metric.
        """
        if metric not in analysis.RANK_METRICS:
            raise ValueError(f"metric {metric!r} is not one of {', '.join(analysis.RANK_METRICS)}")
        baseline = await self.get(baseline_id)
        candidates = await self.list(labels=labels, limit=limit)
        candidates.reverse()  # listed newest first; ranked in submission order
        return analysis.rank(baseline, candidates, analysis.RANK_METRICS[metric])

    async def upload_dataset(self, name: str, folder: Path) -> orchestrator_pb2.Dataset:
        """Uploads every PNG/JPEG of a folder as a dataset, in chunks of at most 1 MiB.

        Args:
            name: the dataset's name (1-200 characters without '/'; not a built-in one).
            folder: the folder whose image files are uploaded (not recursive).

        Returns:
            The stored dataset with its digest; the same upload again returns it unchanged.

        Raises:
            FileNotFoundError: the folder does not exist.
            errors.InvalidArgument: an unreadable image (reason ``IMAGE_UNDECODABLE``) or a bad name.
            errors.AlreadyExists: a dataset of this name exists with other images.
        """
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES)
        if not files:  # said here: the orchestrator would only see an upload without images
            others = sorted(p.name for p in folder.iterdir() if p.is_file())
            skipped = f" (it has {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
            raise errors.InvalidArgument(
                "folder", f"{folder} has no {'/'.join(datasets.IMAGE_SUFFIXES)} files{skipped}: a dataset takes PNG "
                "and JPEG images only; convert other formats (GIF, WebP, TIFF) to PNG first",
            )

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

        with _calls():
            return (await self.stub.CreateDataset(messages(), timeout=self.upload_timeout_s)).dataset

    async def read_blob(self, sha256: str) -> bytes:
        """A blob the caller may read: a kept reconstruction (PNG) of an own experiment, an image
        of an own or shared dataset.

        Args:
            sha256: the blob's lower-case hex digest (as a ``BlobRef`` names it).

        Returns:
            Its bytes, checked against the digest.

        Raises:
            errors.NotFound: no such blob, or not readable by the caller (reason ``BLOB_MISSING``).
            errors.InvalidArgument: not 64 lower-case hex digits.
            errors.Unavailable: the orchestrator cannot be reached, or the bytes do not match the digest.
        """
        parts = []
        with _calls():
            request = orchestrator_pb2.ReadBlobRequest(sha256=sha256)
            async for response in self.stub.ReadBlob(request, timeout=self.upload_timeout_s):
                parts.append(response.data)
        data = b"".join(parts)
        if bundles.sha256_hex(data) != sha256:
            raise errors.Unavailable(f"blob {sha256} arrived damaged (its bytes do not match the digest)")
        return data

    async def datasets(self) -> builtins.list[orchestrator_pb2.Dataset]:
        """Every dataset the orchestrator knows, built-in ones included.

        Returns:
            The datasets with their images' names and digests.

        Raises:
            errors.Unavailable: the orchestrator cannot be reached.
        """
        with _calls():
            reply = await self.stub.ListDatasets(orchestrator_pb2.ListDatasetsRequest(), timeout=self.call_timeout_s)
            return list(reply.datasets)

    async def share_dataset(self, name: str, shared: bool = True) -> orchestrator_pb2.Dataset:
        """Makes an uploaded dataset readable by every user (admins only), or private again.

        Args:
            name: the dataset's name.
            shared: False makes it private to its owner again.

        Returns:
            The dataset with its new ``shared`` flag.

        Raises:
            errors.PermissionDenied: the caller is no admin.
            errors.NotFound: no dataset has this name.
        """
        with _calls():
            request = orchestrator_pb2.ShareDatasetRequest(name=name, shared=shared)
            return (await self.stub.ShareDataset(request, timeout=self.call_timeout_s)).dataset

    async def share_result(self, experiment_id: str, shared: bool = True) -> orchestrator_pb2.Experiment:
        """Makes a SUCCEEDED experiment a shared result-cache entry (admins only): every user's
        identical submission then completes with a copy of its result; ``shared=False`` keeps it to
        its owner again.

        Args:
            experiment_id: an evaluated (not cached) SUCCEEDED experiment.
            shared: False to withdraw it.

        Returns:
            The experiment.

        Raises:
            errors.PermissionDenied: the caller is not an admin.
            errors.NotFound: no experiment has this id.
            errors.FailedPrecondition: it did not succeed, or is itself a cached copy.
        """
        with _calls():
            request = orchestrator_pb2.ShareExperimentRequest(experiment_id=experiment_id, shared=shared)
            return (await self.stub.ShareExperiment(request, timeout=self.call_timeout_s)).experiment

    async def workers(self) -> builtins.list[orchestrator_pb2.WorkerStatus]:
        """Every registered worker, with its build, state (e.g. PENDING, STALE, LOST) and load (to
        non-admins: without address, build, host and pid).

        Returns:
            The workers' status.

        Raises:
            errors.Unavailable: the orchestrator cannot be reached.
        """
        with _calls():
            reply = await self.stub.ListWorkers(orchestrator_pb2.ListWorkersRequest(), timeout=self.call_timeout_s)
            return list(reply.workers)

    async def queues(self) -> builtins.list[orchestrator_pb2.OwnerQueue]:
        """Queued and running experiments per owner, with each owner's fair-share weight (to
        non-admins: their own entry only).

        Returns:
            One entry per owner with queued or running experiments, by name.

        Raises:
            errors.Unavailable: the orchestrator cannot be reached.
        """
        with _calls():
            reply = await self.stub.ListWorkers(orchestrator_pb2.ListWorkersRequest(), timeout=self.call_timeout_s)
            return list(reply.owner_queues)

    async def drain(self, worker_id: str) -> orchestrator_pb2.WorkerStatus:
        """Stops giving a worker new experiments; those it runs finish.

        Args:
            worker_id: as :meth:`workers` lists it.

        Returns:
            The worker's status, now draining.

        Raises:
            errors.NotFound: no worker has this id.
        """
        with _calls():
            request = orchestrator_pb2.DrainWorkerRequest(worker_id=worker_id)
            return (await self.stub.DrainWorker(request, timeout=self.call_timeout_s)).status
