"""The experiment state vocabulary, in one place for the server, the client, the CLI and bench.

``QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED`` (``codecbench.v1.ExperimentState``). A
worker lost mid-run sends an experiment from RUNNING back to QUEUED with ``attempt + 1``.
"""

from __future__ import annotations

from codecbench.v1 import experiment_pb2

QUEUED = experiment_pb2.EXPERIMENT_STATE_QUEUED
RUNNING = experiment_pb2.EXPERIMENT_STATE_RUNNING
SUCCEEDED = experiment_pb2.EXPERIMENT_STATE_SUCCEEDED
FAILED = experiment_pb2.EXPERIMENT_STATE_FAILED
CANCELLED = experiment_pb2.EXPERIMENT_STATE_CANCELLED
TERMINAL_STATES: frozenset[experiment_pb2.ExperimentState.ValueType] = frozenset({SUCCEEDED, FAILED, CANCELLED})


def is_terminal_event(event: experiment_pb2.ExperimentEvent) -> bool:
    """Whether ``event`` ends an experiment: a result or an error."""
    return event.WhichOneof("event") in ("result", "error")


def state_name(state: experiment_pb2.ExperimentState.ValueType) -> str:
    """``EXPERIMENT_STATE_FAILED`` -> ``"FAILED"``."""
    return experiment_pb2.ExperimentState.Name(state).removeprefix("EXPERIMENT_STATE_")
