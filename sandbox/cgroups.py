"""Per-agent-process cgroups: a ``pids`` limit (fork bombs) and a ``memory`` limit.

``RLIMIT_NPROC`` does not stop a fork bomb when the worker runs as root, not even inside a user
namespace; a pids cgroup does. A memory cgroup kills the process with SIGKILL at its limit, and
its OOM counter tells that kill apart from others, so MEMORY_LIMIT is reported exactly.
Supports cgroup v1 (``/sys/fs/cgroup/{pids,memory}``) and v2 (unified). Where the hierarchy is
not writable (no root, no delegation) :func:`create` returns None and the rlimits remain.

Every agent cgroup is named after the worker process that made it (:func:`worker_tag`: its PID
and start time, so a reused PID is not mistaken for it): on v1 ``codecbench/<tag>/agent-*``
under each controller, on v2 ``codecbench-<tag>-agent-*`` in the worker's own cgroup. A worker
that was SIGKILLed cannot remove its cgroups; the next worker to start removes those of every
worker that is gone (:func:`sweep`), and never touches a live worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "codecbench"
_LEGACY_AGE_S = 60.0
_TAG = re.compile(r"worker-(\d+)-(\d+)")
_V2_NAME = re.compile(rf"{PREFIX}-(worker-\d+-\d+)-agent-[0-9a-f]+")


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None: no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


@cache
def worker_tag() -> str:
    """``worker-<pid>-<start time>`` of this process: names the cgroups it creates."""
    pid = os.getpid()
    return f"worker-{pid}-{_start_time(pid) or 0}"


def _is_alive(tag: str) -> bool:
    match = _TAG.fullmatch(tag)
    if match is None:
        return True  # not ours to judge
    return _start_time(int(match[1])) == int(match[2])


@dataclass
class AgentCgroup:
    """The cgroup directories of one agent process (one per controller on v1, one on v2)."""

    pids_dir: Path
    memory_dir: Path | None
    v2: bool

    def add(self, pid: int) -> None:
        """Moves a process (and so everything it forks later) into the cgroup."""
        for directory in {self.pids_dir, self.memory_dir} - {None}:
            (directory / "cgroup.procs").write_text(str(pid))  # type: ignore[operator]

    def oom_killed(self) -> bool:
        """Whether the memory limit killed a process of this cgroup."""
        if self.memory_dir is None:
            return False
        try:
            if self.v2:
                events = (self.memory_dir / "memory.events").read_text()
            else:
                events = (self.memory_dir / "memory.oom_control").read_text()
        except OSError:
            return False
        for line in events.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and int(value or 0) > 0:
                return True
        return False

    def released(self) -> bool:
        """Whether every process that was in the cgroup has been reaped: ``pids.current`` is 0.

        Stronger than an empty ``cgroup.procs``, which drops a process as soon as its threads
        start to exit, before its memory and files are released; the pids count falls only when
        the process is reaped. An unreadable count reads as not released.
        """
        try:
            return int((self.pids_dir / "pids.current").read_text()) == 0
        except (OSError, ValueError):
            return False

    def kill_all(self) -> None:
        """SIGKILLs every process in the cgroup (a process that escaped its session or PID namespace included)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def pids(self) -> set[int]:
        """The processes still in the cgroup."""
        try:
            return {int(line) for line in (self.pids_dir / "cgroup.procs").read_text().split()}
        except OSError:
            return set()

    async def remove(self, timeout_s: float = 5.0) -> None:
        """SIGKILLs whatever is left in the cgroup (a process that escaped its session or PID
        namespace included), waits until it is empty, and deletes it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pids() and loop.time() < deadline:
            self.kill_all()
            await asyncio.sleep(0.01)
        # In a thread: removing a memory cgroup waits for the kernel to release its charges.
        await asyncio.to_thread(self._rmdir)

    def _rmdir(self) -> None:
        for directory in {self.pids_dir, self.memory_dir} - {None}:
            with contextlib.suppress(OSError):
                directory.rmdir()  # type: ignore[union-attr]


def _v2_base() -> Path | None:
    if not (ROOT / "cgroup.controllers").exists():
        return None
    own = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split("::", 1)[-1]
    return ROOT / own.lstrip("/")


def _v1_base(controller: str) -> Path:
    """Our own cgroup of a v1 controller: agent cgroups nest under it, inside any limit it has."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return ROOT / controller / path.lstrip("/")
    return ROOT / controller


def create(memory_bytes: int, pids_max: int) -> AgentCgroup | None:
    """A new cgroup with ``pids.max`` and, when ``memory_bytes`` > 0, a memory limit.

    Returns None when cgroups cannot be created here (the caller logs it once).
    """
    name = f"agent-{uuid.uuid4().hex[:12]}"
    try:
        base = _v2_base()
        if base is not None:
            directory = base / f"{PREFIX}-{worker_tag()}-{name}"
            directory.mkdir()
            (directory / "pids.max").write_text(str(pids_max))
            if memory_bytes:
                (directory / "memory.max").write_text(str(memory_bytes))
                (directory / "memory.swap.max").write_text("0")
            return AgentCgroup(directory, directory if memory_bytes else None, v2=True)
        pids_dir = _v1_base("pids") / PREFIX / worker_tag() / name
        pids_dir.mkdir(parents=True)
        (pids_dir / "pids.max").write_text(str(pids_max))
        memory_dir = None
        if memory_bytes:
            memory_dir = _v1_base("memory") / PREFIX / worker_tag() / name
            memory_dir.mkdir(parents=True)
            (memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
        return AgentCgroup(pids_dir, memory_dir, v2=False)
    except OSError:
        return None


def _remove_tree(directory: Path) -> int:
    """Kills what is left in ``directory`` and its agent cgroups, removes them (deepest first) and
    returns how many cgroups went. Never raises."""
    removed = 0
    children = [child for child in directory.iterdir() if child.is_dir()] if directory.is_dir() else []
    for child in children:
        removed += _remove_tree(child)
    for attempt in range(50):
        try:
            pids = [int(line) for line in (directory / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            directory.rmdir()
            return removed + 1
        except FileNotFoundError:
            return removed
        except OSError:
            if attempt == 49:
                return removed
            time.sleep(0.01)  # killed processes take a moment to leave the cgroup
    return removed


def sweep() -> int:
    """Removes the agent cgroups of workers that are no longer running (a worker that was
    SIGKILLed leaves empty ones), killing any process still in them; returns how many went.

    Only cgroups named after a worker (:func:`worker_tag`) whose process is gone are touched, so
    workers sharing a host never remove each other's. Cgroups of the older flat layout
    (``codecbench/agent-*`` on v1, from workers before the per-worker layout) are removed only
    when empty and older than a minute, so not between an older worker's creating one and
    moving its process in. Never raises (no cgroups here: nothing to do).
    """
    removed = 0
    try:
        base = _v2_base()
        if base is not None:
            for child in base.iterdir():
                match = _V2_NAME.fullmatch(child.name)
                if match and not _is_alive(match[1]):
                    removed += _remove_tree(child)
            return removed
        for controller in ("pids", "memory"):
            parent = _v1_base(controller) / PREFIX
            if not parent.is_dir():
                continue
            for child in parent.iterdir():
                if not child.is_dir():
                    continue
                if _TAG.fullmatch(child.name):
                    if not _is_alive(child.name):
                        removed += _remove_tree(child)
                elif child.name.startswith("agent-") and time.time() - child.stat().st_mtime > _LEGACY_AGE_S:
                    with contextlib.suppress(OSError):
                        child.rmdir()  # fails (EBUSY) while a process is in it
                        removed += 1
    except OSError:
        pass
    return removed
