"""Analysis of finished experiments: BD-rate, RD plots, error groups, CompressAI export.

Pure functions over ``codecbench.v1.Experiment`` messages (no servers), used by the CLI and the
demo, which only format what these return.

- BD-rate: G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
  ITU-T SG16 Q.6 VCEG-M33, Austin, 2001; computed by the ``bjontegaard`` package (FAU-LMS) with
  piecewise cubic Hermite interpolation (PCHIP, as in the JCT-VC common-test-conditions sheet)
  instead of the original cubic polynomial fit. The rate is each point's mean bpp, the distortion
  its mean PSNR in dB, or its mean MS-SSIM expressed in dB, ``-10 * log10(1 - MS-SSIM)`` (the scale
  of CompressAI's plots). When a point of either curve has exact images, the PSNR curve is pooled
  bpp against pooled PSNR instead (:func:`psnr_convention`: the mean PSNR leaves exact images out
  and would reward a codec that makes them inexact); each result says which convention it used.
  The result is the average bitrate difference of the test curve against the anchor at equal
  quality, in percent: negative means the test needs fewer bits. Each curve
  needs at least four points (VCEG-M33's four rates; the common test conditions use four QPs), and
  both experiments must have run on the same dataset unless the caller allows otherwise (then every
  row says so).
- Export: CompressAI's results layout (``compressai.utils.eval_model``): ``name``, ``description``
  and ``results`` with lists ``bpp``, ``psnr-rgb``, ``ms-ssim-rgb`` (the raw MS-SSIM value),
  ``encoding_time`` and ``decoding_time`` (mean seconds per image), one entry per parameter point.

JSON has no infinity: wherever a value is infinite (the PSNR of a lossless point) or NaN, the JSON
written by codecbench holds the strings ``"Infinity"``/``"-Infinity"``/``"NaN"``, the protobuf JSON
mapping's spelling, so ``--json`` output of messages and of these tables agree.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

from codecbench import devices, errors, values
from codecbench.states import FAILED, SUCCEEDED, state_name
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2

if TYPE_CHECKING:  # matplotlib loads on the first plot (light imports)
    from matplotlib.layout_engine import ConstrainedLayoutEngine

BD_METHOD = "pchip"
# PCHIP runs on two points (the package's own minimum), but through two or three points the
# "curve" is a line or a single bend, and the result measures where the points fall rather than the
# codec: `jpeg` at 2 qualities against `jpeg` at 5 gave -14.7 %. VCEG-M33 and the common test
# conditions use four rates; so do we.
MIN_BD_POINTS = 4
# Below this share of overlapping quality range the package warns; the table notes it instead.
LOW_OVERLAP = 0.75
PSNR = "psnr"
MS_SSIM = "ms-ssim"
BD_METRICS = (PSNR, MS_SSIM)
_METRIC_LABEL = {PSNR: "PSNR", MS_SSIM: "MS-SSIM"}
_METRIC_UNIT = {PSNR: "dB", MS_SSIM: "dB (MS-SSIM)"}


@overload
def json_safe(value: dict[str, Any]) -> dict[str, Any]: ...


@overload
def json_safe(value: Any) -> Any: ...


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its protobuf JSON spelling
    (``"Infinity"``, ``"-Infinity"``, ``"NaN"``), recursively through dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def ms_ssim_db(ms_ssim: float) -> float:
    """MS-SSIM on a dB scale, ``-10 * log10(1 - ms_ssim)``; +inf for a perfect 1.0."""
    return math.inf if ms_ssim >= 1.0 else -10.0 * math.log10(1.0 - ms_ssim)


# -- rate-distortion curves ------------------------------------------------------------------


@dataclass(frozen=True)
class RdPoint:
    """One parameter point of a curve: per-image means over the dataset's images.

    Attributes:
        params: the point's parameters as text (``quality=50``).
        bpp: mean bpp over the images.
        psnr_db: mean of the finite per-image PSNRs in dB; +inf only when every image is exact.
        ms_ssim: mean MS-SSIM over the images that have one; None when none has.
        lossless: every image of the point is exact.
        image_count: images of the point.
        lossless_image_count: exact images (left out of ``psnr_db`` unless all are).
        ms_ssim_image_count: images that have an MS-SSIM value.
        pooled_bpp: 8 * total bytes / total pixels (CLIC); NaN when not stored.
        pooled_psnr_db: the PSNR of the pooled MSE, which counts exact images with MSE 0 (so an
            inexact image never raises it); +inf only when every image is exact.
    """

    params: str
    bpp: float
    psnr_db: float
    ms_ssim: float | None
    lossless: bool = False
    image_count: int = 0
    lossless_image_count: int = 0
    ms_ssim_image_count: int = 0
    pooled_bpp: float = math.nan
    pooled_psnr_db: float = math.nan

    @classmethod
    def from_point(cls, point: experiment_pb2.PointResult) -> RdPoint:
        """The RD point of a point result."""
        return cls(values.format_params(point.params), point.bpp, point.psnr_db,
                   point.ms_ssim if point.HasField("ms_ssim") else None, point.lossless, point.image_count,
                   point.lossless_image_count, point.ms_ssim_image_count, point.pooled_bpp, point.pooled_psnr_db)


@dataclass(frozen=True)
class Curve:
    """The rate-distortion curve of one succeeded experiment, points in the experiment's order."""

    experiment_id: str
    name: str
    points: tuple[RdPoint, ...]
    dataset: str = ""

    @classmethod
    def from_experiment(cls, exp: orchestrator_pb2.Experiment) -> Curve:
        """The curve of a succeeded experiment: one point per parameter point, in the experiment's order.

        Raises:
            ValueError: the experiment has no results (it did not succeed); the message names it.
        """
        if exp.state != SUCCEEDED:
            raise ValueError(f"experiment {exp.experiment_id} ({exp.agent.name}) is {state_name(exp.state)}: "
                             "it has no results")
        if any(p.HasField("agent_report") for p in exp.result.points):
            raise ValueError(f"experiment {exp.experiment_id} ({exp.agent.name}) has agent-reported figures only "
                             "(a seed agent that takes no image): no image was coded, so it has no RD curve")
        return cls(exp.experiment_id, exp.agent.name, tuple(RdPoint.from_point(p) for p in exp.result.points),
                   exp.dataset)

    @property
    def title(self) -> str:
        """The curve's label: agent name and experiment id."""
        return f"{self.name} ({self.experiment_id})"


class NotComputable(ValueError):
    """BD-rate cannot be computed for this pair; the message says why, naming the experiment."""


class DifferentDatasets(ValueError):
    """Curves measured on different datasets were compared without allowing it; the message names
    each experiment and its dataset."""


# How a BD-rate's rate and PSNR are aggregated per point (BdRate.convention).
MEANS = "per-image means"
POOLED = "pooled"


def psnr_convention(curves: Iterable[Curve]) -> str:
    """:data:`MEANS` when no point of any curve has an exact image, else :data:`POOLED`.

    The per-image mean PSNR leaves exact images out (their PSNR is infinite), so turning an exact
    image into a 32 dB one can raise it: a worse codec would get a better curve. The pooled PSNR
    counts exact images with MSE 0 and never rewards inexactness; with no exact image anywhere the
    two conventions rank codecs alike and the per-image means (CompressAI's) are used.
    """
    return POOLED if any(p.lossless_image_count for c in curves for p in c.points) else MEANS


def _rd_pairs(curve: Curve, metric: str, convention: str = MEANS) -> tuple[list[float], list[float]]:
    """(rates, distortions) sorted by rate, checked for what BD-rate with PCHIP needs.

    With ``convention`` :data:`POOLED` the PSNR curve is pooled bpp against pooled PSNR; otherwise
    (and always for MS-SSIM) the per-image means.

    Raises:
        NotComputable: too few points, a lossless (infinite) or unmeasured (NaN) quality value,
            a missing MS-SSIM, a non-positive or non-finite rate, duplicate points, or a quality
            that does not increase with the rate.
    """
    label = _METRIC_LABEL[metric]
    pooled = metric == PSNR and convention == POOLED
    pairs = []
    for point in curve.points:
        where = point.params or "its only point"
        rate = point.pooled_bpp if pooled else point.bpp
        if metric == PSNR:
            quality = point.pooled_psnr_db if pooled else point.psnr_db
        elif point.ms_ssim is None:
            raise NotComputable(
                f"{curve.title} has no MS-SSIM at {where} (every image is below 161 px on its shorter side)"
            )
        else:
            quality = ms_ssim_db(point.ms_ssim)
        if pooled and not (math.isfinite(rate) and rate > 0):
            raise NotComputable(f"{curve.title} has no pooled figures at {where} (stored before they were "
                                "measured), and BD-rate needs them where points have exact images")
        if math.isnan(quality):  # not "infinite": nothing says the images are exact
            raise NotComputable(f"{curve.title} has no {label} value at {where} (NaN): the metric was not measured")
        if not math.isfinite(quality):
            raise NotComputable(
                f"{curve.title} has an infinite {label} at {where} (every image is exact there): "
                "BD-rate compares lossy curves"
            )
        if not math.isfinite(rate) or rate <= 0:
            raise NotComputable(f"{curve.title} has {rate} bpp at {where}; the rate must be a positive "
                                "finite number")
        pairs.append((rate, quality, point.params))
    if len(pairs) < MIN_BD_POINTS:
        raise NotComputable(f"{curve.title} has {len(pairs)} parameter point(s); BD-rate needs at least "
                            f"{MIN_BD_POINTS} per curve (fewer make a line, not an RD curve)")
    pairs.sort()
    for (bpp_a, q_a, p_a), (bpp_b, q_b, p_b) in zip(pairs, pairs[1:], strict=False):
        if bpp_a == bpp_b:
            same = "duplicate points" if q_a == q_b else "two points at the same rate"
            raise NotComputable(
                f"{curve.title}: {same} ({p_a or 'no parameters'} and {p_b or 'no parameters'}: {bpp_a:.4f} bpp, "
                f"{label} {q_a:.3f} and {q_b:.3f}); BD-rate needs one point per rate: drop one of them"
            )
        if q_b <= q_a:
            raise NotComputable(
                f"{curve.title}: {label} does not increase with the rate ({p_a}: {bpp_a:.4f} bpp, {q_a:.3f}; "
                f"{p_b}: {bpp_b:.4f} bpp, {q_b:.3f}); BD-rate needs a monotonic RD curve"
            )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _ms_ssim_caveats(curves: Sequence[Curve]) -> tuple[str, ...]:
    """The points whose MS-SSIM covers fewer images than their rate (images below 161 px have none)."""
    return tuple(f"{c.title} {p.params or 'its only point'}: MS-SSIM over {p.ms_ssim_image_count} of "
                 f"{p.image_count} images, the rate over all {p.image_count}"
                 for c in curves for p in c.points if 0 < p.ms_ssim_image_count < p.image_count)


@dataclass(frozen=True)
class BdRate:
    """BD-rate of one curve against an anchor for one quality metric.

    Attributes:
        percent: average rate difference at equal quality in %; None when not computable.
        reason: why it is not computable (empty when ``percent`` is set).
        overlap: share of the two curves' combined quality range that both cover (0..1).
        convention: how each point's rate and quality were aggregated: :data:`MEANS` (mean bpp,
            mean PSNR or MS-SSIM) or :data:`POOLED` (pooled bpp and pooled PSNR; see
            :func:`psnr_convention`).
        caveats: points whose MS-SSIM covers fewer images than their rate (MS-SSIM only).
    """

    metric: str
    percent: float | None
    reason: str = ""
    overlap: float = 0.0
    convention: str = MEANS
    caveats: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """What to print with a computed value: the pooled convention, points whose MS-SSIM covers
        fewer images than their rate, and little overlap in quality; empty when none applies."""
        if self.percent is None:
            return ""
        said = []
        if self.convention == POOLED:
            said.append("pooled bpp and pooled PSNR (CLIC): some points have exact images, which the per-image "
                        "mean PSNR leaves out")
        if self.caveats:
            said.append("MS-SSIM covers fewer images than the rate at " + "; ".join(self.caveats))
        if self.overlap < LOW_OVERLAP:
            said.append(f"averaged over the common {_METRIC_LABEL[self.metric]} range only, {self.overlap:.0%} of "
                        f"the combined range (the bjontegaard package warns below {LOW_OVERLAP:.0%})")
        return "; ".join(said)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (non-finite floats spelled as protobuf JSON does)."""
        return json_safe({"metric": self.metric, "percent": self.percent, "reason": self.reason,
                          "overlap": self.overlap, "convention": self.convention,
                          "caveats": list(self.caveats), "note": self.note})


def bd_rate(anchor: Curve, test: Curve, metric: str = PSNR) -> BdRate:
    """BD-rate of ``test`` against ``anchor`` (see the module docstring for the method and sources).

    Never raises for bad curves: a pair that has no BD-rate comes back with ``percent=None`` and
    the reason (fewer than :data:`MIN_BD_POINTS` points, lossless points, missing MS-SSIM,
    non-monotonic curve, no overlap). Does not look at the datasets (:func:`bd_rate_table` does).

    Raises:
        ValueError: ``metric`` is not one of :data:`BD_METRICS`.
    """
    if metric not in BD_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(BD_METRICS)}")
    convention = psnr_convention((anchor, test)) if metric == PSNR else MEANS
    caveats = _ms_ssim_caveats((anchor, test)) if metric == MS_SSIM else ()
    try:
        rate_a, dist_a = _rd_pairs(anchor, metric, convention)
        rate_t, dist_t = _rd_pairs(test, metric, convention)
    except NotComputable as exc:
        return BdRate(metric, None, f"not computable: {exc}", convention=convention)
    low, high = max(dist_a[0], dist_t[0]), min(dist_a[-1], dist_t[-1])
    overlap = max(high - low, 0.0) / (max(dist_a[-1], dist_t[-1]) - min(dist_a[0], dist_t[0]))
    if overlap <= 0.0:
        unit = _METRIC_UNIT[metric]
        return BdRate(metric, None, (
            f"not computable: the {_METRIC_LABEL[metric]} ranges do not overlap ({anchor.title}: "
            f"{dist_a[0]:.2f}-{dist_a[-1]:.2f} {unit}, {test.title}: {dist_t[0]:.2f}-{dist_t[-1]:.2f} {unit})"
        ), convention=convention)
    # Imported here: bjontegaard loads scipy and pyplot (1.5 s), which `codecbench ls` should not pay.
    import bjontegaard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the overlap is reported through BdRate.note instead
        try:
            percent = float(bjontegaard.bd_rate(rate_a, dist_a, rate_t, dist_t, method=BD_METHOD,
                                                require_matching_points=False, min_overlap=0))
        except ValueError as exc:  # whatever the checks above missed: a reason, never a crash
            return BdRate(metric, None, f"not computable: the bjontegaard package refused the curves: {exc}",
                          convention=convention)
    return BdRate(metric, percent, overlap=overlap, convention=convention, caveats=caveats)


@dataclass(frozen=True)
class BdRateRow:
    """One row of a BD-rate table: an experiment against the baseline, for each metric.

    Attributes:
        curve: the experiment's curve.
        results: one BD-rate per metric of :data:`BD_METRICS`.
        other_dataset: the baseline's dataset when this curve was measured on another one (the
            comparison was allowed explicitly); empty when both ran on the same dataset.
    """

    curve: Curve
    results: tuple[BdRate, ...]
    other_dataset: str = ""

    @property
    def dataset_note(self) -> str:
        """What to say in the row when the datasets differ; empty when they do not."""
        if not self.other_dataset:
            return ""
        return (f"measured on dataset {self.curve.dataset!r}, the baseline on {self.other_dataset!r}: "
                "the rates and qualities of different images are not comparable")

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the curve's identity and dataset, whether that differs from the baseline's,
        its point count and one BD-rate per metric."""
        return {"experiment_id": self.curve.experiment_id, "name": self.curve.name, "dataset": self.curve.dataset,
                "different_dataset": bool(self.other_dataset), "dataset_note": self.dataset_note,
                "points": len(self.curve.points), "bd_rate": {r.metric: r.to_json() for r in self.results}}


def bd_rate_table(curves: Sequence[Curve], baseline: Curve, allow_different_datasets: bool = False
                  ) -> list[BdRateRow]:
    """BD-rate (PSNR and MS-SSIM) of every curve against ``baseline``, in the given order.

    Args:
        curves: the curves to compare.
        baseline: the anchor curve.
        allow_different_datasets: compare curves measured on another dataset than the baseline's
            too; each such row is flagged (:attr:`BdRateRow.other_dataset`).

    Raises:
        DifferentDatasets: a curve was measured on another dataset than the baseline and
            ``allow_different_datasets`` is false; the message names them all.
    """
    others = [c for c in curves if c.dataset != baseline.dataset]
    if others and not allow_different_datasets:
        listed = ", ".join(f"{c.title} on {c.dataset!r}" for c in others)
        raise DifferentDatasets(
            f"the baseline {baseline.title} ran on dataset {baseline.dataset!r}, but {listed}: BD-rate compares "
            "curves measured on the same images (allow it with --allow-different-datasets, "
            "allow_different_datasets=True)"
        )
    return [BdRateRow(c, tuple(bd_rate(baseline, c, m) for m in BD_METRICS),
                      baseline.dataset if c.dataset != baseline.dataset else "") for c in curves]


@dataclass(frozen=True)
class BdRateCell:
    """One BD-rate value as a table shows it.

    Attributes:
        text: ``"+1.23 %"``, or ``"n/a"`` when not computable.
        note: the number of its footnote (1-based), 0 when it has none.
        computable: whether a value was computed.
    """

    text: str
    note: int
    computable: bool


@dataclass(frozen=True)
class FootnotedRow:
    """A :class:`BdRateRow` with its cells and footnote numbers (0: no footnote)."""

    row: BdRateRow
    dataset_note: int
    cells: dict[str, BdRateCell]


def footnoted_bd_rates(rows: Sequence[BdRateRow]) -> tuple[list[FootnotedRow], list[str]]:
    """The BD-rate table's cells and its numbered footnotes, as the CLI and the web view print them.

    Notes are numbered in reading order: per row, the dataset note, then the PSNR cell's, then the
    MS-SSIM cell's; a cell that is not computable is noted with the reason, a computed one with its
    caveats (:attr:`BdRate.note`).

    Returns:
        The rows, and the notes (note ``i`` is ``notes[i - 1]``).
    """
    notes: list[str] = []

    def noted(remark: str) -> int:
        if not remark:
            return 0
        notes.append(remark)
        return len(notes)

    out = []
    for row in rows:
        dataset_note = noted(row.dataset_note)
        cells = {}
        for result in sorted(row.results, key=lambda r: BD_METRICS.index(r.metric)):
            text = "n/a" if result.percent is None else f"{result.percent:+.2f} %"
            cells[result.metric] = BdRateCell(text, noted(result.reason or result.note), result.percent is not None)
        out.append(FootnotedRow(row, dataset_note, cells))
    return out, notes


# -- RD plot -----------------------------------------------------------------------------------


def _plot_labels(curves: Sequence[Curve]) -> list[str]:
    """Agent names, with the experiment id added where two curves share a name."""
    names = [c.name for c in curves]
    return [c.name if names.count(c.name) == 1 else c.title for c in curves]


@dataclass(frozen=True)
class RdSeries:
    """One curve's drawable points.

    Attributes:
        label: the agent name (with the experiment id where two curves share a name).
        experiment_id: the experiment.
        psnr: (rate in bpp, PSNR in dB) pairs sorted by rate, in the chart's convention
            (:attr:`RdChart.pooled`); lossless and infinite points left out.
        ms_ssim: (mean bpp, mean MS-SSIM, 0..1) pairs sorted by rate, points without MS-SSIM left out.
    """

    label: str
    experiment_id: str
    psnr: tuple[tuple[float, float], ...]
    ms_ssim: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class RdChart:
    """What an RD chart draws: one series per curve, the convention, and notes on what is not drawn."""

    pooled: bool
    series: tuple[RdSeries, ...]
    notes: tuple[str, ...]

    @property
    def rate_label(self) -> str:
        """The rate axis's title of the PSNR chart."""
        return "pooled rate [bpp]" if self.pooled else "rate [bpp]"

    @property
    def psnr_label(self) -> str:
        """The quality axis's title of the PSNR chart."""
        return "pooled PSNR RGB [dB]" if self.pooled else "PSNR RGB [dB]"


def rd_chart(curves: Sequence[Curve]) -> RdChart:
    """The series of an RD chart (bpp vs PSNR, and bpp vs MS-SSIM), one per curve.

    Every curve is drawn in one convention (:func:`psnr_convention` over the points that can be
    drawn): the per-image means when no drawn point has an exact image, else pooled bpp against
    pooled PSNR for every curve (the mean PSNR leaves exact images out and would draw a worse codec
    higher); the axes and a note say which. Lossless points (every image exact, PSNR = inf) cannot
    be drawn; they are listed in a note. A point that is not lossless is never called so: one whose
    PSNR is infinite all the same (results stored before the mean left exact images out) is noted
    as such; one with some exact images is noted with how many.
    """
    drawable = [Curve(c.experiment_id, c.name, tuple(p for p in c.points if not p.lossless), c.dataset)
                for c in curves]
    pooled = psnr_convention(drawable) == POOLED
    notes = []
    if pooled:
        notes.append("every curve drawn at pooled bpp and pooled PSNR (CLIC): some points have exact images, "
                     "which the per-image mean PSNR leaves out")
    series = []
    for curve, label in zip(curves, _plot_labels(curves), strict=True):
        finite = sorted((p.pooled_bpp, p.pooled_psnr_db) if pooled else (p.bpp, p.psnr_db)
                        for p in curve.points if not p.lossless
                        and math.isfinite(p.pooled_psnr_db if pooled else p.psnr_db))
        ms_ssim = sorted((p.bpp, p.ms_ssim) for p in curve.points if p.ms_ssim is not None and math.isfinite(p.bpp))
        series.append(RdSeries(label, curve.experiment_id, tuple(finite), tuple(ms_ssim)))
        said = []
        for p in curve.points:
            where = f"{p.params + ' ' if p.params else ''}at {p.bpp:.2f} bpp"
            if p.lossless:
                said.append(f"lossless (every image exact; PSNR = inf, not drawn) {where}")
            elif not math.isfinite(p.psnr_db):
                said.append(f"PSNR = inf but not lossless (not drawn) {where}")
            elif p.lossless_image_count:
                said.append(f"{p.lossless_image_count} of {p.image_count} images exact {where}; "
                            "the pooled PSNR drawn counts them with MSE 0")
        if said:
            notes.append(f"{label}: {'; '.join(said)}")
    return RdChart(pooled, tuple(series), tuple(notes))


def rd_plot(curves: Sequence[Curve], path: Path, title: str = "") -> list[str]:
    """Writes a PNG of PSNR (dB) against rate (bpp), one line per curve, labelled by agent name
    (what is drawn, and the notes, are :func:`rd_chart`'s).

    Returns:
        The notes (the pooled convention; one per curve with points that are lossless, infinite or
        partly exact), also printed on the figure.
    """
    from matplotlib.figure import Figure  # Figure renders with Agg; pyplot's global state is never touched

    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    chart = rd_chart(curves)
    notes = list(chart.notes)
    for series in chart.series:
        if series.psnr:
            axes.plot([p[0] for p in series.psnr], [p[1] for p in series.psnr], "o-", label=series.label)
    axes.set_xlabel(chart.rate_label)
    axes.set_ylabel(chart.psnr_label)
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend(loc="lower right")
    axes.set_title(title or "rate-distortion")
    if notes:
        figure.text(0.01, 0.005, "\n".join(notes), fontsize=8, va="bottom")
        layout = cast("ConstrainedLayoutEngine", figure.get_layout_engine())  # layout="constrained" above
        layout.set(rect=(0, 0.04 * len(notes), 1, 1 - 0.04 * len(notes)))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return notes


# -- error analytics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorGroup:
    """Failed experiments that share an error kind, a source location and an exception type.

    Attributes:
        location: ``file:line`` in the agent's files, or empty when the error has none
            (a timeout, a lost worker).
        example_message: one line for people (:func:`codecbench.errors.describe`) of the newest error.
        example_experiment_id: the experiment that error belongs to.
        agents: the names of the agents involved, sorted.
    """

    kind: str
    location: str
    exception_type: str
    count: int
    example_message: str
    example_experiment_id: str
    agents: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON form of this group."""
        return {"kind": self.kind, "location": self.location, "exception_type": self.exception_type,
                "count": self.count, "example_message": self.example_message,
                "example_experiment_id": self.example_experiment_id, "agents": list(self.agents)}


def error_location(error: errors_pb2.Error) -> str:
    """The error's blamed ``file:line``, else its innermost frame's, else empty."""
    if error.location:
        return error.location
    if error.frames:
        frame = error.frames[-1]
        return f"{frame.file}:{frame.line}"
    return ""


def without_cached_copies(experiments: Iterable[orchestrator_pb2.Experiment]
                          ) -> tuple[list[orchestrator_pb2.Experiment], int]:
    """The experiments that ran, and how many were left out as cached copies (``cached_from`` set).

    A cached copy of a failure is no new failure: counting it would inflate its error group.
    """
    listed = list(experiments)
    ran = [e for e in listed if not e.cached_from]
    return ran, len(listed) - len(ran)


def group_errors(experiments: Iterable[orchestrator_pb2.Experiment]) -> list[ErrorGroup]:
    """Groups the FAILED experiments by (kind, location, exception type), largest group first.

    ``experiments`` are expected newest first (as ``ListExperiments`` returns them), so each
    group's example is its newest failure. Experiments in other states are ignored.
    """
    groups: dict[tuple[str, str, str], list[orchestrator_pb2.Experiment]] = {}
    for exp in experiments:
        if exp.state != FAILED or not exp.HasField("error"):
            continue
        key = (errors.kind_name(exp.error.kind), error_location(exp.error), exp.error.exception_type)
        groups.setdefault(key, []).append(exp)
    out = [
        ErrorGroup(kind, location, exc_type, len(members), errors.describe(members[0].error),
                   members[0].experiment_id, tuple(sorted({m.agent.name for m in members})))
        for (kind, location, exc_type), members in groups.items()
    ]
    return sorted(out, key=lambda g: (-g.count, g.kind, g.location))


# -- ranking -----------------------------------------------------------------------------------

# The metric names of `codecbench rank --metric` (CLI spelling) -> this module's.
RANK_METRICS = {"psnr": PSNR, "ms_ssim": MS_SSIM}


@dataclass(frozen=True)
class RankRow:
    """One candidate of a ranking: its BD-rate against the baseline, or why there is none.

    Attributes:
        experiment_id: the candidate experiment.
        name: its agent's name.
        state: its state's name (``SUCCEEDED``, ``QUEUED``, ...).
        points: its parameter points.
        bpp_range: the lowest and highest mean bpp of its points; None without results.
        bd_rate: the BD-rate for the ranking's metric; ``percent`` None (with ``reason``) when
            not computable.
        cached_from: the experiment its outcome was copied from (result cache), or empty.
    """

    experiment_id: str
    name: str
    state: str
    points: int
    bpp_range: tuple[float, float] | None
    bd_rate: BdRate
    cached_from: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form of this row."""
        return json_safe({"experiment_id": self.experiment_id, "name": self.name, "state": self.state,
                          "points": self.points, "bpp_range": list(self.bpp_range) if self.bpp_range else None,
                          "bd_rate_percent": self.bd_rate.percent, "reason": self.bd_rate.reason,
                          "note": self.bd_rate.note, "overlap": self.bd_rate.overlap,
                          "cached_from": self.cached_from})


@dataclass(frozen=True)
class Ranking:
    """Candidates against a baseline (:func:`rank`).

    Attributes:
        baseline: the anchor curve.
        metric: :data:`PSNR` or :data:`MS_SSIM`.
        ranked: candidates with a BD-rate, best (most negative) first.
        not_computable: candidates without one (not finished, too few points, another dataset,
            lossless, no overlap...), each with the reason, in submission order.
        failures: the FAILED candidates grouped by error kind and location, largest group first.
        failed: how many candidates failed.
    """

    baseline: Curve
    metric: str
    ranked: tuple[RankRow, ...]
    not_computable: tuple[RankRow, ...]
    failures: tuple[ErrorGroup, ...]
    failed: int

    def to_json(self) -> dict[str, Any]:
        """The JSON form (for a search loop): baseline, method, rows, failure groups."""
        return {"baseline": {"experiment_id": self.baseline.experiment_id, "name": self.baseline.name,
                             "dataset": self.baseline.dataset, "points": len(self.baseline.points)},
                "metric": self.metric, "method": BD_METHOD,
                "ranked": [r.to_json() for r in self.ranked],
                "not_computable": [r.to_json() for r in self.not_computable],
                "failed": self.failed, "failures": [g.to_json() for g in self.failures]}


def _rank_row(baseline: Curve, exp: orchestrator_pb2.Experiment, metric: str) -> RankRow:
    points = len(exp.points)
    state = state_name(exp.state)
    try:
        curve = Curve.from_experiment(exp)
    except ValueError as exc:
        return RankRow(exp.experiment_id, exp.agent.name, state, points, None,
                       BdRate(metric, None, f"not computable: {exc}"), exp.cached_from)
    rates = [p.bpp for p in curve.points]
    bpp_range = (min(rates), max(rates)) if rates else None
    if curve.dataset != baseline.dataset:
        result = BdRate(metric, None, f"not computable: {curve.title} ran on dataset {curve.dataset!r}, the baseline "
                                      f"{baseline.title} on {baseline.dataset!r}: BD-rate compares curves measured "
                                      "on the same images")
    else:
        result = bd_rate(baseline, curve, metric)
    return RankRow(exp.experiment_id, exp.agent.name, state, points, bpp_range, result, exp.cached_from)


def rank(baseline: orchestrator_pb2.Experiment, candidates: Iterable[orchestrator_pb2.Experiment],
         metric: str = PSNR) -> Ranking:
    """Ranks candidate experiments by BD-rate against ``baseline`` (method in the module docstring).

    Every candidate appears once: ranked, not computable with the reason, or (FAILED) in the
    failure groups. The baseline itself is left out when it is among the candidates.

    Args:
        baseline: a SUCCEEDED experiment, the anchor.
        candidates: the experiments to rank (e.g. every one of a run's label), oldest first: the
            order of the rows without a BD-rate; each failure group's example is its newest.
        metric: :data:`PSNR` or :data:`MS_SSIM`.

    Raises:
        ValueError: the baseline has no RD curve (not SUCCEEDED, or agent-reported figures only),
            or ``metric`` is not one of :data:`BD_METRICS`.
    """
    if metric not in BD_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(BD_METRICS)}")
    anchor = Curve.from_experiment(baseline)
    others = [c for c in candidates if c.experiment_id != baseline.experiment_id]
    failed = [c for c in others if c.state == FAILED]
    rows = [_rank_row(anchor, c, metric) for c in others if c.state != FAILED]
    ranked = sorted((r for r in rows if r.bd_rate.percent is not None), key=lambda r: cast(float, r.bd_rate.percent))
    return Ranking(anchor, metric, tuple(ranked), tuple(r for r in rows if r.bd_rate.percent is None),
                   tuple(group_errors(reversed(failed))), len(failed))


# -- CompressAI export -------------------------------------------------------------------------


def compressai_results(exp: orchestrator_pb2.Experiment) -> dict[str, Any]:
    """The experiment's results in CompressAI's results layout (module docstring), JSON-safe.

    A point without MS-SSIM (images too small) has ``null`` there. The description says which
    points left exact images out of their PSNR mean, or have MS-SSIM on only some images. A copy
    from the result cache has ``cached_from``, the experiment that ran.

    Raises:
        ValueError: the experiment did not succeed; the message names it and its state.
    """
    exported = _compressai_layout(exp)
    if exp.cached_from:
        exported["cached_from"] = exp.cached_from
    return exported


def _compressai_layout(exp: orchestrator_pb2.Experiment) -> dict[str, Any]:
    if exp.state == SUCCEEDED and any(p.HasField("agent_report") for p in exp.result.points):
        return agent_reported_results(exp)
    curve = Curve.from_experiment(exp)
    points = exp.result.points
    images = points[0].image_count if points else 0
    params = "; ".join(p.params or "(no parameters)" for p in curve.points)
    caveats = "".join(
        f"; {p.params or 'the point'}: {p.lossless_image_count} of {p.image_count} images exact (psnr-rgb is the "
        f"mean of the other {p.image_count - p.lossless_image_count})"
        for p in curve.points if p.lossless_image_count and not p.lossless
    ) + "".join(
        f"; {p.params or 'the point'}: ms-ssim-rgb over {p.ms_ssim_image_count} of {p.image_count} images"
        for p in curve.points if 0 < p.ms_ssim_image_count < p.image_count
    )
    exported: dict[str, Any] = {
        "name": exp.agent.name,
        "description": f"codecbench {exp.experiment_id}: {exp.agent.name} on {exp.dataset} ({images} images, "
                       f"device {devices.short_name(exp.device)}, worker {exp.worker_id}); points: {params}{caveats}",
        "results": {
            "bpp": [p.bpp for p in points],
            "psnr-rgb": [p.psnr_db for p in points],
            "ms-ssim-rgb": [p.ms_ssim if p.HasField("ms_ssim") else None for p in points],
            "encoding_time": [p.encode_ms / 1000.0 for p in points],
            "decoding_time": [p.decode_ms / 1000.0 for p in points],
        },
    }
    # A seed agent that takes images reports its own figures per image: kept beside the measured
    # results, never mixed into them.
    reported = [{**_report_json(i.metrics.agent_report), "params": values.format_params(p.params),
                 "image": i.image_name} for p in points for i in p.images if i.metrics.HasField("agent_report")]
    if reported:
        exported["agent_reported"] = reported
        exported["description"] += ("; agent_reported: the agent's own figures per image (NOT measured by "
                                    "codecbench)")
    safe: dict[str, Any] = json_safe(exported)
    return safe


def _report_json(report: experiment_pb2.AgentReport) -> dict[str, Any]:
    """An agent report's values (typed as they came) and the names of the entries not reported."""
    return {"values": {k: values.from_value(v) for k, v in sorted(report.values.items())},
            "not_scalar": list(report.ignored_keys)}


def agent_reported_results(exp: orchestrator_pb2.Experiment) -> dict[str, Any]:
    """A seed agent that takes no image, exported: empty CompressAI ``results`` (nothing was
    measured) and its own figures under ``agent_reported``, one entry per point, with the size of
    its encoding dict as it crossed the process boundary. JSON-safe."""
    reports = [{"params": values.format_params(p.params), **_report_json(p.agent_report),
                "encoding_data_bytes": p.agent_report.encoding_data_bytes} for p in exp.result.points]
    return json_safe({
        "name": exp.agent.name,
        "description": f"codecbench {exp.experiment_id}: {exp.agent.name}, a seed agent that takes no image: "
                       "the figures are the agent's own (agent-reported, NOT measured by codecbench); "
                       "encoding_data_bytes is the size of its encoding dict as it crossed the process boundary",
        "results": {},
        "agent_reported": reports,
    })


__all__ = [
    "BD_METHOD", "BD_METRICS", "MEANS", "MIN_BD_POINTS", "MS_SSIM", "POOLED", "PSNR", "BdRate", "BdRateRow", "Curve",
    "DifferentDatasets", "ErrorGroup", "NotComputable", "RdPoint", "agent_reported_results", "bd_rate",
    "bd_rate_table", "compressai_results", "error_location", "group_errors", "json_safe", "ms_ssim_db",
    "psnr_convention", "rd_plot",
]
