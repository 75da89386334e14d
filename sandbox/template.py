"""The warm template: ``python -P -m sandbox.template --control-fd N``.

Importing torch takes ~2.5 s in a new interpreter; forking a process that already did takes
~15 ms. The worker starts this template once (itself inside bubblewrap: no network, read-only
filesystem, the worker's data hidden) and asks it, over a SOCK_SEQPACKET control socket, to fork
one agent process per experiment side. Each forked process

1. gets new network, mount, PID, IPC and UTS namespaces (it is PID 1 of its own namespace, so it
   cannot see or signal any other agent, and killing it kills everything it started),
2. mounts private, size-limited tmpfs ``/tmp`` and ``/dev/shm`` and a fresh ``/proc`` (everything
   else is read-only, so no file one agent process writes is visible to another),
3. drops every capability and sets no_new_privs, applies its rlimits,
4. serves the worker's framed requests (:func:`sandbox.child.serve`) on the socket it was sent.

CUDA is never initialised here; an agent process initialises it itself after the fork.
"""

from __future__ import annotations

import argparse
import array
import os
import resource
import select
import signal
import socket
import sys

from codecbench.v1 import sandbox_pb2
from sandbox import child, isolation, namespaces

_FDS_PER_SPAWN = 3  # agent socket, stdout, stderr


def private_tmpfs(target: str, size_bytes: int) -> None:
    """A new, size-limited tmpfs over ``target`` in this process's own mount namespace."""
    namespaces.mount("tmpfs", target, "tmpfs", namespaces.MS_NOSUID | namespaces.MS_NODEV, f"size={size_bytes}")


def _send(control: socket.socket, event: sandbox_pb2.TemplateEvent) -> None:
    control.send(event.SerializeToString())


def _receive_spawn(control: socket.socket) -> tuple[sandbox_pb2.SandboxSpawn, list[int]] | None:
    try:
        message, ancillary, _, _ = control.recvmsg(65536, socket.CMSG_LEN(_FDS_PER_SPAWN * 4))
    except ConnectionResetError:  # the worker is gone
        return None
    if not message:
        return None
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
    return sandbox_pb2.SandboxSpawn.FromString(message), fds


def _exit_like(status: int) -> None:
    """Ends this process the way a child with wait ``status`` ended (same code or signal)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # re-raising SIGSEGV must not dump a core
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _agent_process(spawn: sandbox_pb2.SandboxSpawn, fds: list[int], keep_closed: list[int]) -> None:
    """Runs in the forked child; never returns."""
    try:
        for fd in keep_closed:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        namespaces.die_with_parent(signal.SIGKILL)
        namespaces.unshare(namespaces.AGENT_NAMESPACES)
        pid = os.fork()
        if pid:
            # Stays outside the new PID namespace to report how its only child ended.
            _, status = os.waitpid(pid, 0)
            _exit_like(status)
        namespaces.die_with_parent(signal.SIGKILL)
        namespaces.make_mounts_private()
        # Handles on the runtime's own folders under /tmp, to bind them back over the new tmpfs.
        keep = [(path, os.open(path, os.O_PATH)) for path in isolation.runtime_paths_under_tmp()]
        private_tmpfs("/tmp", isolation.TMP_BYTES)
        for path, fd in keep:
            path.mkdir(parents=True, exist_ok=True)
            namespaces.mount(f"/proc/self/fd/{fd}", str(path), None, namespaces.MS_BIND | namespaces.MS_REC)
            namespaces.mount("none", str(path), None,
                             namespaces.MS_REMOUNT | namespaces.MS_BIND | namespaces.MS_RDONLY)
            os.close(fd)
        private_tmpfs("/dev/shm", isolation.SHM_BYTES)  # shared memory must not be shared
        namespaces.mount("proc", "/proc", "proc", namespaces.MS_NOSUID | namespaces.MS_NODEV | namespaces.MS_NOEXEC)
        sock_fd, out_fd, err_fd = fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        os.chdir("/tmp")
        namespaces.drop_all_capabilities()
        limits = spawn.limits
        child.apply_limits(limits.memory_bytes, limits.cpu_s, limits.file_bytes, limits.open_files)
        status = child.serve(socket.socket(fileno=sock_fd), limits.max_frame_bytes, limits.max_bitstream_bytes)
    except BaseException as exc:  # noqa: BLE001 - report on the agent's stderr, never return into the template
        print(f"sandbox: could not start the agent process: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        status = 70
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _reap(control: socket.socket, spawned: dict[int, int]) -> None:
    while spawned:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        spawn_id = spawned.pop(pid, None)
        if spawn_id is None:
            continue
        exited = sandbox_pb2.SandboxExited(spawn_id=spawn_id)
        if os.WIFSIGNALED(status):
            exited.signal = os.WTERMSIG(status)
        else:
            exited.exit_code = os.waitstatus_to_exitcode(status)
        _send(control, sandbox_pb2.TemplateEvent(exited=exited))


def can_isolate() -> str:
    """Forks a throwaway process that sets up an agent's namespaces; returns why that failed, or ""."""
    pid = os.fork()
    if pid == 0:
        try:
            namespaces.unshare(namespaces.AGENT_NAMESPACES)
            namespaces.make_mounts_private()
            private_tmpfs("/tmp", isolation.TMP_BYTES)
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - reported through the exit status and stderr
            print(f"sandbox template: cannot isolate agent processes: {exc}", file=sys.stderr, flush=True)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return "" if os.waitstatus_to_exitcode(status) == 0 else "namespace set-up refused (see stderr)"


def serve(control: socket.socket) -> int:
    """Forks agent processes on request until the worker closes the control socket.

    Returns 3 without serving when agent processes cannot be isolated here.
    """
    problem = can_isolate()
    if problem:
        return 3
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd sees SIGCHLD
    spawned: dict[int, int] = {}
    _send(control, sandbox_pb2.TemplateEvent(ready=True))
    while True:
        readable, _, _ = select.select([control, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(control, spawned)
        if control in readable:
            received = _receive_spawn(control)
            if received is None:
                return 0
            spawn, fds = received
            if len(fds) != _FDS_PER_SPAWN:
                for fd in fds:
                    os.close(fd)
                failed = sandbox_pb2.SandboxSpawnFailed(spawn_id=spawn.spawn_id, message=f"got {len(fds)} fds")
                _send(control, sandbox_pb2.TemplateEvent(spawn_failed=failed))
                continue
            pid = os.fork()
            if pid == 0:
                _agent_process(spawn, fds, [control.fileno(), wake_r, wake_w])
            spawned[pid] = spawn.spawn_id
            for fd in fds:
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.template")
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    return serve(socket.socket(fileno=args.control_fd))


if __name__ == "__main__":
    sys.exit(main())
