"""The build id: which worker, sandbox, metrics and protocol code a process runs.

The old runner kept dispatching to a worker that ran week-old code. Every worker reports this
digest, and the orchestrator dispatches only to workers whose build id equals the one it expects
(by default its own, computed over the same files).

The digest covers exactly the code that decides an experiment's result, named below: the
``worker_svc`` and ``sandbox`` packages, the generated protocol, and the shared-kernel modules of
``codecbench`` that they import. The user-facing modules (CLI, client, analysis, launcher) are
left out on purpose, so editing them does not mark every worker STALE. A test checks that this
list is the worker's real import closure within ``codecbench``.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PROTOCOL_VERSION = "codecbench.v1"
_ROOT = Path(__file__).resolve().parent.parent
# Whole packages whose code decides a result.
RESULT_PACKAGES = ("worker_svc", "sandbox", "codecbench/v1")
# Modules of the shared kernel that the worker and the sandbox import.
RESULT_MODULES = (
    "codecbench/auth.py",
    "codecbench/blobs.py",
    "codecbench/build.py",
    "codecbench/bundles.py",
    "codecbench/datasets.py",
    "codecbench/devices.py",
    "codecbench/errors.py",
    "codecbench/framing.py",
    "codecbench/logs.py",
    "codecbench/reconstructions.py",
    "codecbench/rpc.py",
    "codecbench/status.py",
    "codecbench/telemetry.py",
    "codecbench/tensors.py",
    "codecbench/timeouts.py",
    "codecbench/validation.py",
    "codecbench/values.py",
)


def result_files(root: Path = _ROOT) -> list[Path]:
    """The files the build id covers, sorted, as paths under ``root``."""
    files = [root / module for module in RESULT_MODULES]
    for package in RESULT_PACKAGES:
        files.extend((root / package).rglob("*.py"))
    return sorted(set(files))


def compute_build_id(root: Path) -> str:
    """sha256 (first 16 hex digits) over the relative paths and contents of :func:`result_files`."""
    digest = hashlib.sha256()
    for path in result_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@cache
def build_id() -> str:
    """The build id of the code this process runs (see :func:`compute_build_id`)."""
    return compute_build_id(_ROOT)
