"""What every chaos run checks of an experiment's stored history, and the shared retry of calls
that meet a restarting orchestrator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from codecbench import errors, states
from codecbench.client import Client
from codecbench.v1 import experiment_pb2

T = TypeVar("T")


async def retrying(call: Callable[[], Awaitable[T]], timeout_s: float = 120.0, interval_s: float = 0.5) -> T:
    """``call()`` again while the orchestrator is unreachable (it is being restarted).

    Raises:
        errors.Unavailable: still unreachable after ``timeout_s``.
        errors.CodecbenchError: any other refusal, at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except errors.Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval_s)


def history_problem(events: Sequence[experiment_pb2.ExperimentEvent], last_sequence: int) -> str:
    """What is wrong with an experiment's stored events, or ``""``: sequence numbers must be 1, 2,
    3, ... without a gap or repeat up to the experiment's ``last_sequence``, with exactly one
    terminal event (a result or an error), the last one."""
    sequences = [e.sequence for e in events]
    if len(events) != last_sequence:
        return f"{len(events)} events streamed, {last_sequence} stored"
    if sequences != list(range(1, len(events) + 1)):
        return f"sequences are not 1..{len(events)}: {sequences[:20]}"
    terminal = [i for i, e in enumerate(events) if states.is_terminal_event(e)]
    if len(terminal) != 1:
        return f"{len(terminal)} terminal events"
    if terminal[0] != len(events) - 1:
        return "an event follows the terminal event"
    return ""


async def stored_history(
    client: Client, experiment_id: str, timeout_s: float = 10.0
) -> list[experiment_pb2.ExperimentEvent]:
    """Every stored event of a finished experiment, from the first (the stream ends after the terminal one).

    Raises:
        TimeoutError: the stream did not end within ``timeout_s`` (the experiment is not finished).
    """
    async with asyncio.timeout(timeout_s):
        return [event async for event in client.watch(experiment_id)]
