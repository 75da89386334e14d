"""``python -m bench.threadprof -o FILE -m MODULE [ARGS...]``: cProfile for every thread of a program.

``python -m cProfile`` profiles the main thread only, and the worker computes its metrics in
``asyncio.to_thread`` threads, which it would not see. This runner runs ``MODULE`` as
``__main__`` and profiles its main thread and every thread started through ``threading`` once
profiling is on; when the program ends (a service ends on SIGTERM) it merges them into one pstats
file. ``--on-signal`` starts profiling at the first SIGUSR1 instead of at once, so that a
service's start-up (imports, torch) stays out of the profile of the workload.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import runpy
import signal
import sys
import threading
from typing import Any


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``-o FILE -m MODULE`` then the module's own arguments, untouched (argparse would claim its ``--port``)."""
    if "-m" not in argv or argv.index("-m") + 1 >= len(argv):
        raise SystemExit("usage: python -m bench.threadprof -o FILE -m MODULE [ARGS...]")
    split = argv.index("-m") + 2
    parser = argparse.ArgumentParser(prog="python -m bench.threadprof")
    parser.add_argument("-o", dest="outfile", required=True, help="pstats file to write")
    parser.add_argument("--on-signal", action="store_true", help="start profiling at the first SIGUSR1")
    parser.add_argument("-m", dest="module", required=True, help="module to run as __main__")
    args = parser.parse_args(argv[:split])
    args.args = argv[split:]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    thread_profilers: list[cProfile.Profile] = []
    lock = threading.Lock()
    main_profiler = cProfile.Profile()
    on = threading.Event()

    def start_thread_profiler(frame: Any, event: str, arg: Any) -> None:
        # Called once, on the new thread's first event: hand the thread over to a real profiler.
        sys.setprofile(None)
        if not on.is_set():
            return
        profiler = cProfile.Profile()
        with lock:
            thread_profilers.append(profiler)
        profiler.enable()

    def switch_on(*_: Any) -> None:
        if not on.is_set():
            on.set()
            main_profiler.enable()

    threading.setprofile(start_thread_profiler)
    sys.argv = [args.module, *args.args]
    code = 0
    if args.on_signal:
        signal.signal(signal.SIGUSR1, switch_on)
    else:
        switch_on()
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        main_profiler.disable()
        threading.setprofile(None)
        stats = pstats.Stats(main_profiler)
        with lock:
            for profiler in thread_profilers:
                stats.add(profiler)
        stats.dump_stats(args.outfile)
    return code


if __name__ == "__main__":
    sys.exit(main())
