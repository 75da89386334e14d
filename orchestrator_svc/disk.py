"""A full data directory is a state of the orchestrator, not a crash (issue 14).

When a write fails for lack of space (``ENOSPC``/``EDQUOT`` from a blob write, SQLite's "database
or disk is full"), :class:`DataDir` marks the store unwritable: health turns NOT_SERVING, the call
fails RESOURCE_EXHAUSTED (reason ``DISK_FULL``) naming the data directory and its free space, and
the scheduler dispatches nothing. Reads (list, get, watch, blob reads) go on. :meth:`DataDir.check`
(called by the scheduler's loop) writes a probe file; once that works, health is SERVING again and
the callbacks run (the scheduler settles the experiments whose results could not be stored).

:func:`collect_garbage` removes blobs that no dataset or experiment references and temporary files
an interrupted write left behind (``codecbench-orchestrator gc``, and at every start).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health as grpc_health

from codecbench import errors, logs, rpc
from codecbench.blobs import BlobStore
from orchestrator_svc.store import Store

REASON_DISK_FULL = "DISK_FULL"
# The probe that proves the data directory takes writes again: a file of this size, written and synced.
_PROBE_BYTES = 256 * 1024
# Kept free for opening the database on a full disk (see DataDir.reserve).
RESERVE_BYTES = 1024 * 1024
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How SQLite words SQLITE_FULL (sqlite3.OperationalError carries no errno).
_SQLITE_FULL = "database or disk is full"


# SQLite's words when it cannot make its WAL files, and for a write to a database opened read-only.
_SQLITE_IO = "disk I/O error"
_SQLITE_READONLY = "attempt to write a readonly database"


def _messages(exc: BaseException) -> str:
    """The messages of ``exc`` and of the exceptions it was raised from, one per line."""
    seen: set[int] = set()
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return "\n".join(parts)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the filesystem has no space left."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _SPACE_ERRNOS:
            return True
        if _SQLITE_FULL in str(current):
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


class DataDir:
    """The writability of the orchestrator's data directory, shown in its health status.

    Args:
        path: the data directory.
        health: the health servicer whose services turn NOT_SERVING while the directory is full.
        service_names: those services.
    """

    def __init__(self, path: Path, health: grpc_health.aio.HealthServicer | None = None,
                 service_names: Iterable[str] = ()) -> None:
        self.path = path
        self.health = health
        self.service_names = list(service_names)
        self.full = False
        self.on_writable: list[Callable[[], object]] = []
        self.log = logs.get_logger("orchestrator")

    def free_bytes(self) -> int:
        """Bytes free for this process on the data directory's filesystem."""
        return shutil.disk_usage(self.path).free

    def refusal(self) -> errors.ResourceExhausted:
        """The error of a write refused for lack of space: names the data directory and its free space."""
        free = self.free_bytes()
        return errors.ResourceExhausted(
            f"the data directory {self.path} is full ({free} bytes free): the orchestrator serves reads only "
            "until space is freed on its filesystem (delete other files there, or enlarge it); it takes writes "
            "again by itself once there is room. Unreferenced blobs are removed at each start of the "
            "orchestrator, and by `codecbench-orchestrator gc` while it is stopped",
            reason=REASON_DISK_FULL, metadata={"data_dir": str(self.path), "free_bytes": str(free)}, retryable=True,
        )

    def mark_full(self) -> None:
        """Records that a write failed for lack of space: NOT_SERVING until :meth:`check` succeeds."""
        if not self.full:
            self.full = True
            self.log.error("store.disk_full", data_dir=str(self.path), free_bytes=self.free_bytes())
            self._announce(serving=False)

    def no_room(self, exc: BaseException) -> bool:
        """Whether ``exc`` failed for lack of space: :func:`is_disk_full`, or SQLite's vaguer "disk I/O
        error" (it cannot make its WAL files) while the filesystem has less than :data:`RESERVE_BYTES`
        free, or a write refused by the database opened read-only on a full disk (:attr:`full`)."""
        if is_disk_full(exc):
            return True
        text = _messages(exc)
        if _SQLITE_IO in text and self.free_bytes() < RESERVE_BYTES:
            return True
        return self.full and _SQLITE_READONLY in text

    def translate(self, exc: BaseException) -> errors.CodecbenchError | None:
        """For the error boundary: a full disk is RESOURCE_EXHAUSTED (see :meth:`refusal`); else None."""
        if not self.no_room(exc):
            return None
        self.mark_full()
        return self.refusal()

    def probe(self) -> bool:
        """Whether a file of a few hundred KiB can be written and synced in the data directory now."""
        probe = self.path / ".write-probe"
        try:
            with probe.open("wb") as f:
                f.write(b"\0" * _PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)

    async def check(self) -> None:
        """When marked full: probes, and once a write works again turns SERVING and runs the callbacks."""
        if not self.full or not await asyncio.to_thread(self.probe):
            return
        self.full = False
        self.keep_reserve()
        self.log.info("store.writable_again", data_dir=str(self.path), free_bytes=self.free_bytes())
        self._announce(serving=True)
        for callback in self.on_writable:
            result = callback()
            if asyncio.iscoroutine(result):
                await result

    @property
    def reserve(self) -> Path:
        """A file of :data:`RESERVE_BYTES` kept in the data directory; deleted at a start on a full
        disk, it makes room for SQLite to open the database (its WAL and shared-memory files)."""
        return self.path / ".reserve"

    def keep_reserve(self) -> None:
        """Makes the reserve file when it is missing and there is room for it (else leaves it missing)."""
        if self.reserve.exists():
            return
        try:
            with os.fdopen(os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        """Deletes the reserve file when the disk is (nearly) full; True when that freed space."""
        if self.free_bytes() >= RESERVE_BYTES or not self.reserve.exists():
            return False
        self.reserve.unlink()
        self.log.warning("store.reserve_released", data_dir=str(self.path), free_bytes=self.free_bytes())
        return True

    def _announce(self, serving: bool) -> None:
        if self.health is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(rpc.set_serving(self.health, self.service_names, serving=serving))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()


class DataDirBusy(RuntimeError):
    """Another process (a running orchestrator, or ``gc``) holds the data directory's lock."""


def lock_data_dir(path: Path, holder: str) -> int:
    """Takes the data directory's exclusive lock (``flock`` on the directory itself: it needs no new
    file, so it works on a full disk); the kernel drops it when the process ends, even by SIGKILL.

    The running orchestrator holds it for its lifetime, and ``gc`` for its run: a ``gc`` beside a
    running service would delete the blobs of an upload or a CreateExperiment in progress, which
    the store does not reference yet.

    Args:
        path: the data directory.
        holder: who asks, for the message ("the orchestrator", "gc").

    Returns:
        The file descriptor holding the lock; close it (:func:`unlock_data_dir`) to release it.

    Raises:
        DataDirBusy: another process holds it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"{holder}: the data directory {path} is in use by another process (a running orchestrator, or gc): "
            "stop the orchestrator first, or let it collect the garbage itself (it removes unreferenced blobs "
            "at each start)") from None
    return fd


def unlock_data_dir(fd: int) -> None:
    """Releases the lock taken by :func:`lock_data_dir`."""
    os.close(fd)


@dataclass(frozen=True)
class Collected:
    """What :func:`collect_garbage` removed: blobs and temporary files, and the bytes freed."""

    blobs: int
    temp_files: int
    bytes_freed: int


def collect_garbage(store: Store, blobs: BlobStore, keep: Iterable[str] = ()) -> Collected:
    """Removes the blobs no dataset or experiment references (and their owner rows), and the
    temporary files of interrupted blob writes.

    Args:
        store: the datasets and experiments whose blobs stay.
        blobs: the blob directory.
        keep: more digests to keep (uploads in progress).

    Returns:
        The counts and bytes removed.
    """
    referenced = store.referenced_blobs() | set(keep)
    gone: list[str] = []
    temps = freed = 0
    for path in sorted(blobs.root.glob("*/*")):
        if not path.is_file() or (not blobs.is_temp_name(path.name) and path.name in referenced):
            continue
        freed += path.stat().st_size
        path.unlink(missing_ok=True)
        if blobs.is_temp_name(path.name):
            temps += 1
        else:
            gone.append(path.name)
    # Files first, rows after: on a full disk the deletions are what makes the database writable.
    store.forget_blobs(gone)
    removed = len(gone)
    if removed or temps:
        logs.get_logger("orchestrator").info("blobs.collected", blobs=removed, temp_files=temps, bytes_freed=freed)
    return Collected(removed, temps, freed)


__all__ = ["REASON_DISK_FULL", "Collected", "DataDir", "DataDirBusy", "collect_garbage", "is_disk_full",
           "lock_data_dir", "unlock_data_dir"]
