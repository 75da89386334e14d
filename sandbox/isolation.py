"""How a sandbox child is isolated: bubblewrap when it is installed, plain processes otherwise.

With bwrap each agent process gets its own network namespace (even 127.0.0.1 is unreachable),
PID, IPC and UTS namespaces, a read-only view of the filesystem, a private tmpfs ``/tmp``, no
environment variables but a minimal set, and dies with the worker. The worker's data directory
and the files of built-in datasets are hidden behind empty tmpfs mounts, so a decoder cannot
read the original image from them.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from codecbench.v1 import types_pb2

BWRAP = types_pb2.ISOLATION_BWRAP
# Sizes of an agent process's private tmpfs mounts (their pages count in its memory cgroup).
TMP_BYTES = 1024 * 1024 * 1024
SHM_BYTES = 64 * 1024 * 1024


@cache
def bwrap_path() -> str | None:
    """Path of the ``bwrap`` binary, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def available_isolation() -> int:
    """``ISOLATION_BWRAP`` when bubblewrap is installed, else ``ISOLATION_PROCESS``."""
    return types_pb2.ISOLATION_BWRAP if bwrap_path() else types_pb2.ISOLATION_PROCESS


def builtin_dataset_dirs() -> list[Path]:
    """Folders whose files are the originals of the built-in ``photos`` dataset."""
    import matplotlib
    import skimage

    return [Path(skimage.__file__).parent / "data", Path(matplotlib.get_data_path()) / "sample_data"]


def runtime_paths_under_tmp() -> list[Path]:
    """The interpreter, virtualenv and codecbench source folders that lie under /tmp.

    An agent process gets a private tmpfs on /tmp, which would hide them (a checkout in /tmp is
    common in CI): they are bound back, read-only, on top of it.
    """
    import codecbench

    roots = {
        Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(codecbench.__file__).resolve().parents[1]
    }
    under = sorted(p for p in roots if p.is_relative_to("/tmp") and p != Path("/tmp"))
    return [p for p in under if not any(p != q and p.is_relative_to(q) for q in under)]


def wrap_command(
    command: Sequence[str],
    isolation: int,
    hidden: Sequence[Path],
    gpu: bool,
    env: dict[str, str],
    keep_capabilities: bool = False,
) -> list[str]:
    """The argv that runs ``command`` under the requested isolation.

    Args:
        command: the child's own argv (``python -m sandbox.child ...``).
        hidden: directories replaced by empty tmpfs mounts inside the sandbox.
        gpu: bind the NVIDIA device nodes in (CUDA experiments).
        env: the child's whole environment.
        keep_capabilities: keep the capabilities bwrap grants inside its user namespace (only
            the warm template needs them, to give each forked agent process its own namespaces;
            agent processes always drop them all).
    """
    if isolation != types_pb2.ISOLATION_BWRAP:
        return list(command)
    argv = [
        bwrap_path() or "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
        "--proc", "/proc",
        "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]
    for path in runtime_paths_under_tmp():
        argv += ["--ro-bind", str(path), str(path)]
    if not keep_capabilities:
        # As root, bwrap would otherwise leave the sandboxed process every capability of its
        # user namespace (CAP_SYS_ADMIN included).
        argv += ["--cap-drop", "ALL"]
    for path in hidden:
        if path.exists():
            argv += ["--tmpfs", str(path), "--remount-ro", str(path)]
    argv += ["--chdir", "/tmp"]
    if gpu:
        for node in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(node), str(node)]
    # Nothing but /tmp and /dev/shm (each private to one agent process) stays writable.
    argv += ["--remount-ro", "/dev"]
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
    }
