"""The result cache: an experiment identical to an earlier one of the same owner completes at once
with a copy of that one's outcome, marked ``cached_from`` it (after Bazel's remote-execution action
cache, where an action's digest keys its stored result).

The key (:func:`cache_key`) is the sha256 over everything that decides a result:

- the agent bundle: entry module, contract, and each file's path and sha256 (not the display name);
- the dataset's digest (its images' names and sha256s), not its name;
- the parameter points, in order, each serialized deterministically;
- the device kind asked for (``cpu``, ``cuda``, ``any``);
- the worker build id that would run it (the orchestrator's expected build: only workers of that
  build get work), so a new worker build invalidates every entry.

Timeouts, labels, priority and attempts are left out: they do not change a successful result.

What is reused: a SUCCEEDED experiment, or a FAILED one whose error kind is deterministic for the
same inputs (:data:`DETERMINISTIC_FAILURES`: the agent does not import, or its signature does not
fit the contract). Other failures (an exception on some image, a timeout, a lost worker) may
depend on the machine or on chance, so they are evaluated again. Only the owner's own
experiments are reused (another user's result would reveal that they ran the same candidate);
``no_cache`` on the request opts out.
"""

from __future__ import annotations

import hashlib

from codecbench import devices
from codecbench.states import FAILED, SUCCEEDED
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
    part(build_id.encode())
    return digest.hexdigest()


def reusable(exp: orchestrator_pb2.Experiment) -> bool:
    """Whether a finished experiment's outcome may stand for an identical one (module docstring)."""
    if exp.state == SUCCEEDED:
        return True
    return exp.state == FAILED and exp.error.kind in DETERMINISTIC_FAILURES


__all__ = ["DETERMINISTIC_FAILURES", "cache_key", "reusable"]
