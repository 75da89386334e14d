"""``python -m orchestrator_svc`` / ``codecbench-orchestrator``: the service, and its two tools.

::

    codecbench-orchestrator [--host H --port P --data-dir D --database-url URL --tls-cert C --tls-key K
                             --tls-ca CA --metrics-port M ...]
    codecbench-orchestrator token create NAME [--admin] [--data-dir D | --database-url URL]
    codecbench-orchestrator certs DIR [--host NAME ...]
    codecbench-orchestrator gc [--data-dir D | --database-url URL]

``--database-url`` (alias ``--store-url``; or ``--database-url-file PATH``, or the environment
variable ``CODECBENCH_DATABASE_URL``, which keep a password off the command line) is a SQLAlchemy
URL: default the SQLite file in the data directory; ``postgresql+psycopg://USER:PASSWORD@HOST/DB``
for PostgreSQL, where orchestrators sharing the database run active-standby
(:mod:`orchestrator_svc.leadership`). The service runs until SIGINT
or SIGTERM; a leader that loses the database's leader lock exits with status 1 (to be restarted as a
standby). ``token create`` prints a new API token once (only its
hash is stored). ``certs`` writes a private CA and certificates for a quick start with mutual TLS.
``gc`` removes blobs no dataset or experiment references, and temporary files of interrupted writes
(the service does it at every start too); run it with the service stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from codecbench import certs, logs, rpc, telemetry
from codecbench.blobs import BlobStore
from orchestrator_svc.disk import DataDirBusy, collect_garbage, lock_data_dir, unlock_data_dir
from orchestrator_svc.leadership import Leadership
from orchestrator_svc.server import OrchestratorConfig, create_token, private_dir, private_file, start_orchestrator
from orchestrator_svc.store import Store

DATABASE_URL_ENV = "CODECBENCH_DATABASE_URL"


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    urls = parser.add_mutually_exclusive_group()
    urls.add_argument("--database-url", "--store-url", dest="store_url", default="",
                      help="SQLAlchemy URL of the store: default the SQLite file in --data-dir; "
                      "postgresql+psycopg://USER:PASSWORD@HOST/DB for PostgreSQL (orchestrators on one "
                      f"database run active-standby). A password here shows in the process list: prefer "
                      f"--database-url-file or ${DATABASE_URL_ENV}")
    urls.add_argument("--database-url-file", type=Path,
                      help="a file holding the database URL (a mounted Secret): keeps the password off the "
                      "command line")


def resolve_database_url(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sets ``args.store_url`` from ``--database-url``, else ``--database-url-file`` (its content,
    surrounding whitespace stripped), else the environment variable ``CODECBENCH_DATABASE_URL``;
    empty: the SQLite file in the data directory. Exits with a usage error on an unreadable or
    empty file."""
    if args.database_url_file is not None:
        try:
            args.store_url = args.database_url_file.read_text().strip()
        except OSError as exc:
            parser.error(f"--database-url-file: cannot read {args.database_url_file}: {exc.strerror}")
        if not args.store_url:
            parser.error(f"--database-url-file: {args.database_url_file} is empty")
    elif not args.store_url:
        args.store_url = os.environ.get(DATABASE_URL_ENV, "").strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The orchestrator's command line, checked (exits with a usage error on a problem)."""
    parser = argparse.ArgumentParser(prog="codecbench-orchestrator", description="codecbench orchestrator service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one and prints it")
    parser.add_argument("--data-dir", type=Path, default=Path(".codecbench"), help="SQLite store and blobs")
    _add_database_url(parser)
    parser.add_argument("--expected-build", default="", help="build id workers must run (default: this code's)")
    parser.add_argument("--heartbeat-timeout-s", type=float, default=15.0, help="silence after which a worker is LOST")
    parser.add_argument("--lost-worker-ttl-s", type=float, default=3600.0,
                        help="a LOST worker leaves the worker list this long after it was lost (default 3600)")
    parser.add_argument("--enroll-token-file", type=Path,
                        help="enrollment secret workers register with (default DATA_DIR/enroll.token, made if missing)")
    parser.add_argument("--admin-token-file", type=Path,
                        help="make an admin token into this 0600 file if it is missing, and accept the token in it")
    rpc.add_tls_arguments(parser)
    rpc.add_health_port_argument(parser)
    telemetry.add_metrics_arguments(parser)
    parser.add_argument("--owner-weight", action="append", default=[], metavar="NAME=WEIGHT",
                        help="experiments per fair-share turn of user NAME (default 1; repeatable)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    resolve_database_url(parser, args)
    try:
        args.owner_weights = {name: int(weight) for name, _, weight in
                              (item.partition("=") for item in args.owner_weight)}
    except ValueError:
        parser.error("--owner-weight takes NAME=WEIGHT with an integer weight")
    if any(weight < 1 for weight in args.owner_weights.values()):
        parser.error("--owner-weight: a weight is at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_ca and not args.tls_cert:
        parser.error("--tls-ca needs --tls-cert and --tls-key (the service's own certificate)")
    try:
        rpc.check_listen_security(args.host, rpc.tls_from_args(args), args.insecure)
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def serve(args: argparse.Namespace) -> None:
    """Runs the orchestrator until SIGINT or SIGTERM."""
    handle = await start_orchestrator(
        OrchestratorConfig(
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            store_url=args.store_url,
            expected_build=args.expected_build,
            heartbeat_timeout_s=args.heartbeat_timeout_s,
            lost_worker_ttl_s=args.lost_worker_ttl_s,
            tls=rpc.tls_from_args(args),
            insecure=args.insecure,
            enroll_token_file=args.enroll_token_file,
            admin_token_file=args.admin_token_file,
            owner_weights=args.owner_weights,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    )
    probes = await rpc.start_health_server(args.host, args.health_port, handle.health) if args.health_port else None
    print(f"codecbench orchestrator listening on {handle.address}", flush=True)
    if handle.metrics is not None:
        print(f"codecbench orchestrator metrics at {handle.metrics.url}", flush=True)
    waits: list[asyncio.Task[object]] = [asyncio.create_task(rpc.wait_for_termination())]
    if handle.leadership is not None:
        waits.append(asyncio.create_task(handle.leadership.lost.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stepped_down = handle.leadership is not None and handle.leadership.lost.is_set()
    for task in waits:
        task.cancel()
    await handle.stop()
    if probes:
        await probes.stop(0)
    if stepped_down:
        raise SystemExit(1)  # its supervisor restarts it, as a standby


def token_main(argv: list[str]) -> int:
    """``token create NAME [--admin]``: prints a new token once."""
    parser = argparse.ArgumentParser(prog="codecbench-orchestrator token", description="API tokens of users")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a token for a user and print it (once)")
    create.add_argument("name", help="the user's name")
    create.add_argument("--admin", action="store_true", help="role admin: sees everything, shares datasets")
    create.add_argument("--data-dir", type=Path, default=Path(".codecbench"), help="the orchestrator's data dir")
    _add_database_url(create)
    args = parser.parse_args(argv)
    resolve_database_url(create, args)
    if not args.store_url:
        private_dir(args.data_dir)
        private_file(args.data_dir / "codecbench.db")
    store = Store(args.store_url or f"sqlite:///{args.data_dir / 'codecbench.db'}")
    try:
        token = create_token(store, args.name, args.admin)
    except ValueError as exc:
        parser.error(str(exc))
    finally:
        store.close()
    print(token)
    return 0


def gc_main(argv: list[str]) -> int:
    """``gc``: removes unreferenced blobs and leftover temporary files; prints what it freed."""
    parser = argparse.ArgumentParser(prog="codecbench-orchestrator gc",
                                     description="remove blobs no dataset or experiment references (service stopped)")
    parser.add_argument("--data-dir", type=Path, default=Path(".codecbench"), help="the orchestrator's data dir")
    _add_database_url(parser)
    args = parser.parse_args(argv)
    resolve_database_url(parser, args)
    if not (args.data_dir / "blobs").is_dir():
        parser.error(f"{args.data_dir} holds no blobs folder: not an orchestrator data dir")
    try:
        lock = lock_data_dir(args.data_dir, "gc")
    except DataDirBusy as exc:
        print(f"codecbench-orchestrator gc: {exc}", file=sys.stderr)
        return 1
    try:
        store = Store(args.store_url or f"sqlite:///{args.data_dir / 'codecbench.db'}")
        # On PostgreSQL the orchestrators do not lock the data directory: gc takes their leader lock
        # instead, so that it never runs beside one (it would remove blobs a new experiment needs).
        leadership = Leadership(store) if store.is_postgresql else None
        try:
            if leadership is not None and not leadership.try_acquire():
                print("codecbench-orchestrator gc: an orchestrator leads this database; stop it first", file=sys.stderr)
                return 1
            collected = collect_garbage(store, BlobStore(args.data_dir / "blobs"))
        finally:
            if leadership is not None:
                leadership.release()
            store.close()
    finally:
        unlock_data_dir(lock)
    print(f"removed {collected.blobs} unreferenced blob(s) and {collected.temp_files} temporary file(s), "
          f"{collected.bytes_freed} bytes freed")
    return 0


def certs_main(argv: list[str]) -> int:
    """``certs DIR [--host NAME ...]``: a private CA and certificates for mutual TLS."""
    parser = argparse.ArgumentParser(
        prog="codecbench-orchestrator certs",
        description="write a private CA (ca.pem, ca-key.pem) and certificates signed by it: orchestrator, worker and "
        "client (each NAME.pem with NAME-key.pem), valid for 127.0.0.1, localhost and every --host",
    )
    parser.add_argument("dir", type=Path, help="folder to write into (made 0700; existing files are refused)")
    parser.add_argument("--host", action="append", default=[], help="extra DNS name or IP address (repeatable)")
    parser.add_argument("--days", type=int, default=365, help="validity in days")
    args = parser.parse_args(argv)
    try:
        written = certs.make_quickstart(args.dir, args.host, args.days)
    except FileExistsError as exc:
        parser.error(f"{exc.filename} exists; choose an empty folder")
    for path in written:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``codecbench-orchestrator [token|certs]``: runs the subcommand or serves; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_main(argv[1:])
    if argv[:1] == ["certs"]:
        return certs_main(argv[1:])
    if argv[:1] == ["gc"]:
        return gc_main(argv[1:])
    args = parse_args(argv)
    logs.configure(args.log_level)
    return rpc.run_service("codecbench-orchestrator", serve(args))


if __name__ == "__main__":
    sys.exit(main())
