"""The ``codecbench`` command line (typer + rich), built on :class:`codecbench.client.Client`.

The orchestrator's address comes from ``--server``, else ``$CODECBENCH_SERVER``, else
127.0.0.1:50051. Exit codes: 0 success; 1 the experiment failed or was cancelled (``run``,
``watch``); 2 bad input, a refused request or an unreachable orchestrator; 130 interrupted.

Every read command takes ``--json``: messages as the protobuf JSON mapping with the proto field
names (``experiment_id``), int64 as numbers, infinity as ``"Infinity"`` (see
:mod:`codecbench.analysis`); ``watch --json`` writes one event per line (JSON Lines).

The pieces ``codecbench run`` is made of (:func:`follow`, :func:`results_table`, ...) are public so
``make demo`` (:mod:`codecbench.demo`) shows experiments through the same code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import math
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from codecbench import analysis, devices, errors, states, values
from codecbench.client import DEFAULT_SERVER, Client
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2, types_pb2

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input or a refused request: printed as ``error: <message>``, exit 2."""


@dataclass
class Settings:
    """Per-invocation state: where the orchestrator is and where output goes."""

    server: str
    out: Console
    err: Console


app = typer.Typer(
    name="codecbench", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Evaluate image codec agents on codecbench workers: submit, watch, compare, export.",
)
datasets_app = typer.Typer(help="List datasets, or upload a folder of PNG/JPEG images as one.")
app.add_typer(datasets_app, name="datasets")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


# Width of output that goes to a file or a pipe (CI logs, `make demo > log`): rich would wrap at
# 80 columns, which folds every table; COLUMNS still overrides it.
PIPE_WIDTH = 160


def make_console(stderr: bool = False) -> Console:
    """A rich console; one writing to a file or pipe is :data:`PIPE_WIDTH` wide unless COLUMNS is set."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


@app.callback()
def _main(
    ctx: typer.Context,
    server: Annotated[str, typer.Option(
        "--server", envvar="CODECBENCH_SERVER", help="Orchestrator host:port (env CODECBENCH_SERVER).",
    )] = DEFAULT_SERVER,
) -> None:
    ctx.obj = Settings(server=server, out=make_console(), err=make_console(stderr=True))


# -- plumbing ----------------------------------------------------------------------------------


def _rpc_problem(exc: grpc.aio.AioRpcError, server: str) -> str:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach the orchestrator at {server} ({exc.details()}); start one with `codecbench up`, "
                "or point --server / CODECBENCH_SERVER at it")
    return f"{exc.code().name}: {exc.details()}"


def _call(ctx: typer.Context, work: Callable[[Client, Settings], Awaitable[int]]) -> None:
    """Runs ``work`` with a client on a fresh event loop and exits with its code."""
    settings: Settings = ctx.obj

    async def session() -> int:
        async with Client(settings.server) as client:
            return await work(client, settings)

    try:
        code = asyncio.run(session())
    except grpc.aio.AioRpcError as exc:
        settings.err.print(Text(f"error: {_rpc_problem(exc, settings.server)}", style="red"))
        code = EXIT_USAGE
    except UsageError as exc:
        settings.err.print(Text(f"error: {exc}", style="red"))
        code = EXIT_USAGE
    except KeyboardInterrupt:
        settings.err.print("interrupted (an experiment that was submitted keeps running on the orchestrator)")
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


def message_json(message: Message) -> dict[str, Any]:
    """A message as the protobuf JSON mapping, with proto field names and int64 as numbers."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True, unquote_int64_if_possible=True)


def _print_json(data: Any, indent: int | None = 2) -> None:
    typer.echo(json.dumps(analysis.json_safe(data), indent=indent, allow_nan=False))


# -- parsing -----------------------------------------------------------------------------------


def parse_value(text: str) -> int | float | str:
    """A parameter value: int if it parses as one, else float, else the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parameter_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    """``["quality=10,30", "mode=a,b"]`` -> the cartesian product of the values, keys in given order.

    No specs give one point without parameters.

    Raises:
        UsageError: a spec without ``=``, an empty key or value list, or a key given twice.
    """
    keys: list[str] = []
    choices: list[list[Any]] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UsageError(f"--param {spec!r}: expected NAME=VALUE[,VALUE...], e.g. quality=10,30,50")
        if key in keys:
            raise UsageError(f"--param {key}: given twice; list all its values in one --param {key}=a,b")
        keys.append(key)
        choices.append([parse_value(v.strip()) for v in raw.split(",")])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``["team=codecs"]`` -> ``{"team": "codecs"}``.

    Raises:
        UsageError: an item without ``=`` or with an empty key.
    """
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``"30m"``, ``"1h"``, ``"2d"``, ``"1w"`` ago, or an ISO date/time (local time unless it has an
    offset), as a POSIX timestamp in seconds.

    Raises:
        UsageError: neither a duration nor an ISO date.
    """
    if match := _DURATION.match(text):
        return (time.time() if now is None else now) - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a duration (30m, 1h, 2d, 1w) or an ISO date "
                         "(2024-05-01 or 2024-05-01T12:00)") from None


def parse_states(items: Iterable[str]) -> list[int]:
    """``["failed", "RUNNING"]`` (also comma-separated) -> ExperimentState values.

    Raises:
        UsageError: an unknown state name.
    """
    names = [v.name.removeprefix("EXPERIMENT_STATE_") for v in experiment_pb2.ExperimentState.DESCRIPTOR.values
             if v.number]
    states = []
    for item in items:
        for part in filter(None, (p.strip().upper().removeprefix("EXPERIMENT_STATE_") for p in item.split(","))):
            if part not in names:
                raise UsageError(f"--state {part.lower()}: expected one of {', '.join(n.lower() for n in names)}")
            states.append(experiment_pb2.ExperimentState.Value(f"EXPERIMENT_STATE_{part}"))
    return states


# -- formatting --------------------------------------------------------------------------------

_STATE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "RUNNING": "cyan", "QUEUED": "blue"}


def _state(state: int) -> Text:
    name = states.state_name(state)
    return Text(name, style=_STATE_STYLE.get(name, ""))


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _age(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "never"
    seconds = max(time.time() - stamp.ToMicroseconds() / 1e6, 0.0)
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.1f} h ago"


def _duration(exp: orchestrator_pb2.Experiment) -> str:
    if not exp.HasField("start_time") or not exp.HasField("end_time"):
        return ""
    return f"{(exp.end_time.ToMicroseconds() - exp.start_time.ToMicroseconds()) / 1e6:.1f} s"


def error_text(error: errors_pb2.Error) -> Text:
    """An error for people: the one-line summary, then its details and the traceback frames."""
    text = Text(errors.describe(error), style="bold red")
    details = []
    if error.HasField("point_index"):
        details.append(f"parameter point index {error.point_index}")
    if error.expected or error.actual:
        details.append(f"expected: {error.expected or '-'}; got: {error.actual or '-'}")
    if error.limit_s or error.elapsed_s:
        details.append(f"limit {error.limit_s:g} s, elapsed {error.elapsed_s:.2f} s")
    if error.HasField("exit_code"):
        details.append(f"exit code {error.exit_code}")
    if error.HasField("signal"):
        details.append(f"signal {error.signal}")
    if error.retryable:
        details.append("retryable: running it again may help")
    for line in details:
        text.append(f"\n  {line}", style="red")
    if error.frames:
        text.append("\n  traceback (most recent call last):", style="dim")
        for frame in error.frames:
            text.append(f"\n    {frame.file}:{frame.line} in {frame.function}", style="dim")
            if frame.code:
                text.append(f"\n      {frame.code}", style="dim")
    return text


def _log_stream(stream: int) -> str:
    return experiment_pb2.LogStream.Name(stream).removeprefix("LOG_STREAM_").lower()


def event_text(event: experiment_pb2.ExperimentEvent) -> Text:
    """One event as a line (an error as a block): what ``codecbench watch`` prints."""
    kind = event.WhichOneof("event")
    head = Text(f"#{event.sequence:<4} ", style="dim")
    if kind == "state_change":
        change = event.state_change
        head.append_text(_state(change.state))
        head.append(f" attempt {change.attempt}: {change.reason}")
    elif kind == "progress":
        p = event.progress
        head.append(f"{errors.phase_name(p.phase)} point {p.point_index + 1}/{p.point_count}, "
                    f"image {p.image_index + 1}/{p.image_count} {p.image_name}", style="dim")
    elif kind == "image_result":
        item, m = event.image_result, event.image_result.metrics
        head.append(f"point {item.point_index + 1} {item.image_name}: {m.bpp:.4f} bpp, {_num(m.psnr_db, 2)} dB, "
                    f"MS-SSIM {_num(m.ms_ssim if m.HasField('ms_ssim') else None, 4)}, "
                    f"encode {m.encode_ms:.1f} ms, decode {m.decode_ms:.1f} ms")
    elif kind == "log":
        log = event.log
        head.append(f"{errors.phase_name(log.phase)} {_log_stream(log.stream)}| ", style="magenta")
        head.append(log.text)
    elif kind == "error":
        head.append_text(error_text(event.error))
    elif kind == "result":
        result = event.result
        head.append(f"result: {len(result.points)} points in {result.wall_ms / 1000:.1f} s on {result.worker_id}",
                    style="green")
    return head


def results_table(experiments: Sequence[orchestrator_pb2.Experiment], title: str = "results") -> Table:
    """Per parameter point: mean bpp, PSNR, MS-SSIM, encode/decode time over the images.

    An agent column is added when the table holds more than one experiment.
    """
    several = len(experiments) > 1
    table = Table(title=title, title_justify="left")
    if several:
        table.add_column("agent", no_wrap=True)
    for name in ("params", "images"):
        table.add_column(name)
    for name in ("bpp", "PSNR dB", "MS-SSIM", "encode ms", "decode ms"):
        table.add_column(name, justify="right")
    table.add_column("lossless")
    for exp in experiments:
        row = [exp.agent.name] if several else []
        if exp.state != states.SUCCEEDED:
            table.add_row(*row, _state(exp.state), *[""] * 7)
            continue
        for point in exp.result.points:
            table.add_row(
                *row, values.format_params(point.params) or "(none)", str(point.image_count), f"{point.bpp:.4f}",
                _num(point.psnr_db, 2), _num(point.ms_ssim if point.HasField("ms_ssim") else None, 4),
                f"{point.encode_ms:.1f}", f"{point.decode_ms:.1f}", "yes" if point.lossless else "no",
            )
    return table


def images_table(exp: orchestrator_pb2.Experiment) -> Table:
    """Per image and parameter point: size, bytes, bpp, PSNR, MS-SSIM, times, agent-reported numbers."""
    table = Table(title="per image", title_justify="left")
    for name in ("params", "image", "size"):
        table.add_column(name)
    for name in ("bytes", "bpp", "PSNR dB", "MS-SSIM", "encode ms", "decode ms"):
        table.add_column(name, justify="right")
    table.add_column("notes")
    for point in exp.result.points:
        for item in point.images:
            m = item.metrics
            notes = [m.conversion, m.ms_ssim_unavailable_reason if not m.HasField("ms_ssim") else ""]
            if m.agent_reported:
                reported = ", ".join(f"{k}={v:g}" for k, v in sorted(m.agent_reported.items()))
                notes.append(f"agent-reported (not measured): {reported}")
            table.add_row(
                values.format_params(point.params) or "(none)", item.image_name, f"{m.width}x{m.height}", str(m.bytes),
                f"{m.bpp:.4f}", _num(m.psnr_db, 2), _num(m.ms_ssim if m.HasField("ms_ssim") else None, 4),
                f"{m.encode_ms:.1f}", f"{m.decode_ms:.1f}", "; ".join(n for n in notes if n),
            )
    return table


def bd_rate_view(rows: Sequence[analysis.BdRateRow], baseline: analysis.Curve) -> Group:
    """The BD-rate table (each experiment against the baseline, PSNR and MS-SSIM), with why a value
    is not computable, or a caveat, as numbered notes under it."""
    table = Table(
        title=f"BD-rate against {baseline.title}", title_justify="left", caption_justify="left",
        caption=f"{analysis.BD_METHOD.upper()} interpolation; negative = fewer bits than the baseline at equal quality",
    )
    for name in ("agent", "experiment", "points", "BD-rate PSNR", "BD-rate MS-SSIM"):
        table.add_column(name, justify="right" if name.startswith("BD") else "left", no_wrap=True)
    notes: list[str] = []

    def cell(result: analysis.BdRate) -> Text:
        remark = result.reason or result.note
        if remark:
            notes.append(remark)
        value = "n/a" if result.percent is None else f"{result.percent:+.2f} %"
        return Text(f"{value} [{len(notes)}]" if remark else value, style="yellow" if result.percent is None else "")

    for row in rows:
        by_metric = {r.metric: r for r in row.results}
        table.add_row(row.curve.name, row.curve.experiment_id, str(len(row.curve.points)),
                      cell(by_metric[analysis.PSNR]), cell(by_metric[analysis.MS_SSIM]))
    return Group(table, *(Text(f"  [{i}] {note}", style="dim") for i, note in enumerate(notes, 1)))


def workers_table(workers: Sequence[orchestrator_pb2.WorkerStatus]) -> Group:
    """Workers: identity, state, build, slots, devices, isolation, heartbeat; why a worker is STALE,
    LOST or DRAINING as numbered notes under the table."""
    table = Table(title="workers", title_justify="left")
    for name in ("worker", "address", "state", "build", "slots", "devices", "isolation", "heartbeat", "pid", "host"):
        table.add_column(name, no_wrap=name in ("worker", "address", "state", "build"))
    reasons = []
    for w in workers:
        state = Text(orchestrator_pb2.WorkerState.Name(w.state).removeprefix("WORKER_STATE_"),
                     style="green" if w.state == orchestrator_pb2.WORKER_STATE_READY else "yellow")
        if w.state_reason:
            reasons.append(f"{w.info.worker_id} {state.plain}: {w.state_reason}")
            state.append(f" [{len(reasons)}]")
        offered = ", ".join(f"{d.name}{' (' + d.description + ')' if d.description else ''}" for d in w.info.devices)
        table.add_row(
            w.info.worker_id, w.info.address, state, w.info.build_id, f"{w.slots_in_use}/{w.info.slots}",
            offered or "-", types_pb2.Isolation.Name(w.info.isolation).removeprefix("ISOLATION_"),
            _age(w.last_heartbeat_time), str(w.info.pid), w.info.host,
        )
    return Group(table, *(Text(f"  [{i}] {reason}") for i, reason in enumerate(reasons, 1)))


# -- following an experiment -------------------------------------------------------------------


class _PointBars:
    """One rich progress bar per parameter point; restarted when the experiment is requeued.

    A bar's time is taken from the events' timestamps (first event of the point to the latest),
    not from the local clock, so a replay of stored events shows the real durations too.
    """

    def __init__(self, progress: Progress, exp: orchestrator_pb2.Experiment) -> None:
        self.progress = progress
        self.labels = [values.format_params(p) or "(no parameters)" for p in exp.points] or ["(no parameters)"]
        self.attempt = exp.attempt
        self.tasks: list[TaskID] = []
        self._add()

    def _add(self) -> None:
        for task in self.tasks:
            self.progress.remove_task(task)
        self.tasks = [self.progress.add_task(label, total=None, status="queued", took="")
                      for label in self.labels]
        self.done = [0] * len(self.tasks)
        self.started_us: list[int | None] = [None] * len(self.tasks)
        self.total: int | None = None

    def restart(self, attempt: int) -> None:
        if attempt != self.attempt:
            self.attempt = attempt
            self._add()

    def _clock(self, point: int, stamp: timestamp_pb2.Timestamp) -> str:
        now = stamp.ToMicroseconds()
        first = self.started_us[point]
        if first is None:
            first = self.started_us[point] = now
        return f"{(now - first) / 1e6:.1f} s"

    def on_progress(self, p: experiment_pb2.Progress, stamp: timestamp_pb2.Timestamp) -> None:
        if self.total != p.image_count:
            self.total = p.image_count
            for task in self.tasks:
                self.progress.update(task, total=p.image_count)
        if p.phase in (types_pb2.PHASE_ENCODE, types_pb2.PHASE_DECODE) and p.point_index < len(self.tasks):
            self.progress.update(self.tasks[p.point_index], took=self._clock(p.point_index, stamp),
                                 status=f"{errors.phase_name(p.phase)} {p.image_name}")

    def on_image(self, item: experiment_pb2.ImageResult, stamp: timestamp_pb2.Timestamp) -> None:
        if item.point_index >= len(self.tasks):
            return
        i = item.point_index
        self.done[i] += 1
        finished = self.total is not None and self.done[i] >= self.total
        self.progress.update(self.tasks[i], completed=self.done[i], took=self._clock(i, stamp),
                             status="done" if finished else "")

    def on_error(self) -> None:
        for i, task in enumerate(self.tasks):
            if self.total is None or self.done[i] < self.total:
                self.progress.update(task, status="stopped")


async def follow(client: Client, exp: orchestrator_pb2.Experiment, console: Console) -> orchestrator_pb2.Experiment:
    """Watches an experiment to its end with a progress bar per parameter point, printing state
    changes, agent log lines and errors the moment they arrive; returns the finished experiment."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
        TextColumn("{task.fields[took]}"), TextColumn("{task.fields[status]}", style="dim"), console=console,
    )
    with progress:
        bars = _PointBars(progress, exp)
        async for event in client.watch(exp.experiment_id):
            kind = event.WhichOneof("event")
            if kind == "progress":
                bars.on_progress(event.progress, event.time)
            elif kind == "image_result":
                bars.on_image(event.image_result, event.time)
            elif kind != "result":
                if kind == "state_change":
                    bars.restart(event.state_change.attempt)
                elif kind == "error":
                    bars.on_error()
                progress.console.print(event_text(event), soft_wrap=True)
    final = await client.get(exp.experiment_id)
    summary = Text(f"{final.experiment_id} ({final.agent.name}) ")
    summary.append_text(_state(final.state))
    if final.state == states.SUCCEEDED:
        summary.append(f" in {_duration(final)} (attempt {final.attempt}, worker {final.worker_id})")
    console.print(summary)
    return final


# -- commands ----------------------------------------------------------------------------------


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Store, blobs and logs of both services.")] = Path(".codecbench"),
    port: Annotated[int, typer.Option(help="Orchestrator port on 127.0.0.1 (0 picks a free one).")] = 50051,
    worker_slots: Annotated[int, typer.Option(min=1, help="Experiments the worker runs at once.")] = 1,
    no_bwrap: Annotated[bool, typer.Option("--no-bwrap", help="Process-only isolation even if bwrap exists.")] = False,
    log_level: Annotated[str, typer.Option(help="Level of the services' logs (files under DATA_DIR/logs).")] = "info",
) -> None:
    """Start an orchestrator and one local worker (SQLite, 127.0.0.1) until Ctrl-C or SIGTERM."""
    from codecbench.local import LocalStartError, start_local

    console = make_console()

    async def serve() -> int:
        services = await start_local(data_dir, port, worker_slots, not no_bwrap, log_level)
        console.print(f"orchestrator listening on {services.orchestrator.address} (pid {services.orchestrator.pid})")
        console.print(f"worker {services.worker_id} listening on {services.worker.address} "
                      f"(pid {services.worker.pid}, {worker_slots} slot(s))")
        console.print(f"logs: {services.orchestrator.log_path}, {services.worker.log_path}")
        console.print(f"use it: export CODECBENCH_SERVER={services.orchestrator.address}; Ctrl-C stops both")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopped = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(services.wait_any_exit())
        await asyncio.wait([stopped, exited], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if exited.done():
            dead = exited.result()
            console.print(Text(f"the {dead.name} exited with code {dead.process.returncode}; see {dead.log_path}",
                               style="red"))
            code = EXIT_FAILED
        else:
            exited.cancel()
        console.print("stopping the worker, then the orchestrator")
        await services.stop()
        console.print("stopped")
        return code

    try:
        code = asyncio.run(serve())
    except LocalStartError as exc:
        make_console(stderr=True).print(Text(f"error: {exc}", style="red"))
        code = EXIT_FAILED
    except KeyboardInterrupt:  # during start-up, before the signal handlers; the services were stopped
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


@app.command()
def run(
    ctx: typer.Context,
    agent_dir: Annotated[Path, typer.Argument(help="Folder of the agent (entry module codec.py or the only .py).")],
    dataset: Annotated[str, typer.Option(help="Dataset name (see `codecbench datasets`).")] = "photos",
    param: Annotated[list[str] | None, typer.Option(
        help="NAME=V1,V2,... (repeatable; the cartesian product makes the points). Values parse as int, "
             "then float, then str.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or any.")] = "cpu",
    detach: Annotated[bool, typer.Option("--detach", help="Submit, print the id and return.")] = False,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE label (repeatable).")] = None,
    request_id: Annotated[str, typer.Option(help="Idempotency key: a repeat returns the first experiment.")] = "",
    entry_module: Annotated[str, typer.Option(help="Dotted entry module if it cannot be guessed.")] = "",
    max_attempts: Annotated[int, typer.Option(help="Dispatch attempts when workers are lost (0: default 3).")] = 0,
    priority: Annotated[int, typer.Option(help="Higher runs first among queued experiments.")] = 0,
    timeout_load_s: Annotated[float, typer.Option(help="Load limit in s (0: worker default).")] = 0.0,
    timeout_encode_s: Annotated[float, typer.Option(help="Per-image encode limit in s (0: worker default).")] = 0.0,
    timeout_decode_s: Annotated[float, typer.Option(help="Per-image decode limit in s (0: worker default).")] = 0.0,
    timeout_experiment_s: Annotated[float, typer.Option(help="Whole-run limit in s (0: worker default).")] = 0.0,
) -> None:
    """Submit an agent on a dataset; follow it live unless --detach; exit 1 if it fails."""
    timeouts = types_pb2.Timeouts(load_s=timeout_load_s, encode_s=timeout_encode_s, decode_s=timeout_decode_s,
                                  experiment_s=timeout_experiment_s)

    async def work(client: Client, s: Settings) -> int:
        points, labels = parameter_grid(param or []), parse_labels(label or [])
        try:
            exp = await client.submit(agent_dir, dataset=dataset, points=points, device=device, timeouts=timeouts,
                                      labels=labels, request_id=request_id, max_attempts=max_attempts,
                                      priority=priority, entry_module=entry_module)
        except (FileNotFoundError, ValueError, values.ValueConversionError) as exc:
            # no such folder, no entry module, a value with no protocol form (an int beyond 64 bits)
            raise UsageError(str(exc)) from exc
        s.out.print(f"submitted {exp.experiment_id} ({exp.agent.name} on {exp.dataset}, {len(exp.points)} point(s), "
                    f"device {devices.short_name(exp.device)})")
        if detach:
            s.out.print(f"follow it with: codecbench watch {exp.experiment_id}")
            return 0
        final = await follow(client, exp, s.out)
        if final.state == states.SUCCEEDED:
            s.out.print(results_table([final], title=f"results of {final.experiment_id} ({final.agent.name})"))
            return 0
        return EXIT_FAILED

    _call(ctx, work)


@app.command("ls")
def list_experiments(
    ctx: typer.Context,
    state: Annotated[list[str] | None, typer.Option(help="Only these states (repeatable or comma-separated).")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE that must match (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List experiments, newest first."""

    async def work(client: Client, s: Settings) -> int:
        experiments = await client.list(parse_states(state or []), parse_labels(label or []), limit)
        if as_json:
            _print_json([message_json(e) for e in experiments])
            return 0
        table = Table(title=f"experiments on {s.server}", title_justify="left")
        for name in ("experiment", "state", "agent", "dataset", "points", "attempt", "worker", "created", "summary"):
            table.add_column(name)
        for e in experiments:
            if e.state == states.SUCCEEDED:
                low, high = min(p.bpp for p in e.result.points), max(p.bpp for p in e.result.points)
                rates = f"{low:.3f}" if low == high else f"{low:.3f}-{high:.3f}"
                summary = Text(f"{rates} bpp in {_duration(e)}")
            elif e.HasField("error"):
                summary = Text(errors.describe(e.error), style="red")
            else:
                summary = Text("")
            table.add_row(e.experiment_id, _state(e.state), e.agent.name, e.dataset, str(len(e.points)),
                          f"{e.attempt}/{e.max_attempts}", e.worker_id or "-", _when(e.create_time), summary)
        s.out.print(table)
        return 0

    _call(ctx, work)


@app.command()
def show(ctx: typer.Context, experiment_id: str, as_json: JsonOption = False) -> None:
    """Show one experiment: state, attempts, worker, per-point and per-image metrics, error."""

    async def work(client: Client, s: Settings) -> int:
        e = await client.get(experiment_id)
        if as_json:
            _print_json(message_json(e))
            return 0
        head = Text(f"{e.experiment_id} ", style="bold")
        head.append_text(_state(e.state))
        head.append(f"  attempt {e.attempt} of {e.max_attempts}")
        files = len(e.agent.files)
        size = sum(f.size_bytes for f in e.agent.files)
        facts = [
            ("agent", f"{e.agent.name} (entry {e.agent.entry_module}, {files} file(s), {size} bytes)"),
            ("dataset", e.dataset), ("device", devices.short_name(e.device)), ("worker", e.worker_id or "-"),
            ("created", _when(e.create_time)), ("started", _when(e.start_time)),
            ("ended", f"{_when(e.end_time)} {('(' + _duration(e) + ')') if _duration(e) else ''}"),
            ("points", "; ".join(values.format_params(p) or "(none)" for p in e.points)),
        ]
        if e.labels:
            facts.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(e.labels.items()))))
        if e.request_id:
            facts.append(("request id", e.request_id))
        parts: list[Any] = [head, *(Text(f"  {k:<10} {v}") for k, v in facts)]
        if e.state == states.SUCCEEDED:
            parts += [results_table([e], title="per parameter point (means over the images)"), images_table(e)]
        if e.HasField("error"):
            parts.append(error_text(e.error))
        s.out.print(Group(*parts))
        return 0

    _call(ctx, work)


@app.command()
def watch(
    ctx: typer.Context,
    experiment_id: str,
    after: Annotated[int, typer.Option(help="Only events with a sequence number above this.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line (JSON Lines).")] = False,
) -> None:
    """Print an experiment's events (stored ones first) until it ends; exit 1 if it failed."""

    async def work(client: Client, s: Settings) -> int:
        code = 0
        async for event in client.watch(experiment_id, after_sequence=after):
            if as_json:
                _print_json(message_json(event), indent=None)
            else:
                s.out.print(event_text(event), soft_wrap=True)
            code = EXIT_FAILED if event.WhichOneof("event") == "error" else code
        return code

    _call(ctx, work)


@app.command()
def cancel(ctx: typer.Context, experiment_id: str) -> None:
    """Cancel a queued or running experiment (a finished one is left as it is)."""

    async def work(client: Client, s: Settings) -> int:
        e = await client.cancel(experiment_id)
        line = Text(f"{e.experiment_id} is ")
        line.append_text(_state(e.state))
        s.out.print(line)
        return 0

    _call(ctx, work)


@app.command()
def workers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List workers: state (with the reason when STALE or LOST), build, slots, devices, heartbeat."""

    async def work(client: Client, s: Settings) -> int:
        found = await client.workers()
        if as_json:
            _print_json([message_json(w) for w in found])
        else:
            s.out.print(workers_table(found))
        return 0

    _call(ctx, work)


@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List datasets (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return

    async def work(client: Client, s: Settings) -> int:
        found = await client.datasets()
        if as_json:
            _print_json([message_json(d) for d in found])
            return 0
        table = Table(title="datasets", title_justify="left")
        for name in ("name", "images", "bytes", "builtin", "digest", "created"):
            table.add_column(name)
        for d in found:
            table.add_row(d.name, str(len(d.images)), str(sum(i.size_bytes for i in d.images)),
                          "yes" if d.builtin else "no", d.digest[:16], _when(d.create_time))
        s.out.print(table)
        return 0

    _call(ctx, work)


@datasets_app.command("add")
def datasets_add(
    ctx: typer.Context,
    name: str,
    folder: Annotated[Path, typer.Argument(help="Folder whose PNG/JPEG files become the dataset.")],
) -> None:
    """Upload every PNG/JPEG of FOLDER as dataset NAME."""

    async def work(client: Client, s: Settings) -> int:
        try:
            d = await client.upload_dataset(name, folder)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from exc
        s.out.print(f"dataset {d.name}: {len(d.images)} image(s), digest {d.digest[:16]}")
        return 0

    _call(ctx, work)


async def _finished_curves(client: Client, experiment_ids: Sequence[str]) -> list[analysis.Curve]:
    curves = []
    for experiment_id in experiment_ids:
        try:
            curves.append(analysis.Curve.from_experiment(await client.get(experiment_id)))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return curves


@app.command()
def compare(
    ctx: typer.Context,
    experiment_ids: Annotated[list[str], typer.Argument(help="Experiments to compare with the baseline.")],
    baseline: Annotated[str, typer.Option(help="The anchor experiment.")],
    plot: Annotated[Path | None, typer.Option(help="Write an RD plot (bpp vs PSNR) as PNG here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """BD-rate (PSNR and MS-SSIM, PCHIP) of each experiment against the baseline, and an RD plot."""

    async def work(client: Client, s: Settings) -> int:
        anchor, *others = await _finished_curves(client, [baseline, *experiment_ids])
        rows = analysis.bd_rate_table(others, anchor)
        plotted = [anchor, *(c for c in others if c.experiment_id != anchor.experiment_id)]
        notes = analysis.rd_plot(plotted, plot, title="rate-distortion (codecbench)") if plot else []
        if as_json:
            _print_json({"baseline": {"experiment_id": anchor.experiment_id, "name": anchor.name},
                         "method": analysis.BD_METHOD, "rows": [r.to_json() for r in rows],
                         "plot": str(plot) if plot else None, "plot_notes": notes})
            return 0
        s.out.print(bd_rate_view(rows, anchor))
        if plot:
            s.out.print(f"RD plot written to {plot}")
            for note in notes:
                s.out.print(f"  {note}")
        return 0

    _call(ctx, work)


@app.command("errors")
def errors_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only experiments created since: 30m, 1h, 2d, 1w or ISO date.")]
    = None,
    limit: Annotated[int, typer.Option(min=1, help="Look at this many newest failed experiments.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Group failed experiments by error kind and source location, with counts and an example each."""

    async def work(client: Client, s: Settings) -> int:
        created_after = parse_since(since) if since else None
        failed = await client.list([states.FAILED], limit=limit, created_after=created_after)
        groups = analysis.group_errors(failed)
        if as_json:
            since_iso = dt.datetime.fromtimestamp(created_after, dt.UTC).isoformat() if created_after else None
            _print_json({"since": since_iso, "failed_experiments": len(failed),
                         "groups": [g.to_json() for g in groups]})
            return 0
        scope = f" since {since}" if since else ""
        table = Table(title=f"{len(failed)} failed experiment(s){scope} in {len(groups)} group(s)",
                      title_justify="left")
        for name in ("count", "kind", "location", "exception", "agents", "example", "example experiment"):
            table.add_column(name, justify="right" if name == "count" else "left")
        for g in groups:
            table.add_row(str(g.count), g.kind, g.location or "-", g.exception_type or "-", ", ".join(g.agents),
                          g.example_message, g.example_experiment_id)
        s.out.print(table)
        return 0

    _call(ctx, work)


@app.command()
def export(
    ctx: typer.Context,
    experiment_ids: Annotated[list[str], typer.Argument(help="Succeeded experiments.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Results as JSON in CompressAI's layout (one object; a list for several experiments)."""

    async def work(client: Client, s: Settings) -> int:
        exported = []
        for experiment_id in experiment_ids:
            try:
                exported.append(analysis.compressai_results(await client.get(experiment_id)))
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
        data = exported[0] if len(exported) == 1 else exported
        if output is None:
            _print_json(data)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
            s.out.print(f"wrote {output}")
        return 0

    _call(ctx, work)

