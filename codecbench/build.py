"""The build id: which worker, sandbox, metrics and protocol code a process runs.

The old runner kept dispatching to a worker that ran week-old code. Every worker reports this
digest, and the orchestrator dispatches only to workers whose build id equals the one it expects
(by default its own, computed over the same files).

The digest covers exactly the code that decides an experiment's result, named below: the
``worker_svc`` and ``sandbox`` packages, the generated protocol, and the shared-kernel modules of
``codecbench`` that they import. The user-facing modules (CLI, client, analysis, launcher) are
left out on purpose, so editing them does not mark every worker STALE. A test checks that this
list is the worker's real import closure within ``codecbench``.

It also covers the installed versions of the libraries that decide results
(:data:`RESULT_LIBRARIES`): an upgraded Pillow decodes JPEGs differently, torch and numpy change a
learned codec's numbers and the metrics', pytorch-msssim computes MS-SSIM, constriction codes the
learned agents' bitstreams. A dependency upgrade on one worker therefore makes that worker STALE
against the others (it gets no work, and says why), rather than only invalidating the result
cache: results of one fleet are compared with each other (a BD-rate ranks candidates against a
baseline evaluated elsewhere), so they must all come from the same libraries. Upgrading the whole
fleet (and the orchestrator's expected build) changes the build id, and with it every result-cache
key (``orchestrator_svc.cache``), so no result of the old libraries is reused. The versions are
read from the installed distributions' metadata (no import: the orchestrator computes its expected
build without loading torch). torch's local version label (``+cpu``, ``+cu121``: which CUDA
toolkit the wheel was built for) is left out, so CPU and CUDA workers of one fleet share a build;
what device ran a result is the result-cache key's device kind.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import metadata
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


# Distributions (as pip names them) whose versions decide results (module docstring).
RESULT_LIBRARIES = ("constriction", "numpy", "Pillow", "pytorch-msssim", "torch")
ABSENT = "absent"  # the version of a library that is not installed


def library_versions(names: tuple[str, ...] = RESULT_LIBRARIES) -> dict[str, str]:
    """The installed version of each library, without a local label (``"2.13.0+cpu"`` -> ``"2.13.0"``);
    :data:`ABSENT` for one that is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name).split("+", 1)[0]
        except metadata.PackageNotFoundError:
            versions[name] = ABSENT
    return versions


def result_files(root: Path = _ROOT) -> list[Path]:
    """The files the build id covers, sorted, as paths under ``root``."""
    files = [root / module for module in RESULT_MODULES]
    for package in RESULT_PACKAGES:
        files.extend((root / package).rglob("*.py"))
    return sorted(set(files))


def compute_build_id(root: Path, libraries: dict[str, str] | None = None) -> str:
    """sha256 (first 16 hex digits) over the relative paths and contents of :func:`result_files`
    and the ``name==version`` of each result library.

    Args:
        root: the checkout whose files are hashed.
        libraries: library versions by name (default: the installed ones, :func:`library_versions`).
    """
    digest = hashlib.sha256()
    for path in result_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    for name, version in sorted((library_versions() if libraries is None else libraries).items()):
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()[:16]


@cache
def build_id() -> str:
    """The build id of the code this process runs (see :func:`compute_build_id`)."""
    return compute_build_id(_ROOT)
