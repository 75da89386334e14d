"""Per-agent-process cgroups: a ``pids`` limit (fork bombs) and a ``memory`` limit.

``RLIMIT_NPROC`` does not stop a fork bomb when the worker runs as root, not even inside a user
namespace; a pids cgroup does. A memory cgroup kills the process with SIGKILL at its limit, and
its OOM counter tells that kill apart from others, so MEMORY_LIMIT is reported exactly.
Supports cgroup v1 (``/sys/fs/cgroup/{pids,memory}``) and v2 (unified). Where the hierarchy is
not writable (no root, no delegation) :func:`create` returns None and the rlimits remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "codecbench"


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
        while (left := self.pids()) and loop.time() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.01)
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
            directory = base / f"{PREFIX}-{name}"
            directory.mkdir()
            (directory / "pids.max").write_text(str(pids_max))
            if memory_bytes:
                (directory / "memory.max").write_text(str(memory_bytes))
                (directory / "memory.swap.max").write_text("0")
            return AgentCgroup(directory, directory if memory_bytes else None, v2=True)
        pids_dir = _v1_base("pids") / PREFIX / name
        pids_dir.mkdir(parents=True)
        (pids_dir / "pids.max").write_text(str(pids_max))
        memory_dir = None
        if memory_bytes:
            memory_dir = _v1_base("memory") / PREFIX / name
            memory_dir.mkdir(parents=True)
            (memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
        return AgentCgroup(pids_dir, memory_dir, v2=False)
    except OSError:
        return None
