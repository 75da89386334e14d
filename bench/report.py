"""What a benchmark figure is made of, and the writers of ``bench/results.json`` and ``bench/RESULTS.md``.

A :class:`Figure` holds distributions (samples with their unit), ratios against baselines measured
in the same run (with the target, when the issue sets one), scalar values, notes, the exact
commands used and, where a profiling pass ran, its summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Distribution:
    """Samples of one quantity, e.g. the wall time of an experiment in ms.

    Attributes:
        name: what was measured.
        unit: unit of every sample ("ms", "s", "MB/s", ...).
        samples: the raw measurements, in the order they were taken.
    """

    name: str
    unit: str
    samples: list[float]

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100, linear interpolation); NaN without samples."""
        return float(np.percentile(self.samples, q)) if self.samples else math.nan

    @property
    def n(self) -> int:
        return len(self.samples)

    def summary(self) -> dict[str, float | int]:
        """N, median, p95, p99, quartiles, min and max, in ``unit``."""
        return {
            "n": self.n,
            "median": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "p25": self.percentile(25),
            "p75": self.percentile(75),
            "min": min(self.samples) if self.samples else math.nan,
            "max": max(self.samples) if self.samples else math.nan,
        }

    def to_json(self, keep_samples: int = 2000) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "unit": self.unit, **self.summary()}
        # The scale figure has 10,000 samples: keep the summary, not the whole list.
        out["samples"] = self.samples if self.n <= keep_samples else None
        return out


@dataclass
class Ratio:
    """A system figure divided by its baseline, both measured in this run.

    Attributes:
        name: e.g. "system / in-process wall time".
        value: the ratio (for paired runs: the median of the per-round ratios).
        spread: (min, max) of the per-round ratios, when the runs were paired.
        target: e.g. "<= 1.10" or ">= 0.80"; empty when the issue sets none.
        how: how the ratio was formed, in words.
    """

    name: str
    value: float
    spread: tuple[float, float] | None = None
    target: str = ""
    how: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when there is no target."""
        if not self.target or math.isnan(self.value):
            return None if not self.target else False
        op, threshold = self.target.split()
        limit = float(threshold)
        return self.value <= limit if op == "<=" else self.value >= limit

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value, "spread_min_max": list(self.spread) if self.spread else None,
            "target": self.target or None, "met": self.met, "how": self.how,
        }


@dataclass
class ProfileSummary:
    """Top functions of one profiled service process (cProfile), times in s.

    Attributes:
        process: "orchestrator" or "worker".
        path: the ``.prof`` file.
        command: how the process was started.
        total_s: total profiled time.
        by_cumulative: (function, calls, self s, cumulative s), event-loop plumbing left out.
        by_self: the same rows, ordered by self time, idle waits left out.
        functions: every function: label -> (calls, self s, cumulative s); not written to JSON.
    """

    process: str
    path: str
    command: str
    total_s: float
    by_cumulative: list[tuple[str, int, float, float]]
    by_self: list[tuple[str, int, float, float]]
    functions: dict[str, tuple[int, float, float]] = field(default_factory=dict, repr=False)

    def find(self, *fragments: str) -> tuple[int, float, float]:
        """(calls, self s, cumulative s) of the function whose label contains every fragment (the one
        with the largest cumulative time); zeros when none does."""
        rows = [v for k, v in self.functions.items() if all(f in k for f in fragments)]
        return max(rows, key=lambda r: r[2], default=(0, 0.0, 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.process, "path": self.path, "command": self.command, "total_s": self.total_s,
            "by_cumulative": [list(r) for r in self.by_cumulative], "by_self": [list(r) for r in self.by_self],
        }


@dataclass
class Figure:
    """One figure of the suite.

    Attributes:
        key: short id ("overhead", "real_work", ...).
        number: the figure's number in issue 7 (1..6).
        title: one line.
        available: False when the figure could not be measured (``unavailable`` says why).
        distributions: measured samples.
        ratios: system vs baseline, with targets.
        values: scalar results (rates, sizes), name -> (value, unit).
        headline: names of ``values`` shown in the headline table next to the ratios.
        headline_notes: lines for the headline table, e.g. a part of the figure that was not available.
        notes: what a reader must know to interpret the numbers.
        findings: where the time goes and what would fix it (from the breakdown rows and the profiles).
        commands: every command line this figure started.
        profiles: summaries of profiling passes.
        wall_s: how long the figure took.
    """

    key: str
    number: int
    title: str
    available: bool = True
    unavailable: str = ""
    distributions: list[Distribution] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    values: dict[str, tuple[float, str]] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)
    headline_notes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    profiles: list[ProfileSummary] = field(default_factory=list)
    wall_s: float = 0.0

    def add(self, name: str, unit: str, samples: Sequence[float]) -> Distribution:
        dist = Distribution(name, unit, [float(s) for s in samples])
        self.distributions.append(dist)
        return dist

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "number": self.number, "title": self.title, "available": self.available,
            "unavailable": self.unavailable or None, "wall_s": self.wall_s,
            "distributions": [d.to_json() for d in self.distributions],
            "ratios": [r.to_json() for r in self.ratios],
            "values": {k: {"value": v, "unit": u} for k, (v, u) in self.values.items()},
            "headline": self.headline, "headline_notes": self.headline_notes,
            "notes": self.notes, "findings": self.findings, "commands": self.commands,
            "profiles": [p.to_json() for p in self.profiles],
        }


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Median and (min, max) of per-round ratios of interleaved runs (round i of A over round i of B)."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=False) if b > 0]
    if not ratios:
        return math.nan, (math.nan, math.nan)
    return float(np.median(ratios)), (min(ratios), max(ratios))


# -- writers ---------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, run: dict[str, Any], figures: Sequence[Figure]) -> None:
    """Writes ``results.json``: the run's metadata and every figure."""
    document = {**run, "figures": [f.to_json() for f in figures]}
    path.write_text(json.dumps(_clean(document), indent=2) + "\n")


def _num(value: float, digits: int = 3) -> str:
    """A number for a table: 3 significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _target_cell(ratio: Ratio) -> str:
    if not ratio.target:
        return "— (no target)"
    return f"{ratio.target}: **{'met' if ratio.met else 'MISSED'}**"


def _distribution_table(dists: Sequence[Distribution]) -> list[str]:
    lines = [
        "| quantity | unit | N | median | p95 | p99 | IQR (p25–p75) | min–max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in dists:
        s = d.summary()
        lines.append(
            f"| {d.name} | {d.unit} | {s['n']} | {_num(s['median'])} | {_num(s['p95'])} | {_num(s['p99'])} "
            f"| {_num(s['p25'])}–{_num(s['p75'])} | {_num(s['min'])}–{_num(s['max'])} |"
        )
    return lines


def _ratio_table(ratios: Sequence[Ratio]) -> list[str]:
    lines = ["| ratio | value | per-round min–max | target | how |", "|---|---|---|---|---|"]
    for r in ratios:
        spread = f"{_num(r.spread[0])}–{_num(r.spread[1])}" if r.spread else "—"
        lines.append(f"| {r.name} | **{_num(r.value)}** | {spread} | {_target_cell(r)} | {r.how} |")
    return lines


def _profile_lines(profile: ProfileSummary) -> list[str]:
    lines = [
        f"Profile of the **{profile.process}** ({profile.total_s:.1f} s profiled), started as "
        f"`{profile.command}`; file `{profile.path}`.",
        "",
        "| by cumulative time | calls | self s | cumulative s |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{f}` | {c} | {s:.3f} | {cum:.3f} |" for f, c, s, cum in profile.by_cumulative]
    lines += ["", "| by self time | calls | self s | cumulative s |", "|---|---|---|---|"]
    lines += [f"| `{f}` | {c} | {s:.3f} | {cum:.3f} |" for f, c, s, cum in profile.by_self]
    return lines


def markdown(run: dict[str, Any], figures: Sequence[Figure]) -> str:
    """The text of ``RESULTS.md``."""
    machine = run["machine"]
    out = [
        "# codecbench benchmarks",
        "",
        f"Generated by `{run['command']}` on {run['date']} in {run['wall_s']:.0f} s"
        + (" (**quick mode: every N shrunk, figures are indicative only**)." if run["quick"] else "."),
        "",
        "Every figure is a ratio or a distribution measured in this one run; each baseline ran interleaved "
        "with the system (A, B, A, B, ...) on the same images with the same agent code. The machine is "
        "shared with other work, so absolute times are noisy and not comparable across runs; the ratios are "
        "the result.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {k} | {v} |" for k, v in machine.items()]
    out += ["", "## Headline", "", "| figure | ratio or value | value | target |", "|---|---|---|---|"]
    for fig in figures:
        if not fig.available:
            out.append(f"| {fig.number}. {fig.title} | not available: {fig.unavailable} | — | — |")
        for r in fig.ratios:
            out.append(f"| {fig.number}. {fig.title} | {r.name} | **{_num(r.value)}** | {_target_cell(r)} |")
        for line in fig.headline_notes:
            out.append(f"| {fig.number}. {fig.title} | {line} | — | — |")
        for name in fig.headline:
            if name in fig.values:
                value, unit = fig.values[name]
                out.append(f"| {fig.number}. {fig.title} | {name} | **{_num(value)}** {unit} | — |")
    for fig in figures:
        out += ["", f"## {fig.number}. {fig.title}", ""]
        if not fig.available:
            out += [f"**Not available**: {fig.unavailable}", ""]
        if fig.distributions:
            out += _distribution_table(fig.distributions) + [""]
        if fig.ratios:
            out += _ratio_table(fig.ratios) + [""]
        if fig.values:
            out += ["| value | | unit |", "|---|---|---|"]
            out += [f"| {k} | **{_num(v)}** | {u} |" for k, (v, u) in fig.values.items()]
            out.append("")
        for note in fig.notes:
            out.append(f"- {note}")
        if fig.notes:
            out.append("")
        if fig.findings:
            out += ["**Where the time goes**", ""] + [f"- {f}" for f in fig.findings] + [""]
        for profile in fig.profiles:
            out += _profile_lines(profile) + [""]
        if fig.commands:
            out += ["Commands:", "", "```"] + fig.commands + ["```"]
        out.append(f"\n_Figure wall time: {fig.wall_s:.0f} s._")
    out += ["", "## How to run", "", "```", *run["how_to_run"], "```", ""]
    return "\n".join(out)


def write_markdown(path: Path, run: dict[str, Any], figures: Sequence[Figure]) -> None:
    path.write_text(markdown(run, figures))
