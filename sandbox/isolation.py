"""How a sandbox child is isolated: bubblewrap when it is installed, plain processes otherwise.

With bwrap each agent process gets its own network namespace (even 127.0.0.1 is unreachable),
PID, IPC and UTS namespaces, the allow-listed read-only view of :mod:`sandbox.view` on an empty
root, a private tmpfs ``/tmp`` and ``/dev/shm``, an unprivileged identity (:mod:`sandbox.identity`),
an init as PID 1 (:mod:`sandbox.init`), no environment variables but a minimal set, and dies
with the worker.

Without bwrap ("process" isolation, an explicit opt-in of the worker) an agent is a plain child
process: same filesystem and network as the worker, the worker's uid. Only the rlimits, the
cgroups and the private TMPDIR remain.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from codecbench.v1 import types_pb2
from sandbox import identity
from sandbox.view import FilesystemView, builtin_dataset_dirs, code_roots

BWRAP = types_pb2.ISOLATION_BWRAP
# Sizes of an agent process's private tmpfs mounts (their pages count in its memory cgroup).
TMP_BYTES = 1024 * 1024 * 1024
SHM_BYTES = 64 * 1024 * 1024


@cache
def bwrap_path() -> str | None:
    """Path of the ``bwrap`` binary, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def available_isolation() -> types_pb2.Isolation.ValueType:
    """``ISOLATION_BWRAP`` when bubblewrap is installed, else ``ISOLATION_PROCESS``."""
    return types_pb2.ISOLATION_BWRAP if bwrap_path() else types_pb2.ISOLATION_PROCESS


def wrap_command(
    command: Sequence[str],
    isolation: types_pb2.Isolation.ValueType,
    view: FilesystemView,
    env: dict[str, str],
    template: bool = False,
) -> list[str]:
    """The argv that runs ``command`` under the requested isolation.

    Args:
        command: the child's own argv (``python -m sandbox.child ...``).
        isolation: ``ISOLATION_BWRAP`` wraps the command in bwrap; anything else returns it as it is.
        view: what the process sees of the filesystem (:func:`sandbox.view.agent_view`).
        env: the child's whole environment.
        template: the warm template, which keeps the capabilities it needs to give each forked
            agent process its own namespaces and identity; an agent process runs as PID 1 of
            its PID namespace (``--as-pid-1``) and starts its own init
            (:mod:`sandbox.init`), whose status report bwrap's reaper could not give.
    """
    if isolation != types_pb2.ISOLATION_BWRAP:
        return list(command)
    argv = [
        bwrap_path() or "bwrap",
        *identity.bwrap_args(template),
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        # The root of the sandbox is an empty tmpfs: nothing of the host is there but the view.
        # /tmp and /dev/shm are writable by the agent's uid, private, size-limited.
        *view.bwrap_args([
            "--dev", "/dev",
            "--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
            "--proc", "/proc",
            "--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
        ]),
        "--chdir", "/tmp",
        # Nothing but /tmp and /dev/shm (each private to one agent process) stays writable.
        "--remount-ro", "/dev",
        "--remount-ro", "/",
    ]
    if not template:
        argv.append("--as-pid-1")
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *command]


def child_environment() -> dict[str, str]:
    """The minimal environment of a sandbox child: nothing of the worker's own (no secrets)."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # The code the worker runs, not another copy that an editable install points at.
        "PYTHONPATH": ":".join(map(str, code_roots())),
    }


__all__ = [
    "BWRAP", "SHM_BYTES", "TMP_BYTES", "available_isolation", "builtin_dataset_dirs", "bwrap_path",
    "child_environment", "wrap_command",
]
