"""Runs the benchmark: ``python -m bench [--quick] [--only overhead,transfer] [--profile auto|always|never]``.

Runs the benchmark figures of issue 7, and issue 10's CLI start, in order and writes
``bench/results.json`` and ``bench/RESULTS.md`` (after every figure, so an interrupted run still
leaves what it measured).
Each figure runs under a time limit; a figure that fails is reported as not available with the
reason, and the suite goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

from bench import batch, cli_start, harness, overhead, real_work, report, scale, throughput, transfer, warm_start
from bench.harness import BenchContext, Sizes
from bench.report import Figure
from codecbench import logs

MODULES: tuple[ModuleType, ...] = (overhead, real_work, throughput, transfer, scale, warm_start, cli_start, batch)
FIGURES: dict[str, ModuleType] = {m.__name__.rsplit(".", 1)[1]: m for m in MODULES}
OUT_DIR = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="codecbench benchmark suite (issue 7)")
    parser.add_argument("--quick", action="store_true", help="shrink every N (development; figures are indicative)")
    parser.add_argument("--only", default="", help=f"comma-separated figures to run: {', '.join(FIGURES)}")
    parser.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                        help="cProfile passes of the services: where a target is missed and for the scale "
                        "figure (auto, the default), for every figure that has a workload to profile (always), "
                        "or none (never)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where results.json and RESULTS.md go")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the scratch directory (logs, profiles)")
    args = parser.parse_args(argv)
    unknown = [f for f in args.only.split(",") if f and f not in FIGURES]
    if unknown:
        parser.error(f"--only: unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    return args


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run_figure(ctx: BenchContext, module: ModuleType) -> Figure:
    """One figure under the suite's time limit; a failure becomes a not-available figure."""
    runner: Callable[[BenchContext], Awaitable[Figure]] = module.run
    ctx.commands = []
    ctx.figure_timeout_s = module.TIMEOUT_S * ctx.sizes.timeout_scale
    start = time.perf_counter()
    try:
        async with asyncio.timeout(ctx.figure_timeout_s):
            fig = await runner(ctx)
    except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the others
        reason = "timed out" if isinstance(exc, TimeoutError) else "failed"
        fig = Figure(module.__name__.rsplit(".", 1)[1], module.NUMBER, module.TITLE, available=False,
                     unavailable=f"{reason} after {time.perf_counter() - start:.0f} s: {type(exc).__name__}: {exc}")
    fig.commands = list(ctx.commands)
    fig.wall_s = time.perf_counter() - start
    return fig


async def run_suite(args: argparse.Namespace, argv: list[str]) -> int:
    sizes = Sizes.quick() if args.quick else Sizes()
    tmp = Path(tempfile.mkdtemp(prefix="codecbench-bench-"))
    ctx = BenchContext(sizes=sizes, quick=args.quick, tmp=tmp, profile=args.profile)
    selected = [FIGURES[name] for name in (args.only.split(",") if args.only else FIGURES) if name]
    invocation = shlex.join([".venv/bin/python", "-m", "bench", *argv])
    run: dict[str, object] = {
        "command": invocation,
        "quick": args.quick,
        "machine": harness.machine_info(),
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items()},
        "how_to_run": [
            "make bench                      # = .venv/bin/python -m bench (full suite, about 10 min on 2 cores)",
            ".venv/bin/python -m bench --quick                 # every N shrunk, a few minutes",
            ".venv/bin/python -m bench --only transfer,scale   # some figures",
            ".venv/bin/python -m bench --profile always        # profiling passes for every figure that has one",
        ],
    }
    run["date"] = run["machine"]["date"]  # type: ignore[index]
    figures: list[Figure] = []
    start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for module in selected:
            _progress(f"figure {module.NUMBER}: {module.TITLE}")
            fig = await _run_figure(ctx, module)
            figures.append(fig)
            _progress(f"figure {module.NUMBER} done in {fig.wall_s:.0f} s"
                      + ("" if fig.available else f" — NOT AVAILABLE: {fig.unavailable}"))
            run["wall_s"] = time.perf_counter() - start
            run["machine"]["load average at end (1/5/15 min)"] = " / ".join(  # type: ignore[index]
                f"{v:.2f}" for v in os.getloadavg()
            )
            report.write_json(args.out_dir / "results.json", run, figures)
            report.write_markdown(args.out_dir / "RESULTS.md", run, figures)
    finally:
        leftovers = harness.kill_leftovers()
        if leftovers:
            _progress(f"killed leftover child processes {leftovers}")
        if args.keep_tmp:
            _progress(f"scratch directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    _progress(f"wrote {args.out_dir / 'RESULTS.md'} and results.json in {time.perf_counter() - start:.0f} s")
    return 0


async def _cancellable(args: argparse.Namespace, argv: list[str]) -> int:
    """Runs the suite; SIGTERM and SIGINT cancel it, so every ``finally`` runs and stops the children
    (SIGTERM's default action would end the process at once and leave them running)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await run_suite(args, argv)
    except asyncio.CancelledError:
        _progress("interrupted: child processes stopped")
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logs.configure("warning")
    return asyncio.run(_cancellable(args, argv))


if __name__ == "__main__":
    sys.exit(main())
