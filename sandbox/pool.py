"""The worker's side of the warm template (:mod:`sandbox.template`): start it, fork from it.

A forked agent process is ready in milliseconds instead of the seconds a new interpreter needs
to import torch. How the process ended comes from the template, which is its grandparent
and reaps it.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import os
import socket
import sys
from dataclasses import dataclass

from codecbench import logs
from codecbench.v1 import sandbox_pb2
from sandbox import isolation, seccomp
from sandbox.view import FilesystemView


@dataclass(frozen=True)
class Exit:
    """How an agent process ended: an exit code or a signal."""

    exit_code: int | None
    signal: int | None


@dataclass
class ForkedProcess:
    """An agent process the template was asked to fork: its request socket, the read ends of its
    stdout and stderr, and how it ended, once it has."""

    sock: socket.socket
    stdout: int
    stderr: int
    exited: asyncio.Future[Exit]


class TemplateUnavailable(RuntimeError):
    """The template could not be started or cannot isolate agent processes here."""


class WarmTemplate:
    """One running template process and its control socket."""

    def __init__(self, proc: asyncio.subprocess.Process, control: socket.socket) -> None:
        self.proc = proc
        self.control = control
        self._ids = itertools.count(1)
        self._exits: dict[int, asyncio.Future[Exit]] = {}
        self._ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.log = logs.get_logger("sandbox.template")
        asyncio.get_running_loop().add_reader(control.fileno(), self._on_event)

    @classmethod
    async def start(cls, view: FilesystemView, startup_s: float = 120.0, seccomp_bpf: bytes | None = None
                    ) -> WarmTemplate:
        """Starts the template under bubblewrap and waits until it can fork. The template itself
        runs without a seccomp filter (it creates namespaces and mounts); each agent process it
        forks loads ``seccomp_bpf`` (None: none) after dropping its privileges.

        Raises:
            TemplateUnavailable: no bwrap, a start failure, or namespaces refused (the caller
                falls back to a fresh bwrap per agent process).
        """
        if isolation.bwrap_path() is None:
            raise TemplateUnavailable("bubblewrap is not installed")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = isolation.child_environment()
        command = [sys.executable, "-P", "-m", "sandbox.template", "--control-fd", str(theirs.fileno())]
        for path in view.binds_under_tmp():
            command += ["--rebind", str(path)]
        passed = [theirs.fileno()]
        if seccomp_bpf is not None:
            passed.append(seccomp.write_to_pipe(seccomp_bpf))
            command += ["--seccomp-fd", str(passed[-1])]
        argv = isolation.wrap_command(command, isolation.BWRAP, view, env, template=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                pass_fds=passed, start_new_session=True, env=env,
            )
        except OSError as exc:
            ours.close()
            raise TemplateUnavailable(f"could not start the template: {exc}") from exc
        finally:
            theirs.close()
            for fd in passed[1:]:
                os.close(fd)
        ours.setblocking(False)
        template = cls(proc, ours)
        try:
            async with asyncio.timeout(startup_s):
                ready = await asyncio.shield(template._ready)
        except (TimeoutError, ConnectionError) as exc:
            await template.close()
            raise TemplateUnavailable(f"the template did not become ready: {exc}") from exc
        if not ready:
            code = await proc.wait()
            await template.close()
            raise TemplateUnavailable(f"the template cannot isolate agent processes here (exit code {code})")
        return template

    def _on_event(self) -> None:
        try:
            data = self.control.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            if not self._ready.done():
                self._ready.set_result(False)
            for pending in self._exits.values():
                if not pending.done():
                    pending.set_result(Exit(exit_code=None, signal=None))
            return
        event = sandbox_pb2.TemplateEvent.FromString(data)
        kind = event.WhichOneof("event")
        if kind == "ready" and not self._ready.done():
            self._ready.set_result(True)
        elif kind == "exited":
            future = self._exits.pop(event.exited.spawn_id, None)
            if future is not None and not future.done():
                exited = event.exited
                future.set_result(Exit(
                    exit_code=exited.exit_code if exited.HasField("exit_code") else None,
                    signal=exited.signal if exited.HasField("signal") else None,
                ))
        elif kind == "spawn_failed":
            future = self._exits.pop(event.spawn_failed.spawn_id, None)
            if future is not None and not future.done():
                future.set_exception(TemplateUnavailable(event.spawn_failed.message))

    @property
    def alive(self) -> bool:
        """Whether the template is running and reported ready."""
        return self.proc.returncode is None and self._ready.done() and self._ready.result()

    def fork(self, limits: sandbox_pb2.SandboxRlimits, uid: int) -> ForkedProcess:
        """Asks the template to fork one agent process that runs as ``uid``; its ready frame
        arrives on ``sock``.

        Raises:
            TemplateUnavailable: the template is gone.
        """
        if not self.alive:
            raise TemplateUnavailable("the template is not running")
        spawn_id = next(self._ids)
        ours, theirs = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        exited: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        self._exits[spawn_id] = exited
        try:
            request = sandbox_pb2.SandboxSpawn(spawn_id=spawn_id, limits=limits, uid=uid)
            fds = array.array("i", [theirs.fileno(), out_w, err_w])
            self.control.sendmsg([request.SerializeToString()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            self._exits.pop(spawn_id, None)
            for fd in (out_r, err_r):
                os.close(fd)
            ours.close()
            raise TemplateUnavailable(f"could not reach the template: {exc}") from exc
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
        return ForkedProcess(sock=ours, stdout=out_r, stderr=err_r, exited=exited)

    async def close(self) -> None:
        """Stops the template; under bwrap its PID namespace (and every agent process) dies with it."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.control.fileno())
        self.control.close()
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        await self.proc.wait()
