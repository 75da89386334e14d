"""Terminal views of codecbench messages: rich tables and text for experiments, events, errors,
workers, datasets, BD-rate rows and error groups, and the console they are printed on.

Pure formatting: every function takes messages (or :mod:`codecbench.analysis` results) and
returns a rich renderable; nothing here talks to a server. The commands
(:mod:`codecbench.cli.commands`), live following (:mod:`codecbench.cli.follow`) and ``make demo``
(:mod:`codecbench.demo`) print them.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from codecbench import analysis, devices, errors, states, values
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2, types_pb2

# Width of output that goes to a file or a pipe (CI logs, `make demo > log`): rich would wrap at
# 80 columns, which folds every table; COLUMNS still overrides it.
PIPE_WIDTH = 160


def make_console(stderr: bool = False) -> Console:
    """A rich console; one writing to a file or pipe is :data:`PIPE_WIDTH` wide unless COLUMNS is set."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def message_json(message: Message) -> dict[str, Any]:
    """A message as the protobuf JSON mapping, with proto field names and int64 as numbers.

    Fields holding their default value (a PSNR of exactly 0 dB, 0 bytes, ``false``) are written too:
    the mapping leaves them out by default, and a reader cannot tell "0" from "not reported". Fields
    with presence (``optional``, messages) are still left out when unset, which is what absent means.
    """
    out = json_format.MessageToDict(
        message, preserving_proto_field_name=True, unquote_int64_if_possible=True,
        always_print_fields_with_no_presence=True,
    )
    _drop_unmeasured(message, out)
    return out


# What a point measures from its images: absent, not zero, in a point that coded no image.
_IMAGE_FIGURES = ("total_bytes", "bpp", "mse", "psnr_db", "lossless", "images", "lossless_image_count",
                  "ms_ssim_image_count", "total_pixels", "pooled_bpp", "pooled_mse", "pooled_psnr_db")


def _drop_unmeasured(message: Message, out: dict[str, Any]) -> None:
    """Removes, from ``out`` (``message``'s JSON), the image figures of every agent-reported
    point (a seed agent that takes no image): written as zeros they would read as measured (a
    bpp of 0.0, not lossless). The times stay: the worker measured its one call per side."""
    if isinstance(message, experiment_pb2.PointResult) and message.HasField("agent_report"):
        for name in _IMAGE_FIGURES:
            out.pop(name, None)
    for field, value in message.ListFields():
        if field.message_type is None or field.name not in out:
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            for item, item_out in zip(value, out[field.name], strict=True):
                _drop_unmeasured(item, item_out)
        else:
            _drop_unmeasured(value, out[field.name])


_STATE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "RUNNING": "cyan", "QUEUED": "blue"}


def state_text(state: experiment_pb2.ExperimentState.ValueType) -> Text:
    """An ExperimentState as its short name (``SUCCEEDED``), coloured."""
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


def age(stamp: timestamp_pb2.Timestamp) -> str:
    """How long ago a timestamp was (``3.2 s ago``); ``never`` when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "never"
    seconds = max(time.time() - stamp.ToMicroseconds() / 1e6, 0.0)
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.1f} h ago"


def duration_text(exp: orchestrator_pb2.Experiment) -> str:
    """``"12.3 s"`` from the experiment's start to its end; empty while it has not both."""
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


def _log_stream(stream: experiment_pb2.LogStream.ValueType) -> str:
    return experiment_pb2.LogStream.Name(stream).removeprefix("LOG_STREAM_").lower()


def event_text(event: experiment_pb2.ExperimentEvent) -> Text:
    """One event as a line (an error as a block): what ``codecbench watch`` prints."""
    kind = event.WhichOneof("event")
    head = Text(f"#{event.sequence:<4} ", style="dim")
    if kind == "state_change":
        change = event.state_change
        head.append_text(state_text(change.state))
        head.append(f" attempt {change.attempt}: {change.reason}")
    elif kind == "progress":
        p = event.progress
        head.append(f"{errors.phase_name(p.phase)} point {p.point_index + 1}/{p.point_count}, "
                    f"image {p.image_index + 1}/{p.image_count} {p.image_name}", style="dim")
    elif kind == "image_result":
        image, m = event.image_result, event.image_result.metrics
        head.append(f"point {image.point_index + 1} {image.image_name}: {m.bpp:.4f} bpp, {_num(m.psnr_db, 2)} dB, "
                    f"MS-SSIM {_num(m.ms_ssim if m.HasField('ms_ssim') else None, 4)}, "
                    f"encode {m.encode_ms:.1f} ms, decode {m.decode_ms:.1f} ms")
    elif kind == "log":
        log = event.log
        # A line from no phase (the service's own, e.g. the result cache's note) names none.
        phase = f"{errors.phase_name(log.phase)} " if log.phase != types_pb2.PHASE_UNSPECIFIED else ""
        head.append(f"{phase}{_log_stream(log.stream)}| ", style="magenta")
        head.append(log.text)
    elif kind == "error":
        head.append_text(error_text(event.error))
    elif kind == "result":
        result = event.result
        head.append(f"result: {len(result.points)} points in {result.wall_ms / 1000:.1f} s on {result.worker_id}",
                    style="green")
    return head


RESULTS_CAPTION = (
    "bpp, PSNR, MS-SSIM, ms: means of the per-image values (CompressAI); PSNR over the images that are not exact, "
    "MS-SSIM over those that have one (n/N when not all)\npooled: 8 * total bytes / total pixels and the PSNR of "
    "the pooled MSE (CLIC); times after one untimed warm-up call per point"
)
# Only agent-reported points (a seed agent that takes no image): no image figure, no warm-up.
REPORTED_ONLY_CAPTION = "agent-reported only: no image was coded; ms: the one call per point and side, without warm-up"


def ms_ssim_cell(point: experiment_pb2.PointResult) -> str:
    """The point's mean MS-SSIM, with how many images it averages when not all have one."""
    value = _num(point.ms_ssim if point.HasField("ms_ssim") else None, 4)
    # Results stored before the count existed have 0 here: their MS-SSIM covered every image.
    if 0 < point.ms_ssim_image_count < point.image_count:
        value += f" ({point.ms_ssim_image_count}/{point.image_count})"
    return value


def lossless_cell(point: experiment_pb2.PointResult) -> str:
    """``yes`` only when every image is exact; otherwise ``no``, with how many images were exact."""
    if point.lossless:
        return "yes"
    return f"no ({point.lossless_image_count}/{point.image_count} exact)" if point.lossless_image_count else "no"


def results_table(experiments: Sequence[orchestrator_pb2.Experiment], title: str = "results") -> Table:
    """Per parameter point: per-image means of bpp, PSNR, MS-SSIM, the pooled bpp and PSNR, mean and
    median encode/decode times, and whether it is lossless (the caption defines each figure).

    An agent column is added when the table holds more than one experiment.
    """
    several = len(experiments) > 1
    points = [p for e in experiments if e.state == states.SUCCEEDED for p in e.result.points]
    reported_only = bool(points) and all(p.HasField("agent_report") for p in points)
    caption = REPORTED_ONLY_CAPTION if reported_only else RESULTS_CAPTION
    if not reported_only and any(p.HasField("agent_report") for p in points):
        caption += "\n" + REPORTED_ONLY_CAPTION
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    if several:
        table.add_column("agent", no_wrap=True)
    for name in ("params", "images"):
        table.add_column(name)
    columns = ("bpp", "PSNR dB", "MS-SSIM", "pooled bpp", "pooled PSNR", "encode ms", "median", "decode ms", "median")
    for name in columns:
        table.add_column(name, justify="right")
    table.add_column("lossless")
    for exp in experiments:
        row = [exp.agent.name] if several else []
        if exp.state != states.SUCCEEDED:
            table.add_row(*row, state_text(exp.state), *[""] * (len(columns) + 2))
            continue
        for point in exp.result.points:
            if point.HasField("agent_report"):  # no image was coded: nothing was measured
                table.add_row(*row, values.format_params(point.params) or "(none)", "none",
                              Text("agent-reported only", style="yellow"), "", "", "", "",
                              f"{point.encode_ms:.1f}", "", f"{point.decode_ms:.1f}", "", "")
                continue
            table.add_row(
                *row, values.format_params(point.params) or "(none)", str(point.image_count), f"{point.bpp:.4f}",
                _num(point.psnr_db, 2), ms_ssim_cell(point), f"{point.pooled_bpp:.4f}", _num(point.pooled_psnr_db, 2),
                f"{point.encode_ms:.1f}", f"{point.encode_ms_median:.1f}", f"{point.decode_ms:.1f}",
                f"{point.decode_ms_median:.1f}", lossless_cell(point),
            )
    return table


def report_text(report: experiment_pb2.AgentReport) -> str:
    """An agent report's values as ``compression_ratio=2.7, lossless=True, status='ok'``, then the
    names of the entries that are not reported (not scalar, or not convertible)."""
    shown = ", ".join(f"{k}={values.from_value(report.values[k])!r}" for k in sorted(report.values))
    names = ", ".join(report.ignored_keys)
    ignored = f"; not shown (not scalar, or not convertible): {names}" if report.ignored_keys else ""
    return f"{shown or '(no scalar entries)'}{ignored}"


def agent_reports_table(experiments: Sequence[orchestrator_pb2.Experiment]) -> Table | None:
    """What seed agents reported about themselves, labelled as such: per point for an agent that
    takes no image (with the size of its encoding dict), per image for one that does (with the
    image's measured bytes beside it); None when nothing was reported."""
    rows: list[tuple[orchestrator_pb2.Experiment, experiment_pb2.PointResult, str, int,
                     experiment_pb2.AgentReport]] = []
    for exp in experiments:
        if exp.state != states.SUCCEEDED:
            continue
        for point in exp.result.points:
            if point.HasField("agent_report"):
                rows.append((exp, point, "", point.agent_report.encoding_data_bytes, point.agent_report))
            rows += [(exp, point, image.image_name, image.metrics.bytes, image.metrics.agent_report)
                     for image in point.images if image.metrics.HasField("agent_report")]
    if not rows:
        return None
    per_image = any(name for _, _, name, _, _ in rows)
    no_image = any(not name for _, _, name, _, _ in rows)
    title = "agent-reported (the agent's own figures, NOT measured by codecbench" + (
        "; no image was coded)" if not per_image else ")")
    caption = "encoding dict bytes: the size of the encoding dict as it crossed the process boundary (a serialized " \
              "codecbench.v1.Value)" + (", the only rate codecbench can state where no image was coded" if no_image
                                        else "")
    table = Table(title=title, title_justify="left", caption_justify="left", caption=caption)
    several = len({exp.experiment_id for exp, *_ in rows}) > 1
    if several:
        table.add_column("agent", no_wrap=True)
    table.add_column("params")
    if per_image:
        table.add_column("image")
    table.add_column("encoding dict bytes", justify="right")
    table.add_column("agent-reported values")
    for exp, point, image_name, size, report in rows:
        table.add_row(*([exp.agent.name] if several else []), values.format_params(point.params) or "(none)",
                      *([image_name or "(none: no image)"] if per_image else []), str(size), report_text(report))
    return table


def kept_text(exp: orchestrator_pb2.Experiment) -> str:
    """How many decoded images (``keep_reconstructions``) each point of an experiment kept, and
    where to see them; empty when it keeps none.

    An image can be missing: one over the size of an event or past the experiment's byte budget
    is not kept (a system log line says so).
    """
    if not exp.keep_reconstructions:
        return ""
    measured = [p for p in exp.result.points if not p.HasField("agent_report")]
    counts = [sum(i.HasField("reconstruction") for i in p.images) for p in measured]
    wanted = f"the first {exp.keep_reconstructions} image(s) of each point"
    if not counts:
        return f"reconstructions: {wanted} kept (none yet); see them beside the originals in `codecbench web`"
    return (f"reconstructions: {', '.join(map(str, counts))} kept per point of {wanted} "
            f"({sum(counts)} in all); see them beside the originals in `codecbench web`")


def results_view(experiments: Sequence[orchestrator_pb2.Experiment], title: str = "results") -> Group:
    """:func:`results_table`, followed by :func:`agent_reports_table` when a point has an agent report
    and, per experiment that keeps decoded images, :func:`kept_text`."""
    reports = agent_reports_table(experiments)
    kept = [Text(text) for e in experiments if (text := kept_text(e))]
    return Group(results_table(experiments, title), *([reports] if reports is not None else []), *kept)


def images_table(exp: orchestrator_pb2.Experiment) -> Table:
    """Per image and parameter point: size (width × height in pixels), bytes, bpp, PSNR, MS-SSIM,
    times, agent-reported numbers."""
    table = Table(title="per image", title_justify="left")
    for name in ("params", "image", "W×H px"):
        table.add_column(name)
    for name in ("bytes", "bpp", "PSNR dB", "MS-SSIM", "encode ms", "decode ms"):
        table.add_column(name, justify="right")
    table.add_column("notes")
    for point in exp.result.points:
        for image in point.images:
            m = image.metrics
            notes = [m.conversion, m.ms_ssim_unavailable_reason if not m.HasField("ms_ssim") else ""]
            if m.clamped_values:
                notes.append(f"{m.clamped_values} float values outside [0, 1] clamped")
            if m.HasField("agent_report"):
                notes.append(f"agent-reported (not measured): {report_text(m.agent_report)}")
            table.add_row(
                values.format_params(point.params) or "(none)", image.image_name, f"{m.width}×{m.height}", str(m.bytes),
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
    for name in ("agent", "experiment", "dataset", "points", "BD-rate PSNR", "BD-rate MS-SSIM"):
        table.add_column(name, justify="right" if name.startswith("BD") else "left", no_wrap=True)
    footnoted, notes = analysis.footnoted_bd_rates(rows)

    def cell(value: str, note: int, style: str) -> Text:
        return Text(f"{value} [{note}]" if note else value, style=style if note else "")

    for f in footnoted:
        psnr, ms_ssim = f.cells[analysis.PSNR], f.cells[analysis.MS_SSIM]
        table.add_row(f.row.curve.name, f.row.curve.experiment_id,
                      cell(f.row.curve.dataset, f.dataset_note, "bold red"), str(len(f.row.curve.points)),
                      cell(psnr.text, psnr.note, "" if psnr.computable else "yellow"),
                      cell(ms_ssim.text, ms_ssim.note, "" if ms_ssim.computable else "yellow"))
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
            age(w.last_heartbeat_time), str(w.info.pid), w.info.host,
        )
    return Group(table, *(Text(f"  [{i}] {reason}") for i, reason in enumerate(reasons, 1)))


def queues_table(queues: Sequence[orchestrator_pb2.OwnerQueue]) -> Table:
    """Queued and running experiments per owner, with the owner's fair-share weight."""
    table = Table(title="queue by owner (fair share: owners take turns, `weight` experiments each)",
                  title_justify="left")
    for name in ("owner", "queued", "running", "weight"):
        table.add_column(name, justify="left" if name == "owner" else "right")
    for q in queues:
        table.add_row(q.owner, str(q.queued), str(q.running), str(q.weight))
    return table


def experiments_table(experiments: Sequence[orchestrator_pb2.Experiment], title: str) -> Table:
    """One row per experiment: id, state, agent, dataset, points, attempt, worker, creation time, and
    a summary (its bpp range and duration when it succeeded, its error when it failed, why it waits
    when no registered worker can run it)."""
    table = Table(title=title, title_justify="left")
    for name in ("experiment", "state", "agent", "dataset", "points", "attempt", "worker", "created", "summary"):
        table.add_column(name)
    for e in experiments:
        measured = [p.bpp for p in e.result.points if not p.HasField("agent_report")]
        if e.state == states.SUCCEEDED and not measured:
            summary = Text(f"agent-reported only: {report_text(e.result.points[0].agent_report)}"
                           if e.result.points else "no points")
        elif e.state == states.SUCCEEDED:
            low, high = min(measured), max(measured)
            rates = f"{low:.3f}" if low == high else f"{low:.3f}-{high:.3f}"
            summary = Text(f"{rates} bpp in {duration_text(e)}")
        elif e.HasField("error"):
            summary = Text(errors.describe(e.error), style="red")
        elif e.waiting_reason:
            summary = Text(f"waiting: {e.waiting_reason}", style="yellow")
        else:
            summary = Text("")
        if e.cached_from:  # nothing ran: the figures are another experiment's
            summary = Text(f"cached from {e.cached_from}: ", style="cyan").append_text(summary)
        table.add_row(e.experiment_id, state_text(e.state), e.agent.name, e.dataset, str(len(e.points)),
                      f"{e.attempt}/{e.max_attempts}", e.worker_id or ("cached" if e.cached_from else "-"),
                      _when(e.create_time), summary)
    return table


def experiment_view(e: orchestrator_pb2.Experiment) -> Group:
    """One experiment in full: state, attempts, agent, dataset, worker, times, points, labels; the
    per-point and per-image tables when it succeeded; its error when it failed."""
    head = Text(f"{e.experiment_id} ", style="bold")
    head.append_text(state_text(e.state))
    head.append(f"  attempt {e.attempt} of {e.max_attempts}")
    files = len(e.agent.files)
    size = sum(f.size_bytes for f in e.agent.files)
    took = duration_text(e)
    facts = [
        ("agent", f"{e.agent.name} (entry {e.agent.entry_module}, {files} file(s), {size} bytes)"),
        ("dataset", e.dataset), ("device", devices.short_name(e.device)), ("worker", e.worker_id or "-"),
        ("created", _when(e.create_time)), ("started", _when(e.start_time)),
        ("ended", f"{_when(e.end_time)} {('(' + took + ')') if took else ''}"),
        ("points", "; ".join(values.format_params(p) or "(none)" for p in e.points)),
    ]
    if e.labels:
        facts.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(e.labels.items()))))
    if e.request_id:
        facts.append(("request id", e.request_id))
    if e.cached_from:
        facts.append(("cached", f"outcome copied from {e.cached_from} (result cache; nothing ran)"))
    if e.waiting_reason:
        facts.append(("waiting", e.waiting_reason))
    if e.queue_timeout_s:
        facts.append(("queue limit", f"{e.queue_timeout_s:g} s (then UNSCHEDULABLE if no worker can run it)"))
    parts: list[Any] = [head, *(Text(f"  {k:<10} {v}") for k, v in facts)]
    if e.state == states.SUCCEEDED:
        parts += [results_view([e], title="per parameter point"), images_table(e)]
    if e.HasField("error"):
        parts.append(error_text(e.error))
    return Group(*parts)


def datasets_table(found: Sequence[orchestrator_pb2.Dataset]) -> Table:
    """Datasets: name, image count, total bytes, built-in or uploaded, digest prefix, creation time."""
    table = Table(title="datasets", title_justify="left")
    for name in ("name", "images", "bytes", "builtin", "digest", "created"):
        table.add_column(name)
    for d in found:
        table.add_row(d.name, str(len(d.images)), str(sum(i.size_bytes for i in d.images)),
                      "yes" if d.builtin else "no", d.digest[:16], _when(d.create_time))
    return table


def ranking_view(ranking: analysis.Ranking) -> Group:
    """A ranking (:func:`codecbench.analysis.rank`): candidates by BD-rate with bpp range, points and
    numbered notes; then those without a BD-rate and why; then the failures grouped by kind and location."""
    label = "PSNR" if ranking.metric == analysis.PSNR else "MS-SSIM"
    table = Table(
        title=f"{len(ranking.ranked)} candidate(s) by BD-rate ({label}) against {ranking.baseline.title} on "
              f"{ranking.baseline.dataset}",
        title_justify="left", caption_justify="left",
        caption=f"{analysis.BD_METHOD.upper()} interpolation; negative = fewer bits than the baseline at equal quality",
    )
    for name in ("#", "agent", "experiment", "points", "bpp range", f"BD-rate {label}"):
        table.add_column(name, justify="right" if name in ("#", "points") or name.startswith("BD") else "left",
                         no_wrap=True)
    notes: list[str] = []
    for i, row in enumerate(ranking.ranked, 1):
        value = f"{row.bd_rate.percent:+.2f} %"
        remark = row.bd_rate.note + (f"; outcome copied from {row.cached_from}" if row.cached_from else "")
        if remark:
            notes.append(remark.removeprefix("; "))
            value += f" [{len(notes)}]"
        low, high = row.bpp_range or (math.nan, math.nan)
        table.add_row(str(i), row.name, row.experiment_id, str(row.points), f"{low:.4f}-{high:.4f}", value)
    parts: list[Any] = [table, *(Text(f"  [{i}] {note}", style="dim") for i, note in enumerate(notes, 1))]
    if ranking.not_computable:
        parts.append(Text(f"{len(ranking.not_computable)} candidate(s) without a BD-rate:", style="yellow"))
        parts += [Text(f"  {row.name} {row.experiment_id} ({row.state}, {row.points} point(s)): {row.bd_rate.reason}")
                  for row in ranking.not_computable]
    if ranking.failures:
        parts.append(error_groups_table(ranking.failures, f"{ranking.failed} failed candidate(s) in "
                                                           f"{len(ranking.failures)} group(s)"))
    return Group(*parts)


def error_groups_table(groups: Sequence[analysis.ErrorGroup], title: str) -> Table:
    """Groups of failed experiments (:func:`codecbench.analysis.group_errors`): count, kind, source
    location, exception type, agents, and the newest example."""
    table = Table(title=title, title_justify="left")
    for name in ("count", "kind", "location", "exception", "agents", "example", "example experiment"):
        table.add_column(name, justify="right" if name == "count" else "left")
    for g in groups:
        table.add_row(str(g.count), g.kind, g.location or "-", g.exception_type or "-", ", ".join(g.agents),
                      g.example_message, g.example_experiment_id)
    return table
