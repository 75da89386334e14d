"""The init that is PID 1 of each agent process's PID namespace.

The kernel drops every signal sent to a namespace's PID 1 for which it has no handler, its own
SIGKILL, SIGTERM and SIGABRT included: an agent that was PID 1 and killed itself kept running,
and ``os.abort()`` showed up as a later SIGSEGV. So the agent is PID 2, and PID 1 is this small
init (the pattern of tini and bwrap's own reaper): it

- reaps every process of the namespace (orphans the agent leaves are re-parented to it),
- forwards the signals it receives to the agent,
- when the agent ends, writes the agent's raw wait status (4 bytes, native order) to a pipe
  the worker side reads, then exits, which makes the kernel kill whatever is left in the
  namespace.

The status travels through a pipe, not through init's own exit, because init cannot die of
the agent's signal (a signal it raises on itself is dropped, it is PID 1) and an exit code of
128 + N could not be told from the agent's own ``sys.exit(128 + N)``.

bwrap's reaper (its default) would reap and forward too, but reports a signal as 128 + N, which
has exactly that ambiguity; the fresh path runs bwrap with ``--as-pid-1`` and this init instead.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from collections.abc import Callable
from typing import NoReturn

from sandbox import namespaces

_STATUS = struct.Struct("=i")
PROCESS_NAME = "cb-init"
# Signals an operator or the worker may send to the namespace's PID 1 and that are meant for the
# agent. Faults (SIGSEGV, SIGABRT, ...) concern init itself; SIGKILL and SIGSTOP cannot be caught.
FORWARDED = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGALRM, signal.SIGCONT, signal.SIGWINCH,
)


def encode_status(status: int) -> bytes:
    """The 4 bytes init writes: a raw wait status as ``os.waitpid`` returns it."""
    return _STATUS.pack(status)


def read_status(fd: int) -> int | None:
    """The agent's raw wait status from the read end of the status pipe, or None when init wrote
    none (it was killed first, or never started). Does not block; closes nothing."""
    try:
        data = os.read(fd, _STATUS.size)
    except (BlockingIOError, OSError):
        return None
    return _STATUS.unpack(data)[0] if len(data) == _STATUS.size else None


def run_as_init(
    agent: Callable[[], int], status_fd: int, close_in_agent: tuple[int, ...] = (), close_in_init: tuple[int, ...] = ()
) -> NoReturn:
    """Forks the agent process, which runs ``agent()`` and exits with its result; this process
    (PID 1) then reaps and forwards until the agent ends, writes its status to ``status_fd`` and
    exits. Never returns, in either process.

    Args:
        agent: the agent process's work (serve requests); its return value is the exit code.
        status_fd: the write end of the status pipe (closed in the agent process, so the agent
            cannot write a status of its own).
        close_in_agent: more descriptors only init may hold.
        close_in_init: descriptors only the agent may hold, closed in init once the agent is
            forked: the agent's request socket, so that the worker reads end-of-stream as soon
            as the agent closes it, not only when init ends.
    """
    pid = os.fork()
    if pid == 0:
        status = 70
        try:
            for fd in (status_fd, *close_in_agent):
                os.close(fd)
            namespaces.die_with_parent(signal.SIGKILL)
            status = agent()
        except BaseException as exc:  # noqa: BLE001 - report on the agent's stderr, never return
            print(f"sandbox: the agent process failed to start: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    for fd in close_in_init:
        os.close(fd)
    _reap_until(pid, status_fd)


def _reap_until(agent_pid: int, status_fd: int) -> NoReturn:
    namespaces.set_process_name(PROCESS_NAME)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(agent_pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.wait()  # retried after a forwarded signal's handler (PEP 475)
        except ChildProcessError:  # no child left; cannot happen before the agent is reaped
            os._exit(70)
        if pid == agent_pid:
            try:
                os.write(status_fd, encode_status(status))
            except OSError:
                pass  # the worker side is gone; nobody is waiting for the status
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


__all__ = ["FORWARDED", "PROCESS_NAME", "encode_status", "read_status", "run_as_init"]
