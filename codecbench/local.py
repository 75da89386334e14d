"""Services as local child processes: :func:`spawn_service` starts one and waits for its listening
line; :func:`start_local` starts an orchestrator + worker pair (``codecbench up``, ``make demo``).
The tests and the benchmark suite start their child services with :func:`spawn_service` too, and
poll with :func:`eventually`.

Services run as their own interpreters (``python -m orchestrator_svc``, ``python -m worker_svc``),
exactly as in production, on 127.0.0.1. In-process servers were rejected for the launcher: the
worker sets process-wide torch settings and forks sandbox children, which a CLI process should not
inherit.

Layout of the data directory ``D`` of :func:`start_local`::

    D/                  worker: blob cache, sandbox scratch (hidden from agents under bwrap)
    D/orchestrator/     orchestrator: SQLite store (codecbench.db) and blobs
    D/logs/             orchestrator.log and worker.log (structured JSON lines)
    D/client.token      an admin token (0600) that the CLI finds when D is ./.codecbench
    D/orchestrator/enroll.token   the enrollment secret the worker registers with (0600)
    D/up.pid            while ``codecbench up`` runs: its pid and start time (``codecbench down`` reads it)

Every directory is 0700. The services listen on 127.0.0.1 in plaintext; tokens still guard every
call, so another local user can neither submit code nor read results.

The orchestrator's directory sits inside the worker's, so the worker hides the uploaded dataset
images from agents too (a decoder cannot read the originals from the orchestrator's blobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codecbench import auth, errors
from codecbench.client import Client

# What every service prints on stdout once it serves: "codecbench orchestrator listening on HOST:PORT",
# "codecbench worker <id> listening on HOST:PORT".
LISTENING_LINE = re.compile(r"listening on (\S+)")
WORKER_LINE = re.compile(r"codecbench worker (\S+) listening on (\S+)")
# Runs ``python -m <argv[2:]>`` in place of itself after asking Linux to SIGTERM it when the
# thread that started it (in process argv[1]) ends, so a killed ``codecbench up``, demo, test run or
# benchmark leaves no orphaned services (an old worker running stale code is what the old runner
# suffered from). A preexec_fn was rejected: it runs Python between fork and exec, unsafe with
# gRPC's threads.
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


def parent_bound_argv(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module ARGS`` and is SIGTERMed when this process's thread
    that starts it ends (the launcher above). Prefix it with a wrapper that execs, such as ``ip netns
    exec NS``, never one that forks: the launcher checks that its parent is this process.

    Returns:
        The argv, for ``subprocess``/``asyncio.create_subprocess_exec``.
    """
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), module, *args]


class LocalStartError(RuntimeError):
    """A local service did not start; the message names it, quotes its log's end and points at the log.

    Attributes:
        exit_code: the service's exit status when it exited; 2 (a usage error: an address it cannot
            bind, a bad argument) comes with a one-line message, the service's own.
    """

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# The exit status of a service that refused its arguments (argparse's, and rpc.EXIT_BIND_FAILED): its
# last stderr line says why, in one line ("codecbench-orchestrator: error: could not bind ...").
_USAGE_EXIT = 2
_PROG_ERROR = re.compile(r"^\S+: error: ")


@dataclass
class LocalService:
    """One service running as a child process.

    Attributes:
        name: what messages call it (``"orchestrator"``, ``"worker"``).
        process: the child (an interpreter running ``python -m <module>``).
        address: ``HOST:PORT`` from its listening line.
        log_path: where its stderr (structured log lines) goes, appended.
        ready_line: the listening line itself (the worker's names its id).
        argv: the command it runs, ``[python, "-m", module, *args]`` (started through a launcher
            that sets the parent-death signal first).
    """

    name: str
    process: asyncio.subprocess.Process
    address: str
    log_path: Path
    ready_line: str = ""
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id of the service."""
        return self.process.pid

    def send_signal(self, sig: int) -> None:
        """Sends ``sig`` unless the process has exited."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the service gets no chance to clean up (tests of crash recovery)."""
        self.send_signal(signal.SIGKILL)

    async def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM (the services stop gracefully on it), SIGKILL after ``timeout_s``; returns the exit code."""
        self.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.process.wait()
        except TimeoutError:
            self.kill()
        return await self.process.wait()

    def log_lines(self) -> list[str]:
        """The lines of its log file so far (empty if there is none)."""
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of its log."""
        return "\n".join(self.log_lines()[-lines:])


def worker_isolation_args(sandboxed: bool = True) -> list[str]:
    """The worker arguments that choose its isolation: none (bubblewrap, the worker's default) when
    ``sandboxed`` and ``bwrap`` is installed, else ``--isolation process``, without which the worker
    refuses to start unsandboxed."""
    return [] if sandboxed and shutil.which("bwrap") else ["--isolation", "process"]


async def spawn_service(
    module: str,
    *args: str,
    log_path: Path,
    name: str = "",
    startup_s: float = 120.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> LocalService:
    """Starts ``python -m module args`` and waits for its "listening on HOST:PORT" line on stdout.

    The child runs in its own session (a Ctrl-C reaches only this process, which stops its services
    in order) and is SIGTERMed by Linux if the thread that started it ends first. Its stderr is
    appended to ``log_path``.

    Args:
        module: the module to run, e.g. ``"orchestrator_svc"`` (or a wrapper such as a profiler
            that runs ``-m <service>`` itself).
        *args: its command-line arguments.
        log_path: the log file; its folder is created when missing.
        name: what messages call the service; ``module`` when empty.
        startup_s: how long the service may take to print the line (a worker imports torch).
        cwd: working directory of the child (a module outside the installed packages needs its
            folder); this process's when None.
        env: environment of the child; this process's when None.
        wrapper: a command that runs the interpreter in its place, such as ``["ip", "netns", "exec",
            NS]`` (a service in another network namespace). It must exec, not fork: the launcher
            checks that its parent is this process.

    Raises:
        LocalStartError: the service exited, or printed no listening line within ``startup_s``
            (it is killed then).
    """
    name = name or module
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *wrapper, *parent_bound_argv(module, *args),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
            start_new_session=True, cwd=cwd, env=None if env is None else dict(env),
        )
    service = LocalService(name, process, "", log_path, argv=[sys.executable, "-m", module, *args])
    assert process.stdout is not None
    try:
        async with asyncio.timeout(startup_s):
            while line := (await process.stdout.readline()).decode(errors="replace"):
                if match := LISTENING_LINE.search(line):
                    service.address, service.ready_line = match.group(1), line.strip()
                    return service
    except TimeoutError:
        service.kill()
        await process.wait()
        raise LocalStartError(f"the {name} did not report its address within {startup_s:g} s; see {log_path}:\n"
                              f"{service.log_tail()}") from None
    except BaseException:  # cancelled while it started: it must not outlive the caller's cleanup
        service.kill()
        await process.wait()
        raise
    code = await process.wait()
    if code == _USAGE_EXIT and (last := service.log_lines()[-1:]):
        raise LocalStartError(f"the {name} did not start: {_PROG_ERROR.sub('', last[0])}", code)
    raise LocalStartError(f"the {name} exited with code {code} before it was ready; see {log_path}:\n"
                          f"{service.log_tail()}", code)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 20.0, what: str = "", interval_s: float = 0.05
) -> None:
    """Calls ``check`` (plain or async) until it returns true: a bounded poll instead of a sleep.

    Raises:
        TimeoutError: not within ``timeout_s``; the message names ``what``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:g} s: {what or check}")
        await asyncio.sleep(interval_s)


@dataclass
class LocalServices:
    """A running orchestrator and worker; stop them with :meth:`stop`."""

    orchestrator: LocalService
    worker: LocalService
    worker_id: str
    data_dir: Path

    @property
    def token_file(self) -> Path:
        """The admin token file that the orchestrator made (0600)."""
        return self.data_dir / auth.CLIENT_TOKEN_FILE

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


# While `codecbench up` runs, DATA_DIR/up.pid holds "PID START": its process id and its start time
# (/proc/PID/stat field 22, clock ticks since boot), so that a pid reused by another process after
# a crash is not mistaken for it (a pid alone was rejected for that reason).
UP_PID_FILE = "up.pid"


def _process_start(pid: int) -> str | None:
    """The start time of a live process (/proc/PID/stat field 22), None when there is none (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name (field 2) may hold spaces and parentheses
    return None if fields[0] == "Z" else fields[19]


def running_up(data_dir: Path) -> int | None:
    """The pid of the ``codecbench up`` that serves ``data_dir``, None when none runs (no pid
    file, or one a process that has ended left behind)."""
    try:
        pid_text, start = (data_dir / UP_PID_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _process_start(pid) == start else None


def claim_up(data_dir: Path) -> None:
    """Records this process as the ``codecbench up`` of ``data_dir`` (its pid file; created with the folder).

    Raises:
        LocalStartError: another ``codecbench up`` serves ``data_dir`` (exit code 2).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if (other := running_up(data_dir)) is not None:
        raise LocalStartError(f"`codecbench up` already runs for {data_dir} (pid {other}); stop it with "
                              f"`codecbench down --data-dir {data_dir}`", _USAGE_EXIT)
    (data_dir / UP_PID_FILE).write_text(f"{os.getpid()} {_process_start(os.getpid())}\n")


def release_up(data_dir: Path) -> None:
    """Removes ``data_dir``'s pid file if it is this process's."""
    if running_up(data_dir) == os.getpid():
        (data_dir / UP_PID_FILE).unlink(missing_ok=True)


async def stop_up(data_dir: Path, timeout_s: float = 30.0) -> int | None:
    """SIGTERMs the ``codecbench up`` of ``data_dir`` and waits until it has exited (it stops its
    worker, then its orchestrator, before it exits).

    Returns:
        Its pid; None when none runs (a pid file left by one that has ended is removed).

    Raises:
        TimeoutError: it still runs after ``timeout_s`` seconds.
    """
    pid = running_up(data_dir)
    if pid is None:
        (data_dir / UP_PID_FILE).unlink(missing_ok=True)
        return None
    start = _process_start(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    await eventually(lambda: _process_start(pid) != start, timeout_s,
                     what=f"`codecbench up` (pid {pid}) stops its services and exits")
    (data_dir / UP_PID_FILE).unlink(missing_ok=True)
    return pid


async def _wait_registered(address: str, worker_id: str, timeout_s: float, token_file: Path) -> None:
    """Polls the orchestrator until it lists the worker as reached (no longer PENDING).

    Raises:
        LocalStartError: not within ``timeout_s``.
    """
    from codecbench.v1 import orchestrator_pb2

    async with Client(address, token_file=token_file) as client:

        async def listed() -> bool:
            try:
                return any(w.info.worker_id == worker_id and w.state != orchestrator_pb2.WORKER_STATE_PENDING
                           for w in await client.workers())
            except errors.Unavailable:  # still binding, or busy starting: ask again
                return False

        try:
            await eventually(listed, timeout_s, what=f"worker {worker_id} registered")
        except TimeoutError:
            raise LocalStartError(f"worker {worker_id} did not register with the orchestrator at {address} "
                                  f"within {timeout_s:g} s") from None


def _worker_id(worker: LocalService) -> str:
    """The worker id its listening line names.

    Raises:
        LocalStartError: the line names none (a worker of another version).
    """
    if match := WORKER_LINE.search(worker.ready_line):
        return match.group(1)
    raise LocalStartError(f"the worker's listening line names no worker id: {worker.ready_line!r}")


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
        port: the orchestrator's port on 127.0.0.1; 0 picks a free one.
        worker_slots: experiments the worker runs at once.
        use_bwrap: False starts the worker with ``--isolation process``; so does a machine without
            bubblewrap, with one warning line on stderr.
        log_level: level of the services' structured logs (written under ``data_dir/logs``).
        startup_s: how long each service may take to start (the worker imports torch).

    Raises:
        LocalStartError: a service exited or did not report ready in time; both are stopped.
    """
    data_dir = data_dir.resolve()
    for folder in (data_dir, data_dir / "logs", data_dir / "orchestrator"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    logs_dir = data_dir / "logs"
    token_file = data_dir / auth.CLIENT_TOKEN_FILE
    orchestrator = await spawn_service(
        "orchestrator_svc", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir / "orchestrator"),
        "--admin-token-file", str(token_file), "--log-level", log_level,
        log_path=logs_dir / "orchestrator.log", name="orchestrator", startup_s=startup_s,
    )
    try:
        worker_args = ["--host", "127.0.0.1", "--port", "0", "--orchestrator", orchestrator.address,
                       "--slots", str(worker_slots), "--data-dir", str(data_dir), "--log-level", log_level,
                       "--enroll-token-file", str(data_dir / "orchestrator" / auth.ENROLL_TOKEN_FILE),
                       "--admin-token-file", str(token_file),
                       # One machine, no other worker to hand over to: on Ctrl-C the running
                       # experiments go back to the queue at once (without spending an attempt).
                       "--drain-grace-s", "0"]
        if use_bwrap and shutil.which("bwrap") is None:
            # zero-configuration on one machine: run, but say loudly what is missing
            print("WARNING: bubblewrap (bwrap) is not installed: agents run UNSANDBOXED as plain processes "
                  "(install the package 'bubblewrap' to sandbox them)", file=sys.stderr, flush=True)
        worker_args += worker_isolation_args(use_bwrap)
        worker = await spawn_service("worker_svc", *worker_args, log_path=logs_dir / "worker.log", name="worker",
                                     startup_s=startup_s)
        try:
            services = LocalServices(orchestrator, worker, _worker_id(worker), data_dir)
            await _wait_registered(orchestrator.address, services.worker_id, startup_s, services.token_file)
        except BaseException:
            await worker.stop(5.0)
            raise
    except BaseException:
        await orchestrator.stop(5.0)
        raise
    return services


__all__ = [
    "UP_PID_FILE", "LocalService", "LocalServices", "LocalStartError", "claim_up", "eventually", "release_up",
    "running_up", "spawn_service", "start_local", "stop_up", "worker_isolation_args",
]
