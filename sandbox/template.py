"""The warm template: ``python -P -m sandbox.template --control-fd N``.

Importing torch takes ~2.5 s in a new interpreter; forking a process that already did takes
~15 ms. The worker starts this template once (itself inside bubblewrap: no network, read-only
filesystem, the worker's data hidden) and asks it, over a SOCK_SEQPACKET control socket, to fork
one agent process per experiment side. Each fork

1. is PID 1 of a new PID namespace and gets new network, mount, IPC and UTS namespaces (so the
   agent cannot see or signal any other agent, and when it ends everything it started ends),
2. mounts private, size-limited tmpfs ``/tmp`` and ``/dev/shm`` and a fresh ``/proc`` (everything
   else is the template's read-only view, so no file one agent process writes is visible to another),
3. becomes the uid/gid the worker chose for its role, without capabilities and with
   no_new_privs (:mod:`sandbox.identity`), and loads the seccomp filter (:mod:`sandbox.seccomp`),
4. becomes the namespace's init (:mod:`sandbox.init`) and forks the agent process (PID 2), which
   applies its rlimits and serves the worker's framed requests (:func:`sandbox.child.serve`) on
   the socket it was sent. The template reports the agent's exit status as the init passes it on.

CUDA is never initialised here; an agent process initialises it itself after the fork.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import os
import select
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

from codecbench.v1 import sandbox_pb2
from sandbox import child, identity, init, isolation, namespaces, seccomp

_FDS_PER_SPAWN = 3  # agent socket, stdout, stderr


def private_tmpfs(target: str, size_bytes: int) -> None:
    """A new, size-limited tmpfs over ``target`` in this process's own mount namespace, writable
    by every uid (sticky, like /tmp): the agent process runs unprivileged."""
    namespaces.mount("tmpfs", target, "tmpfs", namespaces.MS_NOSUID | namespaces.MS_NODEV,
                     f"size={size_bytes},mode=1777")


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


def _close_all_but(keep: set[int]) -> None:
    """Closes every descriptor above 2 but ``keep``: the template's control socket and the status
    pipes of other agent processes must not reach this one."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _init_process(
    spawn: sandbox_pb2.SandboxSpawn, fds: list[int], status_w: int, rebind: list[Path], bpf: bytes | None
) -> NoReturn:
    """Runs in the forked child, PID 1 of a new PID namespace: gives itself the agent's other
    namespaces, mounts, identity and seccomp filter (``bpf``; None: none), then becomes the
    namespace's init with the agent process as its child (:func:`sandbox.init.run_as_init`).
    Never returns."""
    try:
        sock_fd, out_fd, err_fd = fds
        _close_all_but({*fds, status_w})
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        namespaces.die_with_parent(signal.SIGKILL)
        namespaces.unshare(namespaces.AGENT_NAMESPACES & ~namespaces.CLONE_NEWPID)
        namespaces.make_mounts_private()
        # Handles on the runtime's own folders under /tmp, to bind them back over the new tmpfs.
        keep = [(path, os.open(path, os.O_PATH)) for path in rebind]
        private_tmpfs("/tmp", isolation.TMP_BYTES)
        for path, fd in keep:
            path.mkdir(parents=True, exist_ok=True)
            namespaces.mount(f"/proc/self/fd/{fd}", str(path), None, namespaces.MS_BIND | namespaces.MS_REC)
            namespaces.mount("none", str(path), None,
                             namespaces.MS_REMOUNT | namespaces.MS_BIND | namespaces.MS_RDONLY)
            os.close(fd)
        private_tmpfs("/dev/shm", isolation.SHM_BYTES)  # shared memory must not be shared
        namespaces.mount("proc", "/proc", "proc", namespaces.MS_NOSUID | namespaces.MS_NODEV | namespaces.MS_NOEXEC)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        os.chdir("/tmp")
        identity.become_agent_user(spawn.uid or identity.AGENT_UID)  # init and agent alike, no capabilities
        if bpf is not None:
            seccomp.install(bpf)  # after no_new_privs, before any agent code; inherited by the agent
        limits = spawn.limits

        def agent() -> int:
            child.apply_limits(limits.memory_bytes, limits.cpu_s, limits.file_bytes, limits.open_files)
            return child.serve(socket.socket(fileno=sock_fd), limits.max_frame_bytes, limits.max_bitstream_bytes)

        # Init holds no request socket: an agent that closes its own is seen at once (end of stream).
        init.run_as_init(agent, status_w, close_in_init=(sock_fd,))
    except BaseException as exc:  # noqa: BLE001 - report on the agent's stderr, never return into the template
        print(f"sandbox: could not start the agent process: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(70)


def _reap(control: socket.socket, spawned: dict[int, tuple[int, int]]) -> None:
    """Reports every init that ended with the status of its agent process (from the status pipe),
    or, when the init wrote none (it was killed first), with the init's own."""
    while spawned:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid not in spawned:
            continue
        spawn_id, status_r = spawned.pop(pid)
        agent_status = init.read_status(status_r)
        os.close(status_r)
        if agent_status is not None:
            status = agent_status
        exited = sandbox_pb2.SandboxExited(spawn_id=spawn_id)
        if os.WIFSIGNALED(status):
            exited.signal = os.WTERMSIG(status)
        else:
            exited.exit_code = os.waitstatus_to_exitcode(status)
        _send(control, sandbox_pb2.TemplateEvent(exited=exited))


def _fork_in_new_pid_namespace(own_pid_ns: int) -> int:
    """fork(2) with the child as PID 1 of a new PID namespace; the template itself stays in its
    own (setns back), so the next fork gets a namespace of its own again. One fork per agent
    process, where a helper outside the namespace would cost a second one."""
    namespaces.unshare(namespaces.CLONE_NEWPID)
    try:
        pid = os.fork()
    except OSError:
        namespaces.setns(own_pid_ns, namespaces.CLONE_NEWPID)
        raise
    if pid:
        namespaces.setns(own_pid_ns, namespaces.CLONE_NEWPID)
    return pid


def can_isolate(bpf: bytes | None = None) -> str:
    """Forks a throwaway process that sets up an agent's namespaces, identity and seccomp filter;
    returns why that failed, or ""."""
    pid = os.fork()
    if pid == 0:
        try:
            namespaces.unshare(namespaces.AGENT_NAMESPACES)
            namespaces.make_mounts_private()
            private_tmpfs("/tmp", isolation.TMP_BYTES)
            identity.become_agent_user()
            if bpf is not None:
                seccomp.install(bpf)
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - reported through the exit status and stderr
            print(f"sandbox template: cannot isolate agent processes: {exc}", file=sys.stderr, flush=True)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return "" if os.waitstatus_to_exitcode(status) == 0 else "namespace set-up refused (see stderr)"


def serve(control: socket.socket, rebind: list[Path], bpf: bytes | None = None) -> int:
    """Forks agent processes on request until the worker closes the control socket.

    Args:
        control: the socket the worker sends spawn requests on and reads exit reports from.
        rebind: bound paths under /tmp, mounted again over each agent process's private /tmp.
        bpf: the seccomp filter every agent process loads (:mod:`sandbox.seccomp`); None: none.

    Returns 3 without serving when agent processes cannot be isolated here.
    """
    problem = can_isolate(bpf)
    if problem:
        return 3
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd sees SIGCHLD
    spawned: dict[int, tuple[int, int]] = {}  # init PID -> (spawn id, read end of its status pipe)
    _send(control, sandbox_pb2.TemplateEvent(ready=True))
    while True:
        watched: list[socket.socket | int] = [control, wake_r]
        readable, _, _ = select.select(watched, [], [])
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
            status_r, status_w = os.pipe()
            try:
                pid = _fork_in_new_pid_namespace(own_pid_ns)
            except OSError as exc:
                for fd in (*fds, status_r, status_w):
                    os.close(fd)
                failed = sandbox_pb2.SandboxSpawnFailed(spawn_id=spawn.spawn_id, message=f"fork: {exc}")
                _send(control, sandbox_pb2.TemplateEvent(spawn_failed=failed))
                continue
            if pid == 0:
                _init_process(spawn, fds, status_w, rebind, bpf)
            os.close(status_w)
            os.set_blocking(status_r, False)
            spawned[pid] = (spawn.spawn_id, status_r)
            for fd in fds:
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.template --control-fd N``: the warm template; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.template")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--rebind", type=Path, action="append", default=[],
                        help="a bound path under /tmp to mount again over each agent process's /tmp")
    parser.add_argument("--seccomp-fd", type=int, default=-1,
                        help="a pipe holding the seccomp filter (BPF) every agent process loads")
    args = parser.parse_args(argv)
    bpf = seccomp.read_program(args.seccomp_fd) if args.seccomp_fd >= 0 else None
    return serve(socket.socket(fileno=args.control_fd), args.rebind, bpf)


if __name__ == "__main__":
    sys.exit(main())
