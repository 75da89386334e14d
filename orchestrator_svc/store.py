"""The orchestrator's durable store: experiments, their events, datasets, and who owns what (SQLAlchemy 2).

SQLite is the embedded default (one file under the data directory, WAL mode); PostgreSQL
(``postgresql+psycopg://USER:PASSWORD@HOST/DB``, psycopg 3) is the store of a fleet, where a standby
orchestrator shares the database (:mod:`orchestrator_svc.leadership`). One code path serves both;
where they differ it says so: ``INSERT OR IGNORE`` is SQLite's spelling of PostgreSQL's ``ON
CONFLICT DO NOTHING``; ``FOR UPDATE [SKIP LOCKED]`` locks rows on PostgreSQL and is left out on
SQLite, where one orchestrator owns the database (the data directory's lock); PostgreSQL enforces
``VARCHAR(n)`` lengths, so each column is at least as long as the request limit of what goes into
it (:mod:`codecbench.validation`), and rejects NUL characters, which validation refuses before
anything is stored. The schema is created and migrated by a versioned list of migrations
(:data:`MIGRATIONS`), recorded in ``schema_migrations``; on PostgreSQL two orchestrators starting
at once migrate one after the other (an advisory lock).

Protobuf messages that are read whole (specs, results, errors, events) are stored as their
serialized bytes; what is filtered or sorted on has its own column.

Access (migration 2): API tokens by their SHA-256 with the user's name and role; per-worker
credentials by their SHA-256, bound to the worker id; each experiment's owner (also inside its
spec, ``Experiment.owner``); blob owners (a blob is content-addressed, so several users may own
it; owner ``*`` marks a blob of a shared dataset). A dataset's owner and ``shared`` flag live in its
``Dataset`` message. Secrets themselves are never stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.elements import ColumnElement

from codecbench import devices
from codecbench.v1 import errors_pb2, experiment_pb2, orchestrator_pb2

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    # Insertion order: "newest first" and page tokens use it. BIGSERIAL on PostgreSQL (a 32-bit
    # SERIAL runs out); INTEGER on SQLite, where only an INTEGER primary key is the rowid.
    Column("row", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("experiment_id", String(64), nullable=False, unique=True),
    # Unused since migration 5 (always NULL): request ids are per owner, in ``request_ids``.
    Column("request_id", String(200), unique=True),
    Column("state", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("device", String(16), nullable=False),
    Column("worker_id", String(64), nullable=False, default=""),
    Column("create_time", Float, nullable=False),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("last_sequence", Integer, nullable=False, default=0),
    # codecbench.v1.Experiment without result/error/state fields: the immutable request.
    Column("spec", LargeBinary, nullable=False),
    Column("result", LargeBinary),
    Column("error", LargeBinary),
    # Added by migration 3: create_time + queue_timeout_s, when the experiment has one; moved to
    # (requeue time + queue_timeout_s) when it goes back to the queue after a lost attempt.
    Column("queue_deadline", Float),
    # Added by migration 4: the result-cache key (orchestrator_svc.cache), NULL when not cacheable.
    Column("cache_key", String(64), index=True),
    # Added by migration 5: sent with no_cache; its outcome may stand for others only if SUCCEEDED.
    Column("no_cache", Boolean),
    Index("ix_experiments_queue", "state", "create_time"),
)

experiment_labels = Table(
    "experiment_labels",
    metadata,
    Column("experiment_id", String(64), ForeignKey("experiments.experiment_id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", String(1000), nullable=False),
    Index("ix_labels_key_value", "key", "value"),
)

events = Table(
    "events",
    metadata,
    Column("experiment_id", String(64), ForeignKey("experiments.experiment_id"), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("digest", String(64), nullable=False, index=True),
    Column("builtin", Boolean, nullable=False, default=False),
    Column("create_time", Float, nullable=False),
    # codecbench.v1.Dataset
    Column("data", LargeBinary, nullable=False),
)


api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("create_time", Float, nullable=False),
)

worker_credentials = Table(
    "worker_credentials",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("credential_sha256", String(64), nullable=False, unique=True),
    Column("create_time", Float, nullable=False),
)

experiment_owners = Table(
    "experiment_owners",
    metadata,
    Column("experiment_id", String(64), ForeignKey("experiments.experiment_id"), primary_key=True),
    Column("owner", String(200), nullable=False, index=True),
)

blob_owners = Table(
    "blob_owners",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("owner", String(200), primary_key=True),
)

# Migration 5: a request id is unique per owner (one user's ids never find, reveal or block another's),
# with a fingerprint of the spec it was first sent with, so that a reuse with other content is refused.
request_ids = Table(
    "request_ids",
    metadata,
    Column("owner", String(200), primary_key=True),
    Column("request_id", String(200), primary_key=True),
    Column("experiment_id", String(64), ForeignKey("experiments.experiment_id"), nullable=False),
    # SHA-256 of the spec (orchestrator_svc.service.spec_fingerprint); NULL for ids stored before migration 5.
    Column("fingerprint", String(64)),
)

# A blob owner that stands for every user (images of a shared dataset).
EVERYONE = "*"

# Added by migration 6 (issue 20): SUCCEEDED experiments an admin made shared result-cache entries,
# whose result every user's identical submission may reuse (orchestrator_svc.cache).
shared_cache_entries = Table(
    "shared_cache_entries",
    metadata,
    Column("experiment_id", String(64), ForeignKey("experiments.experiment_id"), primary_key=True),
    Column("shared_by", String(200), nullable=False),
    Column("share_time", Float, nullable=False),
)


def _migration_1(engine: Engine) -> None:
    metadata.create_all(engine, tables=[experiments, experiment_labels, events, datasets])


def _migration_2(engine: Engine) -> None:
    metadata.create_all(engine, tables=[api_tokens, worker_credentials, experiment_owners, blob_owners])


def _migration_3(engine: Engine) -> None:
    # Issue 14: the Unix time at which a QUEUED experiment no worker can run fails (NULL: never).
    # A store made fresh has it already: migration 1 creates the table from today's definition.
    if "queue_deadline" not in {c["name"] for c in inspect(engine).get_columns("experiments")}:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE experiments ADD COLUMN queue_deadline FLOAT"))


def _migration_4(engine: Engine) -> None:
    # Issue 20: the result-cache key of each experiment, indexed for the lookup at creation.
    if "cache_key" not in {c["name"] for c in inspect(engine).get_columns("experiments")}:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE experiments ADD COLUMN cache_key VARCHAR(64)"))
            conn.execute(text("CREATE INDEX ix_experiments_cache_key ON experiments (cache_key)"))


def _migration_5(engine: Engine) -> None:
    # Issue 20: request ids move from the globally unique experiments.request_id (SQLite cannot drop a
    # column's UNIQUE) to request_ids, keyed by (owner, request_id); the old column stays NULL from now on.
    metadata.create_all(engine, tables=[request_ids])
    with engine.begin() as conn:
        if "no_cache" not in {c["name"] for c in inspect(engine).get_columns("experiments")}:
            conn.execute(text("ALTER TABLE experiments ADD COLUMN no_cache BOOLEAN"))
        copy = ("INTO request_ids (owner, request_id, experiment_id, fingerprint) "
                "SELECT o.owner, e.request_id, e.experiment_id, NULL FROM experiments e "
                "JOIN experiment_owners o ON o.experiment_id = e.experiment_id WHERE e.request_id IS NOT NULL")
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"INSERT OR IGNORE {copy}"))
        else:
            conn.execute(text(f"INSERT {copy} ON CONFLICT DO NOTHING"))
        conn.execute(text("UPDATE experiments SET request_id = NULL"))


# Session-level advisory lock keys (PostgreSQL; any 64-bit numbers the database's other users leave
# alone): one held while migrating, so that two orchestrators starting together do not both create
# the tables; and the leader's (orchestrator_svc.leadership).
MIGRATION_LOCK_KEY = 0x636F_6465_6362_0001
LEADER_LOCK_KEY = 0x636F_6465_6362_0002


def _migration_6(engine: Engine) -> None:
    # Issue 20: shared result-cache entries (an admin's ShareExperiment).
    metadata.create_all(engine, tables=[shared_cache_entries])


# Append-only: (version, function). A released migration is never edited.
MIGRATIONS: list[tuple[int, Callable[[Engine], None]]] = [
    (1, _migration_1), (2, _migration_2), (3, _migration_3), (4, _migration_4), (5, _migration_5),
    (6, _migration_6)]


@dataclass(frozen=True)
class TokenRecord:
    """A stored API token: whose it is and their role (the token itself is not stored)."""

    name: str
    role: str


@dataclass(frozen=True)
class RequestRecord:
    """The experiment an owner's request id created, and the fingerprint of the spec sent with it
    (None for ids stored before migration 5)."""

    experiment_id: str
    fingerprint: str | None


class DuplicateRequest(Exception):
    """The owner already used this request_id; ``record`` names its experiment."""

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(record.experiment_id)
        self.record = record
        self.experiment_id = record.experiment_id


@dataclass(frozen=True)
class QueuedExperiment:
    """A QUEUED experiment as the scheduler picks it: id, the device it asks for, its attempt, and
    for fair share its owner, its run (label ``run``, "" without one) and priority."""

    experiment_id: str
    device: devices.Device.ValueType
    attempt: int
    owner: str = ""
    run: str = ""
    priority: int = 0

@dataclass(frozen=True)
class Append:
    """One event to store (:meth:`Store.append_many`).

    Attributes:
        experiment_id: the experiment the event belongs to.
        event: the event; stored as a copy with ``experiment_id``, ``sequence`` and (if unset) ``time``.
        transition: column values to set on the experiment (state, attempt, worker_id, ...);
            ``result``/``error`` may be protobuf messages.
        only_if_state: store nothing (None) unless the experiment is in one of these states.
        only_if_attempt: likewise unless it is at this attempt (a late event of a lost attempt is dropped).
    """

    experiment_id: str
    event: experiment_pb2.ExperimentEvent
    transition: dict[str, object] | None = None
    only_if_state: Iterable[int] | None = None
    only_if_attempt: int | None = None


@dataclass(frozen=True)
class Dispatched:
    """One experiment of a scheduling round (:meth:`Store.dispatch_many`): it moves to RUNNING on
    ``worker_id`` if it is still QUEUED at ``attempt``."""

    experiment_id: str
    attempt: int
    worker_id: str


# The label whose value groups an owner's experiments into runs (`codecbench run-many --label run=NAME`).
RUN_LABEL = "run"


def one_more_attempt() -> ColumnElement[int]:
    """The ``max_attempts`` column value that gives an experiment back the attempt it was requeued
    with (an attempt a worker's drain stopped on purpose is not counted against the limit)."""
    return experiments.c.max_attempts + 1


def requeued_deadline(now: float) -> ColumnElement[float]:
    """The ``queue_deadline`` column value of an experiment queued again at ``now`` (Unix time): its
    queue timeout (deadline - create time) from ``now``; NULL (no timeout) stays NULL."""
    return experiments.c.queue_deadline - experiments.c.create_time + now


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a committed event survives a crash of the process (not of the OS).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Bounds on a PostgreSQL server that hangs (stopped, or behind a black-holed network) instead of
# refusing: libpq waits forever by default, and the store is called on the service's event loop.
# connect_timeout (s) bounds a new connection; the TCP keepalives (idle 10 s, then 3 probes 5 s apart)
# and tcp_user_timeout (ms of unacknowledged data) make the kernel drop a connection to a vanished
# peer within ~30 s; statement_timeout (ms) makes the server cancel a statement stuck behind a lock.
# None of them helps when the server process itself is stopped (its kernel still acknowledges TCP,
# and a unix socket has no TCP at all): STATEMENT_DEADLINE_S, enforced by the client on every wait
# for the server (_BoundedConnection), does. Normal work is far below all of them: the store's
# statements take milliseconds, its biggest (a scheduling round's claim, an upload's rows, a
# migration of a large table) seconds at most.
STATEMENT_DEADLINE_S = 30.0
POSTGRESQL_CONNECT_ARGS: dict[str, object] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
    "options": "-c statement_timeout=20000",
}


class _BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server ends after STATEMENT_DEADLINE_S: the
    connection is then closed (its state is unknown) and the call fails with OperationalError,
    which SQLAlchemy treats as a disconnect (the pool drops the connection)."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:  # noqa: D102
        try:
            return super().wait(gen, interval, STATEMENT_DEADLINE_S if timeout is None else timeout)
        except psycopg.errors.OperationalError as exc:
            if type(exc).__name__ != "_WaitTimeout":  # psycopg's own (private) class for it
                raise
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the database did not answer within {STATEMENT_DEADLINE_S:g} s; connection closed") from exc


def _bounded_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> _BoundedConnection:
    return _BoundedConnection.connect(*cargs, **cparams)


class Store:
    """Synchronous store; every method is one short transaction (SQLite writes take ~1 ms, PostgreSQL
    over a local socket about as much).

    On PostgreSQL, transactions run at READ COMMITTED (the server's default): every conditional
    transition reads its row ``FOR UPDATE`` first (:meth:`append_event`), so two processes never
    both move the same experiment; that, not a stricter isolation level, is what keeps state changes
    exact, and it needs no retry loop for serialization failures.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.read_only = False
        # pool_pre_ping: a PostgreSQL connection that the server (or a network hop) closed while it
        # sat in the pool is replaced instead of failing the next call. Pool size: the service calls
        # the store from its one event loop thread, plus the leader lock's own connection.
        postgresql = make_url(url).get_backend_name() == "postgresql"
        self.engine = create_engine(url, pool_pre_ping=postgresql,
                                    connect_args=POSTGRESQL_CONNECT_ARGS if postgresql else {})
        if postgresql:
            event.listen(self.engine, "do_connect", _bounded_connect)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.migrate()

    @property
    def is_postgresql(self) -> bool:
        """Whether the store is a PostgreSQL database (else SQLite)."""
        return self.engine.dialect.name == "postgresql"

    @classmethod
    def open_read_only(cls, path: Path) -> Store:
        """The SQLite file at ``path``, read-only: for a start on a full disk, where SQLite cannot
        make the WAL's shared-memory file. Writes fail ("attempt to write a readonly database").

        Read-only mode (``mode=ro``) still reads a WAL that a crash left; when it cannot open either,
        ``immutable=1`` reads the database file alone (after a clean stop the WAL is empty).

        Raises:
            sqlite3.OperationalError: (wrapped by SQLAlchemy) neither mode can read the file.
        """
        store = cls.__new__(cls)
        store.url = f"sqlite:///{path}"
        store.read_only = True
        last: Exception | None = None
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            engine = create_engine(f"sqlite:///file:{path}?{flags}&uri=true")
            try:
                with engine.connect() as conn:
                    conn.execute(select(schema_migrations.c.version)).all()
            except Exception as exc:  # noqa: BLE001 - try the next mode
                engine.dispose()
                last = exc
                continue
            store.engine = engine
            return store
        assert last is not None
        raise last

    def reopen_writable(self) -> None:
        """After :meth:`open_read_only`, once the disk has room: opens the database for writing again."""
        if not self.read_only:
            return
        writable = Store(self.url)
        self.engine.dispose()
        self.engine, self.read_only = writable.engine, False

    def migrate(self) -> list[int]:
        """Applies the migrations not yet recorded; returns the versions applied. On PostgreSQL under
        an advisory lock (:data:`MIGRATION_LOCK_KEY`): another process migrating at the same time
        waits, then finds the migrations recorded."""
        if not self.is_postgresql:
            return self._migrate()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                return self._migrate()
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})

    def _migrate(self) -> list[int]:
        schema_migrations.create(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            done = {row.version for row in conn.execute(select(schema_migrations.c.version))}
        applied = []
        for version, migration in MIGRATIONS:
            if version in done:
                continue
            migration(self.engine)
            with self.engine.begin() as conn:
                conn.execute(insert(schema_migrations).values(version=version, applied_at=time.time()))
            applied.append(version)
        return applied

    def schema_version(self) -> int:
        """The highest migration applied (0: none)."""
        with self.engine.begin() as conn:
            versions = [row.version for row in conn.execute(select(schema_migrations.c.version))]
        return max(versions, default=0)

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(
        self,
        exp: orchestrator_pb2.Experiment,
        first_event: experiment_pb2.ExperimentEvent,
        cache_key: str | None = None,
        more_events: Sequence[experiment_pb2.ExperimentEvent] = (),
        fingerprint: str | None = None,
        no_cache: bool = False,
    ) -> experiment_pb2.ExperimentEvent:
        """Inserts an experiment and its first events (sequence 1, 2, ...) in one transaction: a crash
        cannot leave an experiment without its "created" event.

        Args:
            exp: the experiment, QUEUED; or finished (its ``result`` or ``error`` and ``end_time``
                set) when its outcome was copied from the result cache.
            first_event: the "created" event.
            cache_key: the experiment's result-cache key (None: it takes no part in the cache).
            more_events: events stored after the first, in order (a cached copy's outcome).
            fingerprint: the spec's fingerprint, stored with ``exp.request_id`` (when it has one).
            no_cache: it was sent with no_cache: a failure of it is never reused.

        Returns:
            The last event as stored (``experiment_id``, ``sequence`` and ``time`` set).

        Raises:
            DuplicateRequest: the owner already sent the same non-empty request_id.
        """
        all_events = []
        for sequence, given in enumerate([first_event, *more_events], start=1):
            stored = experiment_pb2.ExperimentEvent()
            stored.CopyFrom(given)
            stored.experiment_id = exp.experiment_id
            stored.sequence = sequence
            if not stored.HasField("time"):
                stored.time.GetCurrentTime()
            all_events.append(stored)
        finished = exp.HasField("end_time")
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(experiments).values(
                        experiment_id=exp.experiment_id,
                        state=exp.state,
                        attempt=exp.attempt,
                        max_attempts=exp.max_attempts,
                        priority=exp.priority,
                        device=devices.short_name(exp.device),
                        create_time=exp.create_time.ToMicroseconds() / 1e6,
                        last_sequence=stored.sequence,
                        queue_deadline=(exp.create_time.ToMicroseconds() / 1e6 + exp.queue_timeout_s
                                        if exp.queue_timeout_s > 0 else None),
                        spec=exp.SerializeToString(),
                        cache_key=cache_key,
                        no_cache=no_cache,
                        result=exp.result.SerializeToString() if exp.HasField("result") else None,
                        error=exp.error.SerializeToString() if exp.HasField("error") else None,
                        start_time=exp.start_time.ToMicroseconds() / 1e6 if finished else None,
                        end_time=exp.end_time.ToMicroseconds() / 1e6 if finished else None,
                    )
                )
                conn.execute(insert(events), [
                    {"experiment_id": exp.experiment_id, "sequence": e.sequence, "data": e.SerializeToString()}
                    for e in all_events
                ])
                conn.execute(insert(experiment_owners).values(experiment_id=exp.experiment_id, owner=exp.owner))
                if exp.request_id:
                    conn.execute(insert(request_ids).values(
                        owner=exp.owner, request_id=exp.request_id, experiment_id=exp.experiment_id,
                        fingerprint=fingerprint))
                if exp.labels:
                    conn.execute(
                        insert(experiment_labels),
                        [{"experiment_id": exp.experiment_id, "key": k, "value": v} for k, v in exp.labels.items()],
                    )
        except IntegrityError:
            existing = self.find_by_request_id(exp.owner, exp.request_id) if exp.request_id else None
            if existing is None:
                raise
            raise DuplicateRequest(existing) from None
        return stored

    def cached(self, cache_key: str, owner: str, limit: int = 20) -> list[orchestrator_pb2.Experiment]:
        """The owner's finished experiments with this cache key and the shared result-cache entries
        with it, newest first (at most ``limit``); a failure only from the owner's experiments not
        sent with no_cache."""
        succeeded = experiments.c.state == experiment_pb2.EXPERIMENT_STATE_SUCCEEDED
        query = (
            select(experiments)
            .where(experiments.c.cache_key == cache_key)
            .where(succeeded | ((experiments.c.state == experiment_pb2.EXPERIMENT_STATE_FAILED)
                                & experiments.c.no_cache.is_not(True)))
            .where(experiments.c.experiment_id.in_(
                select(experiment_owners.c.experiment_id).where(experiment_owners.c.owner == owner))
                   | (succeeded & experiments.c.experiment_id.in_(select(shared_cache_entries.c.experiment_id))))
            .order_by(experiments.c.row.desc())
            .limit(limit)
        )
        with self.engine.begin() as conn:
            return [_experiment_from_row(r) for r in conn.execute(query)]

    def share_cache_entry(self, experiment_id: str, shared: bool, by: str) -> None:
        """Makes a (SUCCEEDED) experiment a shared result-cache entry, or its owner's only again."""
        with self.engine.begin() as conn:
            conn.execute(shared_cache_entries.delete().where(shared_cache_entries.c.experiment_id == experiment_id))
            if shared:
                conn.execute(insert(shared_cache_entries).values(
                    experiment_id=experiment_id, shared_by=by, share_time=time.time()))

    def find_by_request_id(self, owner: str, request_id: str) -> RequestRecord | None:
        """The experiment ``owner`` submitted with this request_id, if any (never another owner's)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(request_ids.c.experiment_id, request_ids.c.fingerprint)
                .where(request_ids.c.owner == owner, request_ids.c.request_id == request_id)
            ).one_or_none()
        return None if row is None else RequestRecord(row.experiment_id, row.fingerprint)

    def get_experiment(self, experiment_id: str) -> orchestrator_pb2.Experiment | None:
        """The experiment with its current state, attempt, worker and times; None when unknown."""
        with self.engine.begin() as conn:
            row = conn.execute(select(experiments).where(experiments.c.experiment_id == experiment_id)).one_or_none()
        return None if row is None else _experiment_from_row(row)

    def list_experiments(
        self,
        states: Sequence[int],
        labels: dict[str, str],
        page_size: int,
        after_row: int | None,
        created_after: float | None = None,
        owner: str | None = None,
    ) -> tuple[list[orchestrator_pb2.Experiment], int | None]:
        """Newest first. Returns a page and the row to continue after (None on the last page).

        ``owner``: only that user's experiments (None: everyone's, for admins).
        """
        query = select(experiments).order_by(experiments.c.row.desc()).limit(page_size + 1)
        if owner is not None:
            query = query.where(experiments.c.experiment_id.in_(
                select(experiment_owners.c.experiment_id).where(experiment_owners.c.owner == owner)))
        if states:
            query = query.where(experiments.c.state.in_(list(states)))
        if after_row is not None:
            query = query.where(experiments.c.row < after_row)
        if created_after is not None:
            query = query.where(experiments.c.create_time >= created_after)
        for key, value in labels.items():
            matching = select(experiment_labels.c.experiment_id).where(
                experiment_labels.c.key == key, experiment_labels.c.value == value
            )
            query = query.where(experiments.c.experiment_id.in_(matching))
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        return [_experiment_from_row(r) for r in rows], (rows[-1].row if more and rows else None)

    def watch_rows(self, labels: dict[str, str], owner: str | None) -> list[tuple[str, int, int]]:
        """(experiment_id, state, last_sequence) of the experiments carrying all ``labels``, oldest
        first; ``owner``: only that user's (None: everyone's)."""
        query = select(experiments.c.experiment_id, experiments.c.state, experiments.c.last_sequence).order_by(
            experiments.c.row)
        if owner is not None:
            query = query.where(experiments.c.experiment_id.in_(
                select(experiment_owners.c.experiment_id).where(experiment_owners.c.owner == owner)))
        for key, value in labels.items():
            query = query.where(experiments.c.experiment_id.in_(select(experiment_labels.c.experiment_id).where(
                experiment_labels.c.key == key, experiment_labels.c.value == value)))
        with self.engine.begin() as conn:
            return [(r.experiment_id, r.state, r.last_sequence) for r in conn.execute(query)]

    def queued_heads(self, wanted: Iterable[devices.Device.ValueType], per_queue: int) -> list[QueuedExperiment]:
        """The first ``per_queue`` QUEUED experiments of each (owner, run) queue that ask for one of
        the ``wanted`` devices; each queue in its own order: priority (highest first), then oldest."""
        run = experiment_labels.alias("run_label")
        run_value = func.coalesce(run.c.value, "")
        position = func.row_number().over(
            partition_by=(experiment_owners.c.owner, run_value),
            order_by=(experiments.c.priority.desc(), experiments.c.create_time, experiments.c.row),
        )
        heads = (
            select(experiments.c.experiment_id, experiments.c.device, experiments.c.attempt, experiments.c.priority,
                   experiment_owners.c.owner, run_value.label("run"), position.label("position"))
            .join(experiment_owners, experiment_owners.c.experiment_id == experiments.c.experiment_id)
            .outerjoin(run, (run.c.experiment_id == experiments.c.experiment_id) & (run.c.key == RUN_LABEL))
            .where(experiments.c.state == experiment_pb2.EXPERIMENT_STATE_QUEUED)
            .where(experiments.c.device.in_([devices.short_name(d) for d in wanted]))
            .subquery()
        )
        query = select(heads).where(heads.c.position <= per_queue).order_by(heads.c.owner, heads.c.run,
                                                                           heads.c.position)
        with self.engine.begin() as conn:
            return [QueuedExperiment(r.experiment_id, devices.parse(r.device), r.attempt, r.owner, r.run, r.priority)
                    for r in conn.execute(query)]

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Per owner: how many of their experiments are QUEUED and how many RUNNING."""
        query = (
            select(experiment_owners.c.owner, experiments.c.state, func.count())
            .join(experiment_owners, experiment_owners.c.experiment_id == experiments.c.experiment_id)
            .where(experiments.c.state.in_([experiment_pb2.EXPERIMENT_STATE_QUEUED,
                                            experiment_pb2.EXPERIMENT_STATE_RUNNING]))
            .group_by(experiment_owners.c.owner, experiments.c.state)
        )
        depths: dict[str, tuple[int, int]] = {}
        with self.engine.begin() as conn:
            for owner, state, count in conn.execute(query):
                queued, running = depths.get(owner, (0, 0))
                depths[owner] = (queued + count, running) if state == experiment_pb2.EXPERIMENT_STATE_QUEUED else (
                    queued, running + count)
        return depths

    def state_counts(self) -> dict[int, int]:
        """How many experiments are in each state (``ExperimentState`` value -> count; absent: 0)."""
        query = select(experiments.c.state, func.count()).group_by(experiments.c.state)
        with self.engine.begin() as conn:
            return {int(state): int(count) for state, count in conn.execute(query)}

    def oldest_queued(self) -> dict[str, tuple[int, float]]:
        """Per owner with QUEUED experiments: how many, and the create time (Unix s) of the oldest."""
        query = (
            select(experiment_owners.c.owner, func.count(), func.min(experiments.c.create_time))
            .join(experiment_owners, experiment_owners.c.experiment_id == experiments.c.experiment_id)
            .where(experiments.c.state == experiment_pb2.EXPERIMENT_STATE_QUEUED)
            .group_by(experiment_owners.c.owner)
        )
        with self.engine.begin() as conn:
            return {owner: (int(count), float(oldest)) for owner, count, oldest in conn.execute(query)}

    def queued_past_deadline(self, now: float) -> list[QueuedExperiment]:
        """QUEUED experiments whose queue deadline (create time + queue timeout) is before ``now``."""
        query = (
            select(experiments.c.experiment_id, experiments.c.device, experiments.c.attempt)
            .where(experiments.c.state == experiment_pb2.EXPERIMENT_STATE_QUEUED)
            .where(experiments.c.queue_deadline.is_not(None), experiments.c.queue_deadline < now)
            .limit(1000)
        )
        with self.engine.begin() as conn:
            return [QueuedExperiment(r.experiment_id, devices.parse(r.device), r.attempt) for r in conn.execute(query)]

    def running_ids(self) -> list[str]:
        """The ids of the RUNNING experiments."""
        with self.engine.begin() as conn:
            return list(
                conn.execute(
                    select(experiments.c.experiment_id).where(
                        experiments.c.state == experiment_pb2.EXPERIMENT_STATE_RUNNING
                    )
                ).scalars()
            )

    def append_event(
        self,
        experiment_id: str,
        event: experiment_pb2.ExperimentEvent,
        transition: dict[str, object] | None = None,
        only_if_state: Iterable[int] | None = None,
        only_if_attempt: int | None = None,
    ) -> experiment_pb2.ExperimentEvent | None:
        """Stores one event (see :class:`Append` for the arguments and :meth:`append_many`).

        Returns:
            The event with its sequence number set, or None when a condition did not match.

        Raises:
            LookupError: no experiment has this id.
        """
        stored = self.append_many([Append(experiment_id, event, transition, only_if_state, only_if_attempt)])[0]
        if isinstance(stored, LookupError):
            raise stored
        return stored

    def append_many(self, appends: Sequence[Append]) -> list[experiment_pb2.ExperimentEvent | None | LookupError]:
        """Stores events, each under its experiment's next sequence number with its optional state
        change, all in one transaction (the ledger's group commit: one commit for the events that
        arrived together). Each is committed before this returns (and so before any watcher sees it).

        The rows are read ``FOR UPDATE`` on PostgreSQL (in one order, so two transactions cannot
        deadlock): a concurrent transition of the same experiment waits, then sees this one's
        outcome. SQLite has no row locks; there one orchestrator owns the database (the data
        directory's lock). The appends apply in order, as if stored one by one: two for the same experiment get
        consecutive numbers, and the second's conditions see the first's state change. The rows
        are read with one SELECT; each experiment's row is written once and the events inserted
        with one statement.

        Returns:
            Per append, in order: the event as stored (``experiment_id``, ``sequence`` and, if
            unset, ``time`` set); None when its ``only_if_state``/``only_if_attempt`` did not
            match; a LookupError when no experiment has its id.
        """
        out: list[experiment_pb2.ExperimentEvent | None | LookupError] = []
        if not appends:
            return out
        with self.engine.begin() as conn:
            rows: dict[str, dict[str, Any]] = {
                r.experiment_id: {"last_sequence": r.last_sequence, "state": r.state, "attempt": r.attempt}
                for r in conn.execute(
                        select(experiments.c.experiment_id, experiments.c.last_sequence, experiments.c.state,
                               experiments.c.attempt)
                        .where(experiments.c.experiment_id.in_({a.experiment_id for a in appends}))
                        .order_by(experiments.c.experiment_id)  # one lock order: no deadlock
                        .with_for_update())}
            changes: dict[str, dict[str, object]] = {}
            new_events: list[dict[str, object]] = []
            for append in appends:
                row = rows.get(append.experiment_id)
                if row is None:
                    out.append(LookupError(f"no experiment {append.experiment_id}"))
                    continue
                if append.only_if_state is not None and row["state"] not in set(append.only_if_state):
                    out.append(None)
                    continue
                if append.only_if_attempt is not None and row["attempt"] != append.only_if_attempt:
                    out.append(None)
                    continue
                stored = experiment_pb2.ExperimentEvent()
                stored.CopyFrom(append.event)
                stored.experiment_id = append.experiment_id
                stored.sequence = int(row["last_sequence"]) + 1
                if not stored.HasField("time"):
                    stored.time.GetCurrentTime()
                values: dict[str, object] = {"last_sequence": stored.sequence}
                for key, value in (append.transition or {}).items():
                    values[key] = value.SerializeToString() if hasattr(value, "SerializeToString") else value
                row.update((k, v) for k, v in values.items() if k in row)
                changes.setdefault(append.experiment_id, {}).update(values)
                new_events.append({"experiment_id": append.experiment_id, "sequence": stored.sequence,
                                   "data": stored.SerializeToString()})
                out.append(stored)
            _update_rows(conn, changes)
            if new_events:
                conn.execute(insert(events), new_events)
        return out

    def dispatch_many(
        self, moves: Sequence[Dispatched], now: float
    ) -> list[tuple[orchestrator_pb2.Experiment, experiment_pb2.ExperimentEvent]]:
        """QUEUED -> RUNNING for many experiments in one transaction (a scheduling round): each that
        is still QUEUED at its attempt gets its StateChange event, worker and start time.

        The scheduler's claim. On PostgreSQL the rows are read ``FOR UPDATE SKIP LOCKED``: a row
        another transaction holds (another orchestrator moving it) is left out rather than waited
        for, so two orchestrators on one database never both dispatch an experiment.

        Args:
            moves: the experiments, each with the attempt it must be at and its worker.
            now: the start time (Unix time, s).

        Returns:
            For each experiment moved (those no longer QUEUED at that attempt are left out, in
            ``moves`` order): the experiment as now stored (RUNNING, spec parsed once here) and
            its stored StateChange event.
        """
        if not moves:
            return []
        wanted = {m.experiment_id: m for m in moves}
        moved: list[tuple[orchestrator_pb2.Experiment, experiment_pb2.ExperimentEvent]] = []
        with self.engine.begin() as conn:
            rows = {r.experiment_id: r for r in conn.execute(
                select(experiments).where(experiments.c.experiment_id.in_(list(wanted)))
                .order_by(experiments.c.experiment_id).with_for_update(skip_locked=True))}
            changes, new_events = [], []
            for move in moves:
                row = rows.get(move.experiment_id)
                if row is None or row.state != experiment_pb2.EXPERIMENT_STATE_QUEUED or row.attempt != move.attempt:
                    continue
                event = experiment_pb2.ExperimentEvent(
                    experiment_id=move.experiment_id, sequence=row.last_sequence + 1, attempt=move.attempt,
                    state_change=experiment_pb2.StateChange(
                        state=experiment_pb2.EXPERIMENT_STATE_RUNNING, attempt=move.attempt,
                        worker_id=move.worker_id, reason=f"dispatched to {move.worker_id}"))
                event.time.FromMicroseconds(int(now * 1e6))
                changes.append({"key": move.experiment_id, "seq": event.sequence, "worker": move.worker_id})
                new_events.append({"experiment_id": move.experiment_id, "sequence": event.sequence,
                                   "data": event.SerializeToString()})
                exp = _experiment_from_row(row)
                exp.state, exp.worker_id, exp.last_sequence = experiment_pb2.EXPERIMENT_STATE_RUNNING, move.worker_id, \
                    event.sequence
                exp.start_time.CopyFrom(event.time)
                moved.append((exp, event))
            if changes:
                conn.execute(
                    update(experiments).where(experiments.c.experiment_id == bindparam("key")).values(
                        state=experiment_pb2.EXPERIMENT_STATE_RUNNING, worker_id=bindparam("worker"),
                        start_time=now, last_sequence=bindparam("seq")),
                    changes)
                conn.execute(insert(events), new_events)
        return moved

    def events_after(self, experiment_id: str, after_sequence: int) -> list[experiment_pb2.ExperimentEvent]:
        """The experiment's stored events with a sequence number above ``after_sequence``, in order."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(events.c.data)
                .where(events.c.experiment_id == experiment_id, events.c.sequence > after_sequence)
                .order_by(events.c.sequence)
            ).scalars()
            return [experiment_pb2.ExperimentEvent.FromString(data) for data in rows]

    # -- datasets ----------------------------------------------------------------------------

    def put_dataset(self, dataset: orchestrator_pb2.Dataset) -> None:
        """Inserts or replaces a dataset by name."""
        with self.engine.begin() as conn:
            conn.execute(datasets.delete().where(datasets.c.name == dataset.name))
            conn.execute(
                insert(datasets).values(
                    name=dataset.name,
                    digest=dataset.digest,
                    builtin=dataset.builtin,
                    create_time=dataset.create_time.ToMicroseconds() / 1e6,
                    data=dataset.SerializeToString(),
                )
            )

    def find_dataset(
        self, name_or_digest: str, visible: Callable[[orchestrator_pb2.Dataset], bool] | None = None
    ) -> orchestrator_pb2.Dataset | None:
        """The dataset with this name, else the oldest with this digest, among those ``visible``
        accepts (None: all); None when there is none. Filtering first matters: several users may
        hold datasets of the same images, and a digest must find the caller's, not another's."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(datasets.c.name, datasets.c.data)
                .where((datasets.c.name == name_or_digest) | (datasets.c.digest == name_or_digest))
                .order_by(datasets.c.create_time)
            ).all()
        by_name_first = sorted(rows, key=lambda r: r.name != name_or_digest)  # stable: then oldest first
        found = [orchestrator_pb2.Dataset.FromString(r.data) for r in by_name_first]
        return next((d for d in found if visible is None or visible(d)), None)

    def list_datasets(self) -> list[orchestrator_pb2.Dataset]:
        """Every dataset, by name."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(datasets.c.data).order_by(datasets.c.name)).scalars()
            return [orchestrator_pb2.Dataset.FromString(d) for d in rows]

    # -- access --------------------------------------------------------------------------------

    def add_token(self, token_sha256: str, name: str, role: str) -> None:
        """Stores an API token's hash with its user's name and role."""
        with self.engine.begin() as conn:
            conn.execute(insert(api_tokens).values(token_sha256=token_sha256, name=name, role=role,
                                                   create_time=time.time()))

    def find_token(self, token_sha256: str) -> TokenRecord | None:
        """The user of a token, by the token's hash."""
        with self.engine.begin() as conn:
            row = conn.execute(select(api_tokens.c.name, api_tokens.c.role)
                               .where(api_tokens.c.token_sha256 == token_sha256)).one_or_none()
        return None if row is None else TokenRecord(row.name, row.role)

    def bind_worker_credential(self, worker_id: str, credential_sha256: str) -> None:
        """Binds a worker id to its credential's hash (replacing an older binding of the same id)."""
        with self.engine.begin() as conn:
            conn.execute(worker_credentials.delete().where(worker_credentials.c.worker_id == worker_id))
            conn.execute(insert(worker_credentials).values(worker_id=worker_id, credential_sha256=credential_sha256,
                                                           create_time=time.time()))

    def worker_credential(self, worker_id: str) -> str | None:
        """The credential hash bound to a worker id, if any."""
        with self.engine.begin() as conn:
            return conn.execute(select(worker_credentials.c.credential_sha256)
                                .where(worker_credentials.c.worker_id == worker_id)).scalar_one_or_none()

    def worker_of_credential(self, credential_sha256: str) -> str | None:
        """The worker id a credential hash is bound to, if any."""
        with self.engine.begin() as conn:
            return conn.execute(select(worker_credentials.c.worker_id)
                                .where(worker_credentials.c.credential_sha256 == credential_sha256)
                                ).scalar_one_or_none()

    def add_blob_owner(self, sha256: str, owner: str) -> None:
        """Records that ``owner`` (a user, or :data:`EVERYONE`) may read a blob."""
        with self.engine.begin() as conn:
            exists = conn.execute(select(blob_owners.c.sha256).where(
                blob_owners.c.sha256 == sha256, blob_owners.c.owner == owner)).first()
            if exists is None:
                conn.execute(insert(blob_owners).values(sha256=sha256, owner=owner))

    def remove_blob_owner(self, sha256: str, owner: str) -> None:
        """Forgets that ``owner`` may read a blob."""
        with self.engine.begin() as conn:
            conn.execute(blob_owners.delete().where(blob_owners.c.sha256 == sha256, blob_owners.c.owner == owner))

    def referenced_blobs(self) -> set[str]:
        """The digests of every dataset image, every experiment's agent files and kept reconstructions."""
        with self.engine.begin() as conn:
            found = {image.sha256 for data in conn.execute(select(datasets.c.data)).scalars()
                     for image in orchestrator_pb2.Dataset.FromString(data).images}
            for spec in conn.execute(select(experiments.c.spec)).scalars():
                found.update(f.sha256 for f in orchestrator_pb2.Experiment.FromString(spec).agent.files)
            stored = conn.execute(select(experiments.c.result).where(experiments.c.result.is_not(None))).scalars()
            for result in stored:
                found.update(image.reconstruction.sha256
                             for point in experiment_pb2.ExperimentResult.FromString(result).points
                             for image in point.images if image.HasField("reconstruction"))
        return found

    def forget_blobs(self, digests: Sequence[str]) -> None:
        """Removes the owner rows of deleted blobs."""
        with self.engine.begin() as conn:
            for start in range(0, len(digests), 500):  # SQLite bounds the variables of one statement
                conn.execute(blob_owners.delete().where(blob_owners.c.sha256.in_(list(digests[start:start + 500]))))

    def may_read_blob(self, sha256: str, user: str) -> bool:
        """Whether ``user`` owns a blob or it is readable by everyone."""
        with self.engine.begin() as conn:
            return conn.execute(select(blob_owners.c.sha256).where(
                blob_owners.c.sha256 == sha256, blob_owners.c.owner.in_([user, EVERYONE]))).first() is not None

    def close(self) -> None:
        """Closes the engine's connections."""
        self.engine.dispose()


def _update_rows(conn: Connection, changes: dict[str, dict[str, object]]) -> None:
    """Writes each experiment's column values (by experiment id): rows that set the same columns to
    plain values share one executemany UPDATE; a value that is an SQL expression (a requeued
    ``queue_deadline``) gets its row its own statement."""
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for experiment_id, values in changes.items():
        if any(isinstance(v, ColumnElement) for v in values.values()):
            conn.execute(update(experiments).where(experiments.c.experiment_id == experiment_id).values(**values))
            continue
        groups.setdefault(tuple(sorted(values)), []).append(
            {"row_key": experiment_id, **{f"new_{k}": v for k, v in values.items()}})
    for columns, params in groups.items():
        conn.execute(
            update(experiments).where(experiments.c.experiment_id == bindparam("row_key"))
            .values({c: bindparam(f"new_{c}") for c in columns}),
            params,
        )


def _experiment_from_row(row: Row[Any]) -> orchestrator_pb2.Experiment:
    exp = orchestrator_pb2.Experiment.FromString(row.spec)
    exp.state = row.state
    exp.attempt = row.attempt
    exp.max_attempts = row.max_attempts  # the spec's, plus one per attempt a drain stopped
    exp.worker_id = row.worker_id or ""
    exp.last_sequence = row.last_sequence
    if row.start_time is not None:
        exp.start_time.FromMicroseconds(int(row.start_time * 1e6))
    if row.end_time is not None:
        exp.end_time.FromMicroseconds(int(row.end_time * 1e6))
    if row.result is not None:
        exp.result.ParseFromString(row.result)
    if row.error is not None:
        exp.error.CopyFrom(errors_pb2.Error.FromString(row.error))
    return exp
