"""Helpers of the worker-service tests: a tiny inline dataset, running an experiment to its end,
checking the event stream, and finding sandbox processes in /proc."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from codecbench import values
from codecbench.v1 import errors_pb2, experiment_pb2, types_pb2, worker_pb2, worker_pb2_grpc
from helpers import TEST_AGENTS, agent_bundle
from sandbox.child import PROCESS_NAME

# (height, width) of the inline dataset's images; the second one is large enough for MS-SSIM.
TINY_SIZES = ((40, 48), (180, 200))


def png_bytes(height: int, width: int, seed: int) -> bytes:
    """A deterministic RGB PNG: smooth gradients plus noise (so codecs have something to do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1)
    noisy = np.clip(base + rng.integers(-20, 21, size=base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(out, format="PNG")
    return out.getvalue()


def tiny_dataset() -> types_pb2.DatasetRef:
    """Two small images sent inline (no built-in dataset, no blob fetch)."""
    images = [
        types_pb2.BlobRef(name=f"tiny{i}.png", content=png_bytes(h, w, seed=i))
        for i, (h, w) in enumerate(TINY_SIZES)
    ]
    return types_pb2.DatasetRef(name="tiny", images=images)


def request(
    agent: str | types_pb2.AgentBundle,
    dataset: types_pb2.DatasetRef | None = None,
    points: list[dict] | None = None,
    timeouts: types_pb2.Timeouts | None = None,
    experiment_id: str = "",
) -> worker_pb2.RunExperimentRequest:
    bundle = agent_bundle(agent) if isinstance(agent, str) else agent
    return worker_pb2.RunExperimentRequest(
        experiment_id=experiment_id or f"test-{bundle.name}",
        attempt=1,
        agent=bundle,
        dataset=dataset or tiny_dataset(),
        points=[values.params_from_python(p) for p in (points or [])],
        device=types_pb2.DEVICE_CPU,
        timeouts=timeouts,
    )


def check_stream(events: list[experiment_pb2.ExperimentEvent]) -> experiment_pb2.ExperimentEvent:
    """Asserts the stream's invariants and returns its terminal event: sequence numbers 1, 2, 3, ...;
    exactly one terminal event (result or error), and it is the last one."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e.WhichOneof("event") in ("result", "error")]
    assert len(terminal) == 1, [e.WhichOneof("event") for e in events]
    assert events[-1] is terminal[0], "an event followed the terminal event"
    return terminal[0]


async def run(
    stub: worker_pb2_grpc.WorkerServiceStub, req: worker_pb2.RunExperimentRequest
) -> tuple[list[experiment_pb2.ExperimentEvent], experiment_pb2.ExperimentEvent]:
    """Runs an experiment to its end; returns all events and the terminal one."""
    events = [response.event async for response in stub.RunExperiment(req)]
    return events, check_stream(events)


def error_of(terminal: experiment_pb2.ExperimentEvent) -> errors_pb2.Error:
    assert terminal.HasField("error"), f"expected a failure, got {terminal}"
    return terminal.error


def result_of(terminal: experiment_pb2.ExperimentEvent) -> experiment_pb2.ExperimentResult:
    assert terminal.HasField("result"), f"expected a result, got {terminal.error}"
    return terminal.result


async def assert_good_agent_runs(stub: worker_pb2_grpc.WorkerServiceStub) -> None:
    """The lossless reference agent succeeds on the tiny dataset (the worker is still healthy)."""
    events, terminal = await run(stub, request("zlib_lossless"))
    result = result_of(terminal)
    assert [len(p.images) for p in result.points] == [len(TINY_SIZES)]
    assert all(item.metrics.lossless for item in result.points[0].images)
    assert sum(e.HasField("image_result") for e in events) == len(TINY_SIZES)


def line_of(agent: str, text: str, file: str = "codec.py") -> int:
    """The 1-based number of the first line of a test agent's file that starts with ``text`` (indent aside)."""
    lines = (TEST_AGENTS / agent / file).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(text))


# ---- processes, read from /proc (psutil is not installed) ----

def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None when it no longer exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


def agent_processes(root: int | None = None) -> set[int]:
    """Live descendants of ``root`` (default: this process) that are agent processes
    (``/proc/PID/comm`` is ``cb-agent``, set by the sandbox runtime)."""
    root = root or os.getpid()
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[1] != "Z":
            parent[int(entry.name)] = stat[0]
    found = set()
    for pid in parent:
        ancestor, hops = parent.get(pid), 0
        while ancestor and ancestor != root and hops < 64:
            ancestor, hops = parent.get(ancestor), hops + 1
        if ancestor != root:
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if comm == PROCESS_NAME:
            found.add(pid)
    return found
