"""Starting real codecbench services for tests: in-process, or as child processes that a test
can SIGKILL."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from worker_helpers import png_bytes

from orchestrator_svc.server import OrchestratorConfig, OrchestratorHandle, start_orchestrator
from worker_svc.registration import OrchestratorLink
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(rb"listening on (\S+)")


def free_port() -> int:
    """A port that was free a moment ago (for a service that must come back on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        (folder / f"img{i}.png").write_bytes(png_bytes(h, w, seed=i + 1))
    return folder


@dataclass
class ChildService:
    """A service running as a child process (``python -m orchestrator_svc|worker_svc``)."""

    proc: asyncio.subprocess.Process
    address: str
    stderr_lines: list[bytes] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await self.proc.wait()
        if self._drain:
            await asyncio.gather(self._drain, return_exceptions=True)
        return code


async def spawn(module: str, *args: str) -> ChildService:
    """Starts ``python -m module args`` and waits for its "listening on HOST:PORT" line."""
    if module == "worker_svc" and shutil.which("bwrap") is None:
        args = (*args, "--isolation", "process")  # the worker refuses to start unsandboxed unless told
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    service = ChildService(proc=proc, address="")

    async def drain_stderr() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            service.stderr_lines.append(line)

    service._drain = asyncio.create_task(drain_stderr())
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    match = _LISTENING.search(line)
    if not match:
        service.kill()
        raise RuntimeError(f"{module} did not start: {line!r} {b''.join(service.stderr_lines[-20:])!r}")
    service.address = match.group(1).decode()
    return service


@dataclass
class AttachedWorker:
    handle: WorkerHandle
    link: OrchestratorLink
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.handle.stop(0)
        await self.link.close()


async def attach_worker(orchestrator_address: str, data_dir: Path, **config: object) -> AttachedWorker:
    """An in-process worker that registers with the orchestrator and sends heartbeats."""
    link = OrchestratorLink(orchestrator_address)
    handle = await start_worker(WorkerConfig(data_dir=data_dir, **config), link.read_blob)  # type: ignore[arg-type]
    return AttachedWorker(handle, link, asyncio.create_task(link.keep_registered(handle)))


@asynccontextmanager
async def orchestrator(data_dir: Path, **config: object) -> AsyncIterator[OrchestratorHandle]:
    handle = await start_orchestrator(OrchestratorConfig(data_dir=data_dir, **config))  # type: ignore[arg-type]
    try:
        yield handle
    finally:
        await handle.stop(0)
