"""Shared machinery of the benchmark suite: sizes, child services, timing, images, agents.

Services run as child processes (``python -m orchestrator_svc`` / ``python -m worker_svc``), the way
a user starts them; every child is stopped when its context ends, even on errors, and
:func:`kill_leftovers` SIGKILLs any that is somehow still alive when the suite exits. Every wait is
bounded by a count and a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import platform
import shlex
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
from google.protobuf import timestamp_pb2
from PIL import Image

from codecbench import build, errors, local, states
from codecbench.client import Client
from codecbench.local import LocalService, worker_isolation_args
from codecbench.v1 import experiment_pb2, orchestrator_pb2, types_pb2

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TRIVIAL_AGENT = Path(__file__).resolve().parent / "agents" / "trivial"
AGENTS = REPO / "agents"

STARTUP_TIMEOUT_S = 120.0  # a service imports torch; on a loaded 2-core machine that can take a while
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 180.0


# -- sizes and context -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How many repetitions and how much data each figure uses (``--quick`` shrinks all of them)."""

    overhead_n: int = 30
    jpeg_n: int = 5
    jpeg_qualities: tuple[int, ...] = (30, 70)
    fp_n: int = 3
    fp_qualities: tuple[int, ...] = (1, 2, 3, 4)
    throughput_m: int = 60
    throughput_rounds: int = 3
    throughput_slots: tuple[int, ...] = (1, 2)
    transfer_bytes: int = 100 * 1000 * 1000
    transfer_n: int = 3
    scale_experiments: int = 10_000
    scale_workers: int = 50
    scale_slots: int = 4
    scale_live: int = 1_000
    scale_watchers: int = 200
    warm_n: int = 10
    cli_start_n: int = 20
    batch_candidates: int = 1000
    # A figure's time limit is its module's TIMEOUT_S times this.
    timeout_scale: float = 1.0

    @classmethod
    def quick(cls) -> Sizes:
        """Development sizes: every N shrunk, a few minutes in all; the figures are indicative only."""
        return cls(
            overhead_n=3, jpeg_n=2, fp_n=1, fp_qualities=(1,), throughput_m=10, throughput_rounds=1,
            transfer_bytes=10 * 1000 * 1000, transfer_n=2, scale_experiments=500, scale_workers=10,
            scale_live=100, scale_watchers=20, warm_n=3, cli_start_n=5, batch_candidates=100, timeout_scale=0.5,
        )


@dataclass
class BenchContext:
    """What every figure gets: sizes, a scratch directory, the profiling mode, a command log.

    Attributes:
        profile: "auto" (profile when a target is missed), "always" or "never".
        figure_timeout_s: the current figure's time limit; figures size their loops' time budgets from it.
        commands: command lines started by the current figure (reset per figure).
        placeholders: text replaced by a name in recorded commands (service address -> ``$ORCHESTRATOR``).
    """

    sizes: Sizes
    quick: bool
    tmp: Path
    profile: str = "auto"
    figure_timeout_s: float = 600.0
    commands: list[str] = field(default_factory=list)
    placeholders: dict[str, str] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        """A new empty directory under the run's scratch directory."""
        path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path

    def record(self, argv: Sequence[str] | str) -> str:
        """Adds a command line to the figure's log, with the scratch directory shown as ``$TMP`` and
        service addresses by name (``$ORCHESTRATOR``). A string is recorded as it is (a call made in
        the bench process, for instance)."""
        line = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
        line = line.replace(str(self.tmp), "$TMP").replace(PYTHON, ".venv/bin/python").replace(f"{REPO}/", "")
        for value, name in self.placeholders.items():
            line = line.replace(value, name)
        if line not in self.commands:
            self.commands.append(line)
        return line

    def should_profile(self, missed: bool) -> bool:
        return self.profile == "always" or (self.profile == "auto" and missed)


# -- child processes -------------------------------------------------------------------------

_LIVE: dict[int, asyncio.subprocess.Process] = {}


def proc_status_bytes(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (e.g. VmHWM) in bytes, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes(service: LocalService) -> int | None:
    """VmHWM (peak resident set size) of a service from /proc, in bytes; None once it is gone."""
    return proc_status_bytes(service.pid, "VmHWM")


async def spawn_service(
    ctx: BenchContext, name: str, module: str, args: Sequence[str], profile_path: Path | None = None
) -> LocalService:
    """Starts ``python -m module args`` with :func:`codecbench.local.spawn_service` (the launcher's
    own), its command line recorded for the report and its log in the scratch directory.

    With ``profile_path`` it runs under ``python -m bench.threadprof --on-signal -o profile_path``
    (cProfile of every thread); profiling starts when the service gets SIGUSR1.

    Raises:
        LocalStartError: the service exited or did not print its address within ``STARTUP_TIMEOUT_S``.
    """
    argv = [module, *args]
    if profile_path:
        argv = ["bench.threadprof", "--on-signal", "-o", str(profile_path), "-m", *argv]
    ctx.record([PYTHON, "-m", *argv])
    service = await local.spawn_service(
        *argv, log_path=ctx.tmp / f"{name}-{uuid.uuid4().hex[:6]}.log", name=name, startup_s=STARTUP_TIMEOUT_S,
        cwd=REPO,  # bench.* modules are not installed: they run from the repository root
    )
    _LIVE[service.pid] = service.process
    return service


def kill_leftovers() -> list[int]:
    """SIGKILLs every child this suite started that is still running (last resort); returns their pids."""
    killed = []
    for pid, proc in list(_LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        _LIVE.pop(pid, None)
    return killed


@dataclass
class System:
    """A running orchestrator (and worker), and a client connected to the orchestrator."""

    orchestrator: LocalService
    worker: LocalService | None
    client: Client
    data_dir: Path

    @property
    def services(self) -> list[LocalService]:
        return [s for s in (self.orchestrator, self.worker) if s is not None]

    def sandbox_mode(self) -> str:
        """How the worker starts agent processes, from its log: warm template or fresh interpreters."""
        log = self.worker.log_path.read_text(errors="replace") if self.worker else ""
        if "sandbox.warm_template" in log:
            return "forked from the worker's warm template (torch already imported)"
        if "sandbox.no_warm_template" in log:
            return "fresh interpreters importing torch (the warm template could not start here)"
        return "fresh interpreters importing torch (this worker has no warm template)"

    def enroll_secret(self) -> str:
        """The orchestrator's worker enrollment secret (made in its data dir at first start)."""
        return (self.data_dir / "orchestrator" / "enroll.token").read_text().strip()


@asynccontextmanager
async def running_system(
    ctx: BenchContext, name: str, slots: int = 1, profile: bool = False, orchestrator_args: Sequence[str] = ()
) -> AsyncIterator[System]:
    """An orchestrator and (``slots`` > 0) one worker with ``slots`` slots, as child processes.

    Both get the same explicit build id: other people edit the tree while the suite runs, and a
    worker that computed its digest a second after an edit would be STALE and never get work.
    With ``profile`` both run under cProfile and write ``<service>.prof`` in the system's directory.
    """
    data_dir = ctx.scratch(name)
    build_id = build.build_id()
    started: list[LocalService] = []
    client: Client | None = None
    try:
        orchestrator = await spawn_service(
            ctx, f"{name}-orchestrator", "orchestrator_svc",
            ["--port", "0", "--data-dir", str(data_dir / "orchestrator"), "--expected-build", build_id,
             "--admin-token-file", str(data_dir / "client.token"), *orchestrator_args],
            data_dir / "orchestrator.prof" if profile else None,
        )
        started.append(orchestrator)
        ctx.placeholders[orchestrator.address] = "$ORCHESTRATOR"
        worker = None
        if slots > 0:
            worker = await spawn_service(
                ctx, f"{name}-worker", "worker_svc",
                ["--port", "0", "--orchestrator", orchestrator.address, "--data-dir", str(data_dir / "worker"),
                 "--slots", str(slots), "--build-id", build_id,
                 "--enroll-token-file", str(data_dir / "orchestrator" / "enroll.token"), *worker_isolation_args()],
                data_dir / "worker.prof" if profile else None,
            )
            started.append(worker)
        client = Client(orchestrator.address, token_file=data_dir / "client.token")
        if worker is not None:
            await wait_for_ready_worker(client, worker)
        yield System(orchestrator, worker, client, data_dir)
    finally:
        if client is not None:
            await client.close()
        for service in reversed(started):
            await service.stop(STOP_TIMEOUT_S)


async def wait_for_ready_worker(client: Client, worker: LocalService, timeout_s: float = 60.0) -> None:
    """Waits until the orchestrator lists a READY worker.

    Raises:
        RuntimeError: none within ``timeout_s``, or the worker is STALE/LOST.
    """

    async def ready() -> bool:
        for status in await client.workers():
            if status.state == orchestrator_pb2.WORKER_STATE_READY:
                return True
            if status.state in (orchestrator_pb2.WORKER_STATE_STALE, orchestrator_pb2.WORKER_STATE_LOST):
                raise RuntimeError(f"worker is {orchestrator_pb2.WorkerState.Name(status.state)}: "
                                   f"{status.state_reason}")
        return False

    try:
        await local.eventually(ready, timeout_s, what="a READY worker")
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}\nworker log:\n{worker.log_tail()}") from None


# -- timing ----------------------------------------------------------------------------------


async def alternate(
    rounds: int, arms: Sequence[tuple[str, Callable[[], Awaitable[float]]]], budget_s: float
) -> dict[str, list[float]]:
    """Runs the arms in turn (A, B, A, B, ...), ``rounds`` times; each call returns one sample.

    Stops after the round in which ``budget_s`` ran out (at least one round always runs), so the
    suite ends even on a much slower machine; the report shows the N actually measured.
    """
    samples: dict[str, list[float]] = {name: [] for name, _ in arms}
    deadline = time.monotonic() + budget_s
    for _ in range(rounds):
        for name, arm in arms:
            samples[name].append(await arm())
        if time.monotonic() > deadline:
            break
    return samples


async def time_command(
    ctx: BenchContext, argv: Sequence[str], until_first_line: bool = False, timeout_s: float = COMMAND_TIMEOUT_S
) -> float:
    """Runs a command and returns its wall time in s: to its successful exit, or with
    ``until_first_line`` to the first line it prints on stdout (it is "ready"; its exit is then
    awaited untimed).

    Raises:
        RuntimeError: it failed, printed no line, or ran past ``timeout_s`` (it is killed then).
    """
    ctx.record(argv)
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(REPO), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if until_first_line else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _LIVE[proc.pid] = proc
    line = b"-"
    try:
        async with asyncio.timeout(timeout_s):
            if until_first_line:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                elapsed = time.perf_counter() - start
            assert proc.stderr is not None
            stderr = await proc.stderr.read()
            await proc.wait()
            if not until_first_line:
                elapsed = time.perf_counter() - start
    except TimeoutError:
        raise RuntimeError(f"{shlex.join(argv)} ran past {timeout_s:g} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        _LIVE.pop(proc.pid, None)
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}"
                           f"{'' if line else ' without printing a line'}: {stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def timestamp_s(stamp: timestamp_pb2.Timestamp) -> float:
    """A protobuf Timestamp as POSIX seconds."""
    return stamp.ToMicroseconds() / 1e6


# -- experiments through the system -----------------------------------------------------------


@dataclass
class Run:
    """One experiment through the whole system, as the client saw it.

    Attributes:
        wall_s: from just before ``Client.submit`` to the terminal event arriving at the client.
        experiment: the finished experiment (GetExperiment after the terminal event).
        events: every event the watch delivered, in order.
        submitted_at, received_at: wall-clock (POSIX s) just before the submit and at the terminal event.
    """

    wall_s: float
    experiment: orchestrator_pb2.Experiment
    events: list[experiment_pb2.ExperimentEvent] = field(default_factory=list)
    submitted_at: float = 0.0
    received_at: float = 0.0

    @property
    def queue_s(self) -> float:
        """create_time -> start_time, stamped by the orchestrator."""
        return timestamp_s(self.experiment.start_time) - timestamp_s(self.experiment.create_time)

    @property
    def running_s(self) -> float:
        """start_time -> end_time, stamped by the orchestrator."""
        return timestamp_s(self.experiment.end_time) - timestamp_s(self.experiment.start_time)

    @property
    def worker_wall_s(self) -> float:
        """The worker's own wall time of the run (sandbox start, codec, metrics)."""
        return self.experiment.result.wall_ms / 1000.0

    @property
    def codec_s(self) -> float:
        """Sum of encode_ms + decode_ms over every image, as measured by the worker."""
        return sum(
            item.metrics.encode_ms + item.metrics.decode_ms for p in self.experiment.result.points for item in p.images
        ) / 1000.0

    def phases_ms(self) -> dict[str, float]:
        """The experiment's timeline cut at its events, in ms. Times come from the event stamps (the
        orchestrator stamps state changes, the worker its own events; one machine, one clock), the
        experiment's create/end times and this client's clock. Empty when an expected event is missing."""

        def first(kind: str, phase: int = 0, state: int = 0) -> float | None:
            for event in self.events:
                if event.WhichOneof("event") != kind:
                    continue
                if (phase and event.progress.phase != phase) or (state and event.state_change.state != state):
                    continue
                return timestamp_s(event.time)
            return None

        marks = [
            ("submit → created (CreateExperiment)", self.submitted_at),
            ("created → dispatched (queue, scheduler)", timestamp_s(self.experiment.create_time)),
            ("dispatched → worker starts the run (RunExperiment, agent and dataset fetch)",
             first("state_change", state=experiment_pb2.EXPERIMENT_STATE_RUNNING)),
            ("encoder ready: agent process, agent load, every point bound", first("progress", types_pb2.PHASE_LOAD)),
            ("encode every image; the encoder ends and the decoder starts", first("progress", types_pb2.PHASE_ENCODE)),
            ("decode + trusted metrics of every image", first("progress", types_pb2.PHASE_DECODE)),
            ("last image result → terminal event (the decoder is torn down after it)",
             max((timestamp_s(e.time) for e in self.events if e.WhichOneof("event") == "image_result"), default=None)),
            ("terminal event → stored by the orchestrator", first("result")),
            ("stored → delivered to the client (WatchExperiment)", timestamp_s(self.experiment.end_time)),
            ("", self.received_at),
        ]
        if any(t is None for _, t in marks):
            return {}
        return {name: (marks[i + 1][1] - t) * 1000.0 for i, (name, t) in enumerate(marks[:-1])}  # type: ignore[operator]


async def submit_and_wait(
    client: Client, agent: Any, dataset: str, points: Sequence[dict[str, Any]] = (), timeout_s: float = 600.0
) -> Run:
    """Submits an experiment and follows it to its terminal event.

    Raises:
        RuntimeError: it did not succeed (the typed error is named), or ran past ``timeout_s``.
    """
    submitted_at = time.time()
    start = time.perf_counter()
    exp = await client.submit(agent, dataset=dataset, points=points, no_cache=True)
    events = []
    async with asyncio.timeout(timeout_s):
        async for event in client.watch(exp.experiment_id):
            events.append(event)
    wall = time.perf_counter() - start
    received_at = time.time()
    final = await client.get(exp.experiment_id)
    if final.state != states.SUCCEEDED:
        raise RuntimeError(f"experiment {final.experiment_id} ended {final.state}: {errors.describe(final.error)}")
    return Run(wall, final, events, submitted_at, received_at)


# -- agents and images -----------------------------------------------------------------------


def load_agent_module(folder: Path, entry_module: str = "codec") -> ModuleType:
    """Imports an agent's entry module from its folder, in this process (the in-process baseline).

    The folder goes first on ``sys.path`` while the module runs, as in the sandbox, so an agent
    that imports a sibling module (``from model import ...``) works.

    Raises:
        ImportError: the module (or one it imports) cannot be loaded.
    """
    path = folder / f"{entry_module}.py"
    spec = importlib.util.spec_from_file_location(f"bench_agent_{folder.name}_{entry_module}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def noise_png(height: int, width: int, seed: int, compress_level: int = 1) -> bytes:
    """PNG bytes of uniform RGB noise: incompressible, so the file is about 3·H·W bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


# -- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError):
        pass
    return float("nan")


def machine_info() -> dict[str, str]:
    """CPU model, cores, RAM, OS, versions of Python/torch/grpcio/protobuf, isolation, load."""
    import google.protobuf
    import torch

    from sandbox import isolation

    load = os.getloadavg()
    return {
        "CPU": _cpu_model(),
        "cores (usable / online)": f"{len(os.sched_getaffinity(0))} / {os.cpu_count()}",
        "RAM": f"{_mem_total_gib():.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "torch": f"{torch.__version__} (intra-op threads in the bench process: {torch.get_num_threads()})",
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "sandbox isolation": "bubblewrap" if isolation.bwrap_path() else "process only (no bwrap)",
        "build id": build.build_id(),
        "load average at start (1/5/15 min)": " / ".join(f"{v:.2f}" for v in load),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def upload_tiny_dataset(ctx: BenchContext, client: Client, name: str = "bench-64px") -> tuple[str, Path]:
    """Writes one 64×64 noise PNG to a scratch folder and uploads it as a one-image dataset.

    Returns:
        The dataset name and the folder holding the image (for in-process baselines).
    """
    folder = ctx.tmp / "tiny-image"
    if not folder.is_dir():
        folder.mkdir()
        (folder / "tiny64.png").write_bytes(noise_png(64, 64, seed=64))
    await client.upload_dataset(name, folder)
    return name, folder
