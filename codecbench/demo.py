"""``make demo`` / ``python -m codecbench.demo``: codecbench end to end on real photos.

Starts an orchestrator and a worker as child processes (:mod:`codecbench.local`, data in
``out/demo-data``, fresh each run), evaluates the reference agents on the built-in ``photos``
dataset through the Python client, shown with the same code as ``codecbench run``:

- ``jpeg`` at qualities 10, 20, 30, 50, 70, 90 (the anchor of the BD-rate table),
- ``zlib_lossless`` and ``seed_example`` (lossless; the latter in the old runner's seed contract),
- ``factorized_prior`` (learned codec) at each quality whose weights ship, when the agent exists.

Then prints the results table, the BD-rate table against jpeg, writes the RD plot to
``out/rd.png``, shows the worker, stops both services and exits 0 (1 if an experiment failed).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from codecbench import analysis, states
from codecbench.cli import EXIT_INTERRUPTED
from codecbench.cli.follow import follow
from codecbench.cli.views import bd_rate_view, make_console, results_view, workers_table
from codecbench.client import Client
from codecbench.local import start_local
from codecbench.v1 import orchestrator_pb2

REPO = Path(__file__).resolve().parent.parent
AGENTS = REPO / "agents"
OUT = Path("out")
JPEG_QUALITIES = (10, 20, 30, 50, 70, 90)


@dataclass(frozen=True)
class DemoAgent:
    """An agent of the demo and its parameter points."""

    name: str
    points: list[dict[str, Any]] = field(default_factory=lambda: [{}])

    @property
    def folder(self) -> Path:
        """The agent's folder under ``agents/``."""
        return AGENTS / self.name


def factorized_prior_qualities() -> list[int]:
    """Qualities of ``agents/factorized_prior`` whose weights ship (``weights/q<N>.pt``); empty
    when the agent is not there."""
    folder = AGENTS / "factorized_prior"
    if not (folder / "codec.py").is_file():
        return []
    found = (re.fullmatch(r"q(\d+)\.pt", p.name) for p in (folder / "weights").glob("q*.pt"))
    return sorted(int(m.group(1)) for m in found if m)


def demo_agents() -> list[DemoAgent]:
    """The agents, in the order they are shown."""
    agents = [
        DemoAgent("jpeg", [{"quality": q} for q in JPEG_QUALITIES]),
        DemoAgent("zlib_lossless"),
        DemoAgent("seed_example"),
    ]
    if qualities := factorized_prior_qualities():
        agents.append(DemoAgent("factorized_prior", [{"quality": q} for q in qualities]))
    return agents


def skipped_agents() -> list[str]:
    """Why an optional agent is not part of this demo run (said aloud, not silently dropped)."""
    if factorized_prior_qualities():
        return []
    return [
        "factorized_prior skipped: agents/factorized_prior/ or its weights (weights/q<N>.pt) are not in this checkout"
    ]


async def demo(out: Path, console: Console) -> int:
    """Runs the demo; returns the exit code (1 when an experiment did not succeed)."""
    started = time.perf_counter()
    data_dir = out / "demo-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    console.rule("codecbench demo")
    # Two slots on two cores: the slow learned codec runs beside the fast classical ones.
    services = await start_local(data_dir, port=0, worker_slots=2)
    console.print(
        f"orchestrator {services.orchestrator.address} (pid {services.orchestrator.pid}), worker "
        f"{services.worker_id} {services.worker.address} (pid {services.worker.pid}); logs in "
        f"{data_dir / 'logs'}"
    )
    finished: list[orchestrator_pb2.Experiment] = []
    try:
        async with Client(services.orchestrator.address, token_file=services.token_file) as client:
            agents = demo_agents()
            for note in skipped_agents():
                console.print(note)
            # The longest run is queued first so it starts at once; results are shown in `agents` order.
            queue_order = sorted(agents, key=lambda a: a.name != "factorized_prior")
            submitted = {
                a.name: await client.submit(a.folder, dataset="photos", points=a.points, labels={"source": "demo"})
                for a in queue_order
            }
            for agent in agents:
                console.rule(f"{agent.name}: {len(agent.points)} point(s) on photos")
                finished.append(await follow(client, submitted[agent.name], console))
            console.rule("results")
            console.print(results_view(finished, title="results on photos (8 images)"))
            succeeded = [analysis.Curve.from_experiment(e) for e in finished if e.state == states.SUCCEEDED]
            jpeg = next((c for c in succeeded if c.name == "jpeg"), None)
            if jpeg is not None:
                console.print(bd_rate_view(analysis.bd_rate_table(succeeded, jpeg), jpeg))
                if not any(c is not jpeg and all(math.isfinite(p.psnr_db) for p in c.points) for c in succeeded):
                    console.print(
                        "BD-rate needs a second lossy RD curve: only jpeg is lossy here, so its row "
                        "(jpeg against itself, +0.00 %) is a sanity check."
                    )
                plot = out / "rd.png"
                notes = analysis.rd_plot(succeeded, plot, title="codecbench demo: photos (8 images)")
                console.print(f"RD plot (bpp vs PSNR) written to {plot}")
                for note in notes:
                    console.print(f"  {note}")
            console.print(workers_table(await client.workers()))
    finally:
        await services.stop()
    failed = [e for e in finished if e.state != states.SUCCEEDED]
    outcome = Text(
        f"demo finished in {time.perf_counter() - started:.0f} s: {len(finished) - len(failed)} of "
        f"{len(finished)} experiments succeeded; services stopped",
        style="red" if failed else "green",
    )
    console.print(outcome)
    return 1 if failed else 0


def main() -> int:
    """``python -m codecbench.demo`` (``make demo``); returns the exit status."""
    try:
        return asyncio.run(demo(OUT, make_console()))
    except KeyboardInterrupt:  # the services were stopped on the way out
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
