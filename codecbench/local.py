"""A local orchestrator + worker pair as child processes (``codecbench up`` and ``make demo``).

Both run as their own interpreters (``python -m orchestrator_svc``, ``python -m worker_svc``),
exactly as in production, on 127.0.0.1. In-process servers were rejected: the worker sets
process-wide torch settings and forks sandbox children, which a CLI process should not inherit.

Layout of the data directory ``D``::

    D/                  worker: blob cache, sandbox scratch (hidden from agents under bwrap)
    D/orchestrator/     orchestrator: SQLite store (codecbench.db) and blobs
    D/logs/             orchestrator.log and worker.log (structured JSON lines)

The orchestrator's directory sits inside the worker's, so the worker hides the uploaded dataset
images from agents too (a decoder cannot read the originals from the orchestrator's blobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from codecbench.client import Client

ORCHESTRATOR_LINE = re.compile(r"codecbench orchestrator listening on (\S+)")
WORKER_LINE = re.compile(r"codecbench worker (\S+) listening on (\S+)")
# Runs ``python -m <argv[2:]>`` in place of itself after asking Linux to SIGTERM it when the
# process that started it (pid argv[1]) dies, so a killed ``codecbench up`` or demo leaves no
# orphaned services (an old worker running stale code is what the old runner suffered from).
# A preexec_fn was rejected: it runs Python between fork and exec, unsafe with gRPC's threads.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass  # not Linux: the parent's stop() is the only cleanup\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)  # the parent died before prctl took effect\n"
    "os.execv(sys.executable, [sys.executable, '-m', *sys.argv[2:]])\n"
)


class LocalStartError(RuntimeError):
    """A local service did not start; the message names it and points at its log file."""


@dataclass
class LocalService:
    """One child service process."""

    name: str
    process: asyncio.subprocess.Process
    address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, timeout_s: float) -> int:
        """SIGTERM (the services stop gracefully on it), SIGKILL after ``timeout_s``; returns the exit code."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        return await self.process.wait()


@dataclass
class LocalServices:
    """A running orchestrator and worker; stop them with :meth:`stop`."""

    orchestrator: LocalService
    worker: LocalService
    worker_id: str
    data_dir: Path

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the worker first (its running experiments end), then the orchestrator."""
        await self.worker.stop(timeout_s)
        await self.orchestrator.stop(timeout_s)

    async def wait_any_exit(self) -> LocalService:
        """Returns the first service whose process exits (for supervising ``codecbench up``)."""
        waits = {asyncio.ensure_future(s.process.wait()): s for s in (self.orchestrator, self.worker)}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[done.pop()]


async def _spawn(name: str, args: list[str], log_path: Path, pattern: re.Pattern[str],
                 startup_s: float) -> tuple[asyncio.subprocess.Process, re.Match[str]]:
    """Starts ``python -m <args>`` and waits for the line that announces its address."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LAUNCHER, str(os.getpid()), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
            start_new_session=True,  # a Ctrl-C reaches only the parent, which stops the services in order
        )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(startup_s):
            while line := (await process.stdout.readline()).decode(errors="replace"):
                if match := pattern.search(line):
                    return process, match
    except TimeoutError:
        process.kill()
        await process.wait()
        raise LocalStartError(f"the {name} did not report its address within {startup_s:g} s; see {log_path}") from None
    code = await process.wait()
    raise LocalStartError(f"the {name} exited with code {code} before it was ready; see {log_path}")


async def _wait_registered(address: str, worker_id: str, timeout_s: float) -> None:
    """Polls the orchestrator until it lists the worker."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with Client(address) as client:
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                if any(w.info.worker_id == worker_id for w in await client.workers()):
                    return
            if loop.time() > deadline:
                raise LocalStartError(f"worker {worker_id} did not register with the orchestrator at {address} "
                                      f"within {timeout_s:g} s")
            await asyncio.sleep(0.1)


async def start_local(
    data_dir: Path,
    port: int = 0,
    worker_slots: int = 1,
    use_bwrap: bool = True,
    log_level: str = "info",
    startup_s: float = 120.0,
) -> LocalServices:
    """Starts an orchestrator on 127.0.0.1:``port`` (0 picks a free port) and one worker
    registered with it, and returns once the orchestrator lists the worker.

    Args:
        data_dir: see the module docstring for the layout; created when missing.
        worker_slots: experiments the worker runs at once.
        use_bwrap: False starts the worker with ``--isolation process``; so does a machine without
            bubblewrap, with one warning line on stderr.
        log_level: level of the services' structured logs (written under ``data_dir/logs``).
        startup_s: how long each service may take to start (the worker imports torch).

    Raises:
        LocalStartError: a service exited or did not report ready in time; both are stopped.
    """
    data_dir = data_dir.resolve()
    logs_dir = data_dir / "logs"
    orchestrator_process, match = await _spawn(
        "orchestrator",
        ["orchestrator_svc", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir / "orchestrator"),
         "--log-level", log_level],
        logs_dir / "orchestrator.log", ORCHESTRATOR_LINE, startup_s,
    )
    orchestrator = LocalService("orchestrator", orchestrator_process, match.group(1), logs_dir / "orchestrator.log")
    try:
        worker_args = ["worker_svc", "--host", "127.0.0.1", "--port", "0", "--orchestrator", orchestrator.address,
                       "--slots", str(worker_slots), "--data-dir", str(data_dir), "--log-level", log_level]
        if not use_bwrap or shutil.which("bwrap") is None:
            if use_bwrap:  # zero-configuration on one machine: run, but say loudly what is missing
                print("WARNING: bubblewrap (bwrap) is not installed: agents run UNSANDBOXED as plain processes "
                      "(install the package 'bubblewrap' to sandbox them)", file=sys.stderr, flush=True)
            worker_args += ["--isolation", "process"]
        worker_process, match = await _spawn("worker", worker_args, logs_dir / "worker.log", WORKER_LINE, startup_s)
        worker = LocalService("worker", worker_process, match.group(2), logs_dir / "worker.log")
        services = LocalServices(orchestrator, worker, match.group(1), data_dir)
        try:
            await _wait_registered(orchestrator.address, services.worker_id, startup_s)
        except BaseException:
            await worker.stop(5.0)
            raise
    except BaseException:
        await orchestrator.stop(5.0)
        raise
    return services


__all__ = ["LocalService", "LocalServices", "LocalStartError", "start_local"]
