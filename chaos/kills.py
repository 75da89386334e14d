"""Chaos (a): experiments on real workers while workers and the orchestrator are SIGKILLed.

``experiments`` experiments of a trivial agent go to ``workers`` real workers (child processes).
As the finished count crosses evenly spaced marks, a random worker is SIGKILLed and a new one
started in its place; at half way the orchestrator is SIGKILLed and started again on the same port
and data directory. Submissions carry a ``request_id``, so one retried after a lost reply cannot
create a second experiment. Afterwards, with every service up, each experiment must reach a
terminal state, and its stored history must be gapless with exactly one terminal event
(:func:`chaos.invariants.history_problem`).
"""

from __future__ import annotations

import asyncio
import io
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from chaos.cluster import Cluster, await_all, database_args
from chaos.invariants import history_problem, retrying, stored_history
from codecbench import bundles, errors, local, logs, states
from codecbench.client import Client
from codecbench.v1 import errors_pb2, experiment_pb2

TRIVIAL_AGENT = Path(__file__).resolve().parent.parent / "bench" / "agents" / "trivial"
SUBMITTERS = 4
MAX_ATTEMPTS = 10  # the most the orchestrator allows: a kill costs the attempts it interrupts


@dataclass
class KillsOutcome:
    """The counts of chaos (a).

    Attributes:
        submitted: experiments submitted (distinct request ids).
        stored: experiments the orchestrator lists for this run.
        lost: submitted experiments it does not know.
        duplicated: stored experiments beyond one per request id.
        stuck: experiments not terminal once every service was up again for ``drain_s``.
        bad_histories: experiments whose stored events break the sequence invariants (id: problem).
        states: final states, by name.
        failure_kinds: error kinds of FAILED experiments, by name.
        retried: experiments that needed more than one attempt.
        worker_kills: workers SIGKILLed (each replaced by a new one).
        orchestrator_kills: orchestrator SIGKILLs (each followed by a restart).
        wall_s: duration of the run.
    """

    submitted: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    bad_histories: dict[str, str] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    failure_kinds: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    worker_kills: int = 0
    orchestrator_kills: int = 0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or stuck, and every history sound."""
        return not (self.lost or self.duplicated or self.stuck or self.bad_histories)


def tiny_png(side: int = 24) -> bytes:
    """A small deterministic RGB PNG (the dataset of every experiment)."""
    pixels = np.random.default_rng(7).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return out.getvalue()


async def _count_unfinished(client: Client) -> int:
    return len(await client.list(states=[states.QUEUED, states.RUNNING], limit=100_000))


async def run_kills(
    root: Path, experiments: int = 300, workers: int = 3, worker_kills: int = 10, seed: int = 0,
    drain_s: float = 240.0, database_url: str = "",
) -> KillsOutcome:
    """Runs chaos (a) under ``root`` (services' data and logs) and returns its counts.

    Args:
        root: a fresh directory for the services.
        experiments: experiments to submit.
        workers: workers running at any time (one fewer for a moment after each kill).
        worker_kills: worker SIGKILLs, spread evenly over the run.
        seed: seeds the choice of victims.
        drain_s: how long, after the last kill, every experiment may take to finish before the
            unfinished ones count as stuck.
        database_url: the orchestrator's store (``--database-url``); "": its SQLite file.
    """
    rng = random.Random(seed)
    log = logs.get_logger("chaos.kills")
    outcome = KillsOutcome()
    started = time.monotonic()
    run_label = {"chaos_run": uuid.uuid4().hex[:12]}
    bundle = bundles.bundle_from_dir(TRIVIAL_AGENT)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "tiny.png").write_bytes(tiny_png())
    request_ids = [f"{run_label['chaos_run']}-{i}" for i in range(experiments)]
    submitted: dict[str, str] = {}

    async with Cluster(root / "services", orchestrator_args=database_args(database_url)) as cluster:
        await cluster.start(workers)
        log.info("chaos.started", workers=workers, experiments=experiments)
        async with cluster.client() as client:
            await client.upload_dataset("chaos-tiny", images)
            queue = iter(request_ids)

            async def submitter() -> None:
                for request_id in queue:
                    exp = await retrying(lambda r=request_id: client.submit(  # type: ignore[misc]
                        bundle, dataset="chaos-tiny", labels=run_label, request_id=r, max_attempts=MAX_ATTEMPTS,
                        no_cache=True))  # every experiment must really run: the kills are the point
                    submitted[request_id] = exp.experiment_id

            submitters = [asyncio.create_task(submitter()) for _ in range(SUBMITTERS)]
            try:
                # Kill marks: worker kills spread over the finished count; the orchestrator at half way.
                marks = sorted([(experiments * (k + 1) // (worker_kills + 1), "worker") for k in range(worker_kills)]
                               + [(experiments // 2, "orchestrator")])
                for mark, victim in marks:
                    async def passed(m: int = mark) -> bool:
                        for task in submitters:
                            if task.done() and task.exception() is not None:
                                raise task.exception()  # type: ignore[misc]
                        try:
                            return len(submitted) - await _count_unfinished(client) >= m
                        except errors.Unavailable:
                            return False

                    await local.eventually(passed, timeout_s=drain_s + 600.0, interval_s=0.25,
                                           what=f"{mark} experiments finished")
                    log.info("chaos.kill", victim=victim, mark=mark)
                    if victim == "orchestrator":
                        assert cluster.orchestrator is not None
                        await cluster.kill(cluster.orchestrator)
                        outcome.orchestrator_kills += 1
                        await cluster.start_orchestrator()
                    else:
                        target = rng.choice(cluster.alive_workers())
                        await cluster.kill(target)
                        outcome.worker_kills += 1
                        await cluster.start_worker()
                await asyncio.gather(*submitters)
            finally:
                await await_all(submitters)
            outcome.submitted = len(submitted)
            log.info("chaos.submitted", submitted=outcome.submitted)

            deadline = time.monotonic() + drain_s
            unfinished = await retrying(lambda: _count_unfinished(client))
            while unfinished and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                unfinished = await retrying(lambda: _count_unfinished(client))
            outcome.stuck = unfinished
            log.info("chaos.drained", stuck=unfinished)

            stored = await retrying(lambda: client.list(labels=run_label, limit=100_000))
            outcome.stored = len(stored)
            by_request: Counter[str] = Counter(e.request_id for e in stored)
            outcome.duplicated = sum(n - 1 for n in by_request.values())
            outcome.lost = sum(1 for r in request_ids if r not in by_request)
            for exp in stored:
                outcome.states[states.state_name(exp.state)] += 1
                if exp.state == experiment_pb2.EXPERIMENT_STATE_FAILED:
                    outcome.failure_kinds[errors_pb2.ErrorKind.Name(exp.error.kind)] += 1
                outcome.retried += exp.attempt > 1
                if exp.state in (states.QUEUED, states.RUNNING):
                    continue  # counted as stuck
                events = await stored_history(client, exp.experiment_id)
                if problem := history_problem(events, exp.last_sequence):
                    outcome.bad_histories[exp.experiment_id] = problem
    outcome.wall_s = time.monotonic() - started
    return outcome
