"""What the web view's templates show, computed from messages: formatting filters, the experiment
list's filters, sortable tables of points and images, and the RD chart's data.

Pure functions (no server, no request): :mod:`codecbench.web.routes` calls them and hands the
results to the templates; :func:`install` registers the formatting filters with Jinja2.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from google.protobuf import timestamp_pb2

from codecbench import analysis, devices, errors, states, values
from codecbench.cli.views import RESULTS_CAPTION, age, lossless_cell, ms_ssim_cell, report_text
from codecbench.v1 import experiment_pb2, orchestrator_pb2, types_pb2


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A timestamp as ``2026-12-01 03:50:12 UTC``; ``-`` when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def num(value: float | None, digits: int = 2) -> str:
    """A figure with ``digits`` decimals; ``inf`` for an infinite one, ``-`` for None or NaN."""
    if value is None or math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def duration(exp: orchestrator_pb2.Experiment) -> str:
    """Seconds from the experiment's start to its end (``12.3 s``); empty until it has both."""
    if not exp.HasField("start_time") or not exp.HasField("end_time"):
        return ""
    return f"{(exp.end_time.ToMicroseconds() - exp.start_time.ToMicroseconds()) / 1e6:.1f} s"


def summary(exp: orchestrator_pb2.Experiment) -> str:
    """One line on the outcome: the bpp range and duration, the error, or why it waits."""
    measured = [p.bpp for p in exp.result.points if not p.HasField("agent_report")]
    if exp.state == states.SUCCEEDED and not measured:
        text = (f"agent-reported only: {report_text(exp.result.points[0].agent_report)}" if exp.result.points
                else "no points")
    elif exp.state == states.SUCCEEDED:
        low, high = min(measured), max(measured)
        text = f"{low:.3f} bpp in {duration(exp)}" if low == high else f"{low:.3f}-{high:.3f} bpp in {duration(exp)}"
    elif exp.HasField("error"):
        text = errors.describe(exp.error)
    elif exp.waiting_reason:
        text = f"waiting: {exp.waiting_reason}"
    else:
        text = ""
    return f"cached from {exp.cached_from}: {text}" if exp.cached_from else text


def install(env: jinja2.Environment) -> None:
    """Registers the filters the templates use (``state``, ``when``, ``age``, ``num``, ...)."""
    env.filters.update(
        state=states.state_name, when=when, age=age, num=num, duration=duration, summary=summary,
        params=lambda point: values.format_params(point) or "(no parameters)", describe=errors.describe,
        kind=errors.kind_name, phase=errors.phase_name, device=devices.short_name, report=report_text,
        worker_state=lambda s: orchestrator_pb2.WorkerState.Name(s).removeprefix("WORKER_STATE_"),
        isolation=lambda i: types_pb2.Isolation.Name(i).removeprefix("ISOLATION_"),
    )
    env.globals["RESULTS_CAPTION"] = RESULTS_CAPTION  # the per-point table's figures, as `codecbench show` defines them
    env.globals["TERMINAL_STATES"] = {states.state_name(s) for s in states.TERMINAL_STATES}


# -- the experiment list -----------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilter:
    """The experiment list's filters, as the form submits them (empty: no filter).

    Attributes:
        states: state names (``RUNNING``); the orchestrator filters by them.
        agent: a part of the agent's name (case-insensitive).
        labels: ``KEY=VALUE`` items the experiments must all carry; the orchestrator filters by them.
        dataset: the dataset's exact name.
        since: ``30m``, ``1h``, ``2d``, ``1w`` or an ISO date, as ``codecbench ls --since`` takes it.
    """

    states: tuple[str, ...] = ()
    agent: str = ""
    labels: tuple[str, ...] = ()
    dataset: str = ""
    since: str = ""

    def keep(self, exp: orchestrator_pb2.Experiment) -> bool:
        """Whether ``exp`` passes the filters the orchestrator does not apply (agent, dataset)."""
        return ((not self.agent or self.agent.lower() in exp.agent.name.lower())
                and (not self.dataset or exp.dataset == self.dataset))


# -- sortable tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A sortable column: its title, how to show a row's value, and the value it sorts by."""

    key: str
    title: str
    show: Callable[[Any], str]
    sort: Callable[[Any], Any]


def _metrics_columns(get: Callable[[Any], Any]) -> list[Column]:
    """The columns shared by points and images (``get`` picks the object holding the figures)."""

    def finite(f: Callable[[Any], float | None]) -> Callable[[Any], Any]:
        # None and NaN sort last in either direction's key tuple; inf sorts as the largest number
        return lambda row: (1, 0.0) if f(row) is None or math.isnan(f(row) or 0.0) else (0, f(row))

    def ms_ssim(row: Any) -> float | None:
        holder = get(row)
        return holder.ms_ssim if holder.HasField("ms_ssim") else None

    return [
        Column("bpp", "bpp", lambda r: num(get(r).bpp, 4), finite(lambda r: get(r).bpp)),
        Column("psnr", "PSNR dB", lambda r: num(get(r).psnr_db, 2), finite(lambda r: get(r).psnr_db)),
        Column("ms_ssim", "MS-SSIM", lambda r: num(ms_ssim(r), 4), finite(ms_ssim)),
        Column("encode_ms", "encode ms", lambda r: num(get(r).encode_ms, 1), finite(lambda r: get(r).encode_ms)),
        Column("decode_ms", "decode ms", lambda r: num(get(r).decode_ms, 1), finite(lambda r: get(r).decode_ms)),
        Column("lossless", "lossless", lambda r: "yes" if get(r).lossless else "no", lambda r: get(r).lossless),
    ]


def _point_columns() -> list[Column]:
    """The per-point figures of ``codecbench show`` (:func:`codecbench.cli.views.results_table`),
    in its order, with its cells for MS-SSIM (n/N when not all images have one) and lossless."""
    shared = {c.key: c for c in _metrics_columns(lambda p: p)}
    return [
        Column("point", "point", lambda p: values.format_params(p.params) or "(no parameters)",
               lambda p: p.point_index),
        Column("images", "images", lambda p: str(p.image_count), lambda p: p.image_count),
        shared["bpp"], shared["psnr"],
        Column("ms_ssim", "MS-SSIM", ms_ssim_cell, shared["ms_ssim"].sort),
        Column("pooled_bpp", "pooled bpp", lambda p: num(p.pooled_bpp, 4), lambda p: p.pooled_bpp),
        Column("pooled_psnr", "pooled PSNR", lambda p: num(p.pooled_psnr_db, 2),
               lambda p: (1, 0.0) if math.isnan(p.pooled_psnr_db) else (0, p.pooled_psnr_db)),
        shared["encode_ms"],
        Column("encode_ms_median", "median", lambda p: num(p.encode_ms_median, 1), lambda p: p.encode_ms_median),
        shared["decode_ms"],
        Column("decode_ms_median", "median", lambda p: num(p.decode_ms_median, 1), lambda p: p.decode_ms_median),
        Column("lossless", "lossless", lossless_cell, shared["lossless"].sort),
    ]


POINT_COLUMNS = _point_columns()
IMAGE_COLUMNS = [
    Column("point", "point", lambda r: r[0], lambda r: r[1].point_index),
    Column("image", "image", lambda r: r[1].image_name, lambda r: r[1].image_index),
    Column("bytes", "bytes", lambda r: str(r[1].metrics.bytes), lambda r: r[1].metrics.bytes),
    *_metrics_columns(lambda r: r[1].metrics),
]


@dataclass(frozen=True)
class SortedTable:
    """A table's columns and rows (cells as text), sorted by ``key`` (descending when ``descending``)."""

    columns: list[Column]
    rows: list[list[str]]
    key: str
    descending: bool


def sorted_table(columns: list[Column], rows: Iterable[Any], key: str, descending: bool) -> SortedTable:
    """Sorts ``rows`` by the column named ``key`` (the first column when unknown) and formats the cells."""
    column = next((c for c in columns if c.key == key), columns[0])
    ordered = sorted(rows, key=column.sort, reverse=descending)
    return SortedTable(columns, [[c.show(r) for c in columns] for r in ordered], column.key, descending)


def measured_points(exp: orchestrator_pb2.Experiment) -> list[experiment_pb2.PointResult]:
    """The points that have trusted figures (not agent-reported only)."""
    return [p for p in exp.result.points if not p.HasField("agent_report")]


def image_rows(exp: orchestrator_pb2.Experiment) -> list[tuple[str, experiment_pb2.ImageResult]]:
    """(point label, image result) for every image of every measured point."""
    return [(values.format_params(p.params) or "(no parameters)", image)
            for p in measured_points(exp) for image in p.images]


def kept_reconstructions(exp: orchestrator_pb2.Experiment) -> list[tuple[str, experiment_pb2.ImageResult]]:
    """(point label, image result) of every image whose decoded image was kept (``keep_reconstructions``)."""
    return [(label, image) for label, image in image_rows(exp) if image.HasField("reconstruction")]


def image_type(data: bytes) -> str:
    """The media type of a dataset image or a reconstruction (PNG or JPEG, the formats datasets take)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "image/jpeg" if data.startswith(b"\xff\xd8") else "application/octet-stream"


# -- the RD chart ------------------------------------------------------------------------------


def chart_data(chart: analysis.RdChart) -> dict[str, Any]:
    """The compare page's chart as JSON-able data: one Plotly trace per drawn curve and metric.

    Returns:
        ``{"psnr": {"traces": [...], "x": title, "y": title}, "ms_ssim": {...}}``; each trace is
        ``{"name", "x" (bpp), "y", "text" (experiment id)}``. Curves with no drawable point have no trace.
        Names and texts have ``&``, ``<`` and ``>`` escaped: Plotly draws them as its pseudo-HTML
        (``<a href>`` becomes a live link), and an agent's name is the user's to choose.
    """

    def plain(text: str) -> str:
        return html.escape(text, quote=False)

    def traces(pick: Callable[[analysis.RdSeries], Sequence[tuple[float, float]]]) -> list[dict[str, Any]]:
        return [{"name": plain(s.label), "x": [p[0] for p in pick(s)], "y": [p[1] for p in pick(s)],
                 "text": plain(s.experiment_id)} for s in chart.series if pick(s)]

    return {"psnr": {"traces": traces(lambda s: s.psnr), "x": chart.rate_label, "y": chart.psnr_label},
            "ms_ssim": {"traces": traces(lambda s: s.ms_ssim), "x": "rate [bpp]", "y": "MS-SSIM RGB"}}
