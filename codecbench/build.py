"""The build id: which worker, sandbox and protocol code a process runs.

The old runner kept dispatching to a worker that ran week-old code. Every worker reports this
digest, and the orchestrator dispatches only to workers whose build id equals the one it expects
(by default its own, computed over the same files).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PROTOCOL_VERSION = "codecbench.v1"
_ROOT = Path(__file__).resolve().parent.parent
# The code that decides what an experiment's result is.
_PACKAGES = ("codecbench", "worker_svc", "sandbox")


@cache
def build_id() -> str:
    """sha256 (first 16 hex digits) over the paths and contents of the ``*.py`` files of the
    ``codecbench``, ``worker_svc`` and ``sandbox`` packages."""
    digest = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((_ROOT / package).rglob("*.py")):
            digest.update(path.relative_to(_ROOT).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]
