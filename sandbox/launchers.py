"""How an agent process comes to life: forked from the warm template, or a fresh interpreter.

Both launchers hand back the same :class:`Launched`: the process's request socket (after its
ready frame), its stdout/stderr, its PID as the worker sees it, and how to kill it and learn how
it ended. The PID comes from the kernel, not from the process: the worker's end of the socket
has SO_PASSCRED set, so the ready frame arrives with the sender's credentials, translated into
the worker's PID namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codecbench import errors
from codecbench.v1 import sandbox_pb2, types_pb2
from sandbox import init, isolation, seccomp
from sandbox.pool import Exit, TemplateUnavailable, WarmTemplate
from sandbox.view import FilesystemView

_UCRED = struct.Struct("3i")  # pid, uid, gid
_READY = b"\0\0\0\0"  # the frame of an empty SandboxResponse


@dataclass
class Launched:
    """A started agent process whose runtime reported ready."""

    pid: int
    sock: socket.socket
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    kill: Callable[[], None]
    wait: Callable[[], Awaitable[Exit]]
    closers: list[Callable[[], None]] = field(default_factory=list)


async def read_ready_pid(sock: socket.socket, ended: Awaitable[Exit]) -> int:
    """Reads the ready frame and returns the sender's PID (SO_PASSCRED must be set on ``sock``).

    Raises:
        errors.InternalError: the process ended first, or sent something else.
    """
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def on_readable() -> None:
        try:
            message, ancillary, _, _ = sock.recvmsg(len(_READY), socket.CMSG_SPACE(_UCRED.size))
        except BlockingIOError:
            return
        except OSError as exc:
            message, ancillary = str(exc).encode(), []
        loop.remove_reader(sock.fileno())
        creds = [d for level, kind, d in ancillary if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
        if message == _READY and creds:
            received.set_result(_UCRED.unpack(creds[0][: _UCRED.size])[0])
        else:
            received.set_exception(errors.InternalError(f"the sandbox runtime sent {message!r} instead of ready"))

    loop.add_reader(sock.fileno(), on_readable)
    ended_task = asyncio.ensure_future(ended)
    try:
        racing: list[asyncio.Future[Any]] = [received, ended_task]
        done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if received in done:
            return received.result()
        raise errors.InternalError(f"the sandbox runtime ended before it was ready: {ended_task.result()}")
    finally:
        loop.remove_reader(sock.fileno())
        for future in (received, ended_task):
            if not future.done():
                future.cancel()


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, Callable[[], None]]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    return reader, transport.close


def _exit_of(code: int, status: int | None, wrapped: bool) -> Exit:
    """How a fresh agent process ended, from its init's report (``status``, exact) or else from
    the exit code of the process the worker started."""
    if status is not None:
        if os.WIFSIGNALED(status):
            return Exit(exit_code=None, signal=os.WTERMSIG(status))
        return Exit(exit_code=os.waitstatus_to_exitcode(status), signal=None)
    if code < 0:
        return Exit(exit_code=None, signal=-code)
    if wrapped and code - 128 in signal.valid_signals():
        return Exit(exit_code=None, signal=code - 128)  # bwrap or init ended early: 128 + N, best guess
    return Exit(exit_code=code, signal=None)


def _rlimits(limits: sandbox_pb2.SandboxRlimits) -> list[str]:
    return [
        "--max-frame-bytes", str(limits.max_frame_bytes),
        "--max-bitstream-bytes", str(limits.max_bitstream_bytes),
        "--memory-bytes", str(limits.memory_bytes),
        "--cpu-s", str(limits.cpu_s),
        "--file-bytes", str(limits.file_bytes),
        "--open-files", str(limits.open_files),
    ]


class FreshLauncher:
    """A new interpreter per agent process (``python -P -m sandbox.child``), under bwrap when
    available: ~2 s per process for importing torch, but needs nothing else."""

    def __init__(
        self, isolation_mode: types_pb2.Isolation.ValueType, view: FilesystemView, scratch_dir: Path | None = None,
        seccomp_bpf: bytes | None = None,
    ) -> None:
        self.isolation_mode = isolation_mode
        self.view = view
        self.scratch_dir = scratch_dir
        self.seccomp_bpf = seccomp_bpf

    async def launch(self, limits: sandbox_pb2.SandboxRlimits, startup_s: float, uid: int) -> Launched:
        """Starts an agent process that runs as ``uid`` (:func:`sandbox.identity.uid_for`; under
        bwrap only) and loads the seccomp filter, if there is one, before any agent code.

        Raises errors.InternalError when the process or its runtime cannot start.
        """
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # The request socket is handed over on a socket of its own once the process runs, not
        # inherited: bwrap keeps every inherited descriptor open outside the sandbox, and the
        # agent closing its end must read as the end of the stream here.
        handover, handover_theirs = socket.socketpair()
        # -P: the cwd must not come first on sys.path, or a bundle file named like a module of
        # the runtime (sandbox/, numpy.py, torch/) would replace it.
        wrapped = self.isolation_mode == isolation.BWRAP
        # The init (PID 1 under bwrap) writes the agent's exact wait status here.
        status_r, status_w = os.pipe()
        os.set_blocking(status_r, False)
        command = [sys.executable, "-P", "-m", "sandbox.child", "--fd", str(handover_theirs.fileno()), "--receive-fd",
                   *_rlimits(limits), "--status-fd", str(status_w)]
        passed = [handover_theirs.fileno(), status_w]
        if wrapped:
            command += ["--unprivileged", "--uid", str(uid)]
        if self.seccomp_bpf is not None:
            seccomp_r = seccomp.write_to_pipe(self.seccomp_bpf)
            command += ["--seccomp-fd", str(seccomp_r)]
            passed.append(seccomp_r)
        env = isolation.child_environment()
        closers: list[Callable[[], None]] = [lambda: os.close(status_r)]
        if not wrapped:
            # No private tmpfs without bwrap: a directory of its own, deleted when it ends.
            # Under the worker's data dir, not /tmp: a worker killed mid-run leaves nothing elsewhere.
            private_tmp = tempfile.mkdtemp(prefix="cb-agent-", dir=self.scratch_dir)
            env["TMPDIR"] = private_tmp
            closers.append(lambda: shutil.rmtree(private_tmp, ignore_errors=True))
        argv = isolation.wrap_command(command, self.isolation_mode, self.view, env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=passed,
                start_new_session=True,  # its own process group, killed as a whole
                cwd="/tmp", env=env,
            )
        except OSError as exc:
            ours.close()
            for close in closers:
                close()
            raise errors.InternalError(f"could not start a sandbox process: {exc}") from exc
        else:
            with contextlib.suppress(OSError):  # a process that died at once is reported below
                socket.send_fds(handover, [b"s"], [theirs.fileno()])
        finally:
            theirs.close()
            handover.close()
            handover_theirs.close()
            for fd in passed[1:]:  # the status pipe's and the filter pipe's ends
                os.close(fd)

        pid_box: list[int] = []

        def kill() -> None:
            if proc.returncode is None:
                # The agent first (PID 2 of its namespace: its init then ends, and the kernel
                # kills the rest). bwrap's --die-with-parent does not reach a sandbox that changed
                # uid (a parent-death signal needs the right to kill it), so killing bwrap alone
                # could leave the agent running, holding its output pipes open.
                for pid in pid_box:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        ended: list[Exit] = []

        async def wait() -> Exit:
            code = await proc.wait()
            if not ended:  # read the status pipe once, before the closers close it
                ended.append(_exit_of(code, init.read_status(status_r) if wrapped else None, wrapped))
            return ended[0]

        try:
            async with asyncio.timeout(startup_s):
                pid_box.append(await read_ready_pid(ours, wait()))
        except BaseException as exc:
            kill()
            ours.close()
            await proc.wait()
            for close in closers:
                close()
            if isinstance(exc, TimeoutError):
                raise errors.InternalError(f"the sandbox runtime did not start within {startup_s:g} s") from None
            raise
        assert proc.stdout is not None and proc.stderr is not None
        return Launched(pid=pid_box[0], sock=ours, stdout=proc.stdout, stderr=proc.stderr, kill=kill, wait=wait,
                        closers=closers)

    async def close(self) -> None:
        """Nothing to release: each launched process is closed on its own."""
        return None


class TemplateLauncher:
    """Agent processes forked from the warm template (~15 ms instead of ~2 s). If the template
    dies it is started again once per launch; if it cannot be, processes start fresh."""

    def __init__(self, template: WarmTemplate, fallback: FreshLauncher) -> None:
        self.template: WarmTemplate | None = template
        self.fallback = fallback

    @classmethod
    async def start(cls, view: FilesystemView, seccomp_bpf: bytes | None = None) -> TemplateLauncher:
        """Raises TemplateUnavailable when no template can run here."""
        template = await WarmTemplate.start(view, seccomp_bpf=seccomp_bpf)
        return cls(template, FreshLauncher(isolation.BWRAP, view, seccomp_bpf=seccomp_bpf))

    async def launch(self, limits: sandbox_pb2.SandboxRlimits, startup_s: float, uid: int) -> Launched:
        """Forks an agent process that runs as ``uid`` from the template (restarting a dead one
        first), else starts one fresh."""
        if self.template is None or not self.template.alive:
            try:
                self.template = await WarmTemplate.start(self.fallback.view, seccomp_bpf=self.fallback.seccomp_bpf)
            except TemplateUnavailable:
                self.template = None
                return await self.fallback.launch(limits, startup_s, uid)
        try:
            forked = self.template.fork(limits, uid)
        except TemplateUnavailable:
            return await self.fallback.launch(limits, startup_s, uid)
        forked.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        stdout, close_out = await _pipe_reader(forked.stdout)
        stderr, close_err = await _pipe_reader(forked.stderr)
        pid_box: list[int] = []

        def kill() -> None:
            # PID 2 of its own PID namespace: when it ends, its init ends, and with it every
            # process the agent started.
            if pid_box and not forked.exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid_box[0], signal.SIGKILL)

        async def wait() -> Exit:
            return await asyncio.shield(forked.exited)

        try:
            async with asyncio.timeout(startup_s):
                pid_box.append(await read_ready_pid(forked.sock, wait()))
        except BaseException as exc:
            forked.sock.close()
            close_out()
            close_err()
            if isinstance(exc, TimeoutError):
                raise errors.InternalError(f"the forked sandbox process was not ready within {startup_s:g} s") from None
            raise
        return Launched(pid=pid_box[0], sock=forked.sock, stdout=stdout, stderr=stderr, kill=kill, wait=wait,
                        closers=[close_out, close_err])

    async def close(self) -> None:
        """Stops the template; under bwrap every agent process forked from it dies with it."""
        if self.template is not None:
            await self.template.close()


Launcher = FreshLauncher | TemplateLauncher


async def make_launcher(
    isolation_mode: types_pb2.Isolation.ValueType, view: FilesystemView, warm: bool, scratch_dir: Path | None = None,
    seccomp_filter: bool = True,
) -> Launcher:
    """The warm template when bwrap and namespaces allow it and ``warm`` is set, else fresh
    processes. Logs which one, since it decides both isolation and start-up time. Also removes
    the cgroups that dead workers left (:func:`sandbox.cgroups.sweep`).

    Args:
        isolation_mode: ``ISOLATION_BWRAP`` or ``ISOLATION_PROCESS``.
        view: what agent processes see of the filesystem under bwrap (:func:`sandbox.view.agent_view`).
        warm: fork agent processes from a warm template when possible.
        scratch_dir: where process isolation makes each agent's private TMPDIR (default: the
            system's temporary folder); bwrap gives each its own tmpfs instead.
        seccomp_filter: every agent process loads the filter of :mod:`sandbox.seccomp`. Only tests
            turn it off (controls showing what the filter stops).

    Raises:
        seccomp.SeccompUnavailable: bwrap isolation with ``seccomp_filter`` where libseccomp is
            missing: the worker does not start (fail closed). Process isolation, already the
            explicit choice of a weaker sandbox, runs without the filter and logs a warning.
    """
    from codecbench import logs
    from sandbox import cgroups

    log = logs.get_logger("sandbox")
    swept = cgroups.sweep()
    if swept:
        log.info("sandbox.cgroups_swept", detail=f"removed {swept} cgroups left by workers that are gone")
    bpf: bytes | None = None
    if seccomp_filter:
        try:
            bpf = seccomp.program()
        except seccomp.SeccompUnavailable as exc:
            if isolation_mode == isolation.BWRAP:
                raise seccomp.SeccompUnavailable(
                    f"{exc}: agent processes would run without their seccomp filter; install libseccomp "
                    "(Debian/Ubuntu: libseccomp2, Fedora: libseccomp)"
                ) from exc
            log.warning("sandbox.no_seccomp", detail=f"{exc}; agent processes run without a seccomp filter")
    if warm and isolation_mode == isolation.BWRAP:
        try:
            launcher = await TemplateLauncher.start(view, seccomp_bpf=bpf)
            log.info("sandbox.warm_template", detail="agent processes fork from a warm template")
            return launcher
        except TemplateUnavailable as exc:
            log.warning("sandbox.no_warm_template", detail=f"{exc}; every agent process starts a new interpreter")
    return FreshLauncher(isolation_mode, view, scratch_dir, seccomp_bpf=bpf)


__all__ = ["FreshLauncher", "Launched", "Launcher", "TemplateLauncher", "make_launcher", "read_ready_pid"]
