"""The result cache: an experiment identical to an earlier one of the same owner completes at once
with a copy of that one's outcome, marked ``cached_from`` it (after Bazel's remote-execution action
cache, where an action's digest keys its stored result).

The key (:func:`cache_key`) is the sha256 over everything that decides a result:

- the agent bundle: entry module, contract, and each file's path and sha256 (not the display name);
- the dataset's digest (its images' names and sha256s), not its name;
- the parameter points, in order, each serialized deterministically;
- the device kind asked for (``cpu``, ``cuda``, ``any``);
- the timeouts, resolved against the built-in defaults (a result within 2 s says nothing of 0.5 s;
  a field left at 0 and one set to its default are the same);
- the worker build id that would run it (the orchestrator's expected build: only workers of that
  build get work), so a new worker build invalidates every entry; the build id covers the result
  libraries' versions too (Pillow, numpy, torch, pytorch-msssim, constriction: ``codecbench.build``),
  so upgrading them invalidates it as well.

Labels, priority and attempts are left out: they do not change a successful result.

What is reused (:func:`choose`): the newest SUCCEEDED experiment, which always wins over failures.
Without one, a FAILED experiment whose error kind should be deterministic for the same inputs
(:data:`DETERMINISTIC_FAILURES`: the agent does not import, or its signature does not fit the
contract), but only once two evaluations of the key failed the same way (same kind, exception
type and location): an import can fail by chance (a flaky file system, a race in the agent's
import-time code), and one such failure must not stick. Other failures (an exception on some
image, a timeout, a lost worker) may depend on the machine or on chance, so they are evaluated
again. Cached copies are no evaluations and do not count. Only the owner's own experiments are
reused (another user's result would reveal that they ran the same candidate). ``no_cache`` on
the request opts out; such an experiment becomes an entry for later lookups only if it SUCCEEDED.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from codecbench import devices
from codecbench.states import FAILED, SUCCEEDED
from codecbench.timeouts import default_timeouts, resolve
from codecbench.v1 import errors_pb2, orchestrator_pb2

DETERMINISTIC_FAILURES = frozenset({errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR, errors_pb2.ERROR_KIND_SIGNATURE_MISMATCH})


def cache_key(exp: orchestrator_pb2.Experiment, dataset_digest: str, build_id: str) -> str:
    """The hex sha256 that identifies the result of ``exp`` (module docstring).

    Args:
        exp: the experiment as it will be stored (files listed by sha256, device resolved).
        dataset_digest: the digest of the dataset it names.
        build_id: the worker build that would run it.
    """
    digest = hashlib.sha256()

    def part(data: bytes) -> None:
        # Length-prefixed, so no two different sequences of parts hash alike.
        digest.update(len(data).to_bytes(8, "big") + data)

    part(exp.agent.entry_module.encode())
    part(str(exp.agent.contract).encode())
    for f in sorted(exp.agent.files, key=lambda f: f.name):
        part(f.name.encode())
        part(f.sha256.encode())
    part(dataset_digest.encode())
    part(str(len(exp.points)).encode())
    for point in exp.points:
        part(point.SerializeToString(deterministic=True))
    part(devices.short_name(exp.device).encode())
    part(resolve(exp.timeouts, default_timeouts()).SerializeToString(deterministic=True))
    part(build_id.encode())
    return digest.hexdigest()


# Failures repeated this many times (not counting copies) are taken as deterministic.
FAILURES_TO_REUSE = 2


def _failure_signature(exp: orchestrator_pb2.Experiment) -> tuple[int, str, str] | None:
    """How a deterministic failure failed (kind, exception type, file:line); None for any other
    outcome and for cached copies, which are no new evaluation."""
    if exp.state != FAILED or exp.error.kind not in DETERMINISTIC_FAILURES or exp.cached_from:
        return None
    return exp.error.kind, exp.error.exception_type, exp.error.location


def choose(entries: Sequence[orchestrator_pb2.Experiment]) -> orchestrator_pb2.Experiment | None:
    """The finished experiment whose outcome stands for a new identical one (module docstring).

    Args:
        entries: finished experiments with the same key, newest first.

    Returns:
        The newest SUCCEEDED one; else the newest deterministic failure that happened
        :data:`FAILURES_TO_REUSE` times the same way; else None (evaluate it).
    """
    succeeded = next((e for e in entries if e.state == SUCCEEDED), None)
    if succeeded is not None:
        return succeeded
    signatures = [_failure_signature(e) for e in entries]
    counts = Counter(s for s in signatures if s is not None)
    return next((e for e, s in zip(entries, signatures, strict=True)
                 if s is not None and counts[s] >= FAILURES_TO_REUSE), None)


__all__ = ["DETERMINISTIC_FAILURES", "FAILURES_TO_REUSE", "cache_key", "choose"]
