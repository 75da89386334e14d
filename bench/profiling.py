"""Profiling passes: run a figure's workload once more with the services under cProfile (every
thread, see :mod:`bench.threadprof`), and summarise where their time went. Start-up imports and
event-loop plumbing are left out of the cumulative table; idle waits out of the self-time table.

cProfile counts a coroutine's time only while it runs (each resume is a call, each ``await`` that
suspends is a return), so cumulative times of request handlers are real CPU/wall time spent in
them, not time spent waiting for the network.
"""

from __future__ import annotations

import asyncio
import pstats
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.harness import REPO, BenchContext, System, running_system
from bench.report import Figure, ProfileSummary

# Event-loop, thread and import plumbing: their cumulative time is "everything", which says nothing.
_PLUMBING = ("/asyncio/", "/selectors.py", "/runpy.py", "/cProfile.py", "/threading.py", "/concurrent/futures/",
             "bench/threadprof.py", "<frozen", "<string>")
_PLUMBING_NAMES = ("<built-in method builtins.exec>", "<method 'run' of '_contextvars.Context' objects>",
                   "<built-in method builtins.__import__>", "<built-in method _imp.create_dynamic>")
# Idle waits, not work.
_IDLE = ("<method 'poll' of 'select.epoll' objects>", "<method 'acquire' of '_thread.lock' objects>",
         "<built-in method time.sleep>", "<method 'control' of 'select.kqueue' objects>",
         "<method 'get' of '_queue.SimpleQueue' objects>")


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    for marker in ("site-packages/", f"{REPO}/", "lib/python3."):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({name})"


def summarize(path: Path, process: str, command: str, top: int = 15) -> ProfileSummary | None:
    """The top functions of a ``.prof`` file; None when the file was not written (process killed)."""
    if not path.is_file():
        return None
    stats = pstats.Stats(str(path))
    rows = []
    for func, (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((func, _label(func), ncalls, tottime, cumtime))
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    cumulative = [
        (label, n, round(tt, 4), round(ct, 4)) for func, label, n, tt, ct in sorted(rows, key=lambda r: -r[4])
        if not any(p in func[0] for p in _PLUMBING) and label not in _PLUMBING_NAMES and func[2] != "<module>"
        and label not in _IDLE
    ][:top]
    own = [
        (label, n, round(tt, 4), round(ct, 4)) for _, label, n, tt, ct in sorted(rows, key=lambda r: -r[3])
        if label not in _IDLE
    ][:top]
    functions = {label: (n, tt, ct) for _, label, n, tt, ct in rows}
    return ProfileSummary(process, path.name, command, total, cumulative, own, functions)


async def profiled_pass(
    ctx: BenchContext, name: str, workload: Callable[[System], Awaitable[None]], slots: int = 1
) -> list[ProfileSummary]:
    """Starts a system with its services under cProfile, runs ``workload`` on it, stops it (which
    writes the profiles) and returns their summaries.

    Raises:
        RuntimeError: the pass failed (the caller reports it; the figure's own numbers stand).
    """
    holder: list[System] = []
    async with running_system(ctx, name, slots=slots, profile=True) as system:
        holder.append(system)
        for service in system.services:  # start-up (imports, torch) stays out of the profiles
            service.send_signal(signal.SIGUSR1)  # bench.threadprof --on-signal starts profiling
        await asyncio.sleep(0.2)
        await workload(system)
    system = holder[0]
    summaries = []
    for service in system.services:
        process = "orchestrator" if service is system.orchestrator else "worker"
        summary = summarize(system.data_dir / f"{process}.prof", process, ctx.record(service.argv))
        if summary is not None:
            summaries.append(summary)
    return summaries


async def profile_into(
    fig: Figure, ctx: BenchContext, name: str, workload: Callable[[System], Awaitable[None]], slots: int = 1
) -> None:
    """Runs :func:`profiled_pass` and adds its summaries to ``fig``; a failed pass becomes a note
    instead of losing the figure's measurements."""
    try:
        fig.profiles += await profiled_pass(ctx, name, workload, slots)
    except Exception as exc:  # noqa: BLE001 - the profile is evidence, not the figure
        fig.notes.append(f"The profiling pass failed: {type(exc).__name__}: {exc}")
