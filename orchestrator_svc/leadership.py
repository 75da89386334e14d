"""Active-standby among orchestrators that share one PostgreSQL database.

Two or more orchestrators may run on one PostgreSQL database; exactly one of them, the leader,
serves. The leader is whoever holds a session-level advisory lock (``pg_try_advisory_lock`` on
:data:`orchestrator_svc.store.LEADER_LOCK_KEY`) on a connection it keeps open for that alone.
The others are standbys: their gRPC health says NOT_SERVING (so a Kubernetes Service or a load
balancer sends nobody to them), every other call is refused UNAVAILABLE, and they try the lock
again every ``poll_s``. When the leader dies, its database session ends and PostgreSQL releases
the lock; a standby takes it, recovers the experiments the leader left RUNNING (back to the queue,
attempt + 1) and serves. Workers register with whoever answers at the orchestrator's address.

Why not active-active: an orchestrator keeps state that is not in the database (the workers that
registered with it and their open experiment streams, the wake-ups of watchers), and its start-up
recovery requeues every RUNNING experiment; two serving at once would requeue each other's work.
The claim of a QUEUED experiment is still safe between two processes (``FOR UPDATE SKIP LOCKED``,
:meth:`orchestrator_svc.ledger.Ledger.dispatched`), which covers the moment a deposed leader has
not yet noticed that it lost the lock.

A leader checks its lock connection every ``poll_s``; when the connection is gone (the database
restarted, the network broke) the lock is gone with it, and the leader steps down
(:attr:`Leadership.lost`): it stops dispatching and turns NOT_SERVING. The service process then
exits (status 1), so that its supervisor restarts it as a standby.

The checks and a standby's tries run in a thread of their own with a deadline (``timeout_s``), never
on the event loop: a database that hangs instead of refusing (a stopped server, a black-holed
network; libpq then waits forever) must not freeze the service. A leader whose check misses the
deadline steps down as if the connection were gone (it cannot know that it still holds the lock);
its stuck connection is abandoned, not closed (closing would wait for the thread that uses it), and
dies with the process. A standby whose try is slow stays a standby and starts no second try
meanwhile.

A session's lock outlives a leader that is stopped (SIGSTOP) or hung: its kernel keeps the TCP
connection, and the database its session. So the leader also holds a lease: every ``poll_s`` it
renews the one row of :data:`LEASE_TABLE` (its holder id, its lock session's backend pid, and an
expiry by the database's clock, ``now()`` plus :attr:`Leadership.lease_s`, longer than the leader
needs to notice a lost lock itself). A standby that finds the lock taken and the lease expired ends
the holder's session (``pg_terminate_backend``), which frees the lock; it takes office at its next
try. The old leader, resumed, finds its session gone, steps down and exits. What it may still do in
between is fenced in the database: a QUEUED experiment is claimed by one process only
(``FOR UPDATE SKIP LOCKED``), and the events of an attempt that the new leader requeued are refused
(the ledger checks the attempt). The table is the leader's own (made by the lock holder, outside
the store's migrations: SQLite has no use for it).

SQLite needs none of this: one orchestrator owns the data directory (``disk.lock_data_dir``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Awaitable, Callable

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from codecbench import logs
from orchestrator_svc.store import LEADER_LOCK_KEY, Store

LEASE_TABLE = "codecbench_leader_lease"
_CREATE_LEASE = text(
    f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, "
    "backend_pid INTEGER NOT NULL, renewed_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL)")
_RENEW_LEASE = text(
    f"INSERT INTO {LEASE_TABLE} VALUES (1, :holder, pg_backend_pid(), now(), now() + make_interval(secs => :lease_s)) "
    "ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, "
    "renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at")
# The holder of an expired lease, if its session still holds an advisory lock (the leader's: a
# leader's lock session holds no other), so that a pid the server reused is never ended.
_EXPIRED_HOLDER = text(
    f"SELECT l.backend_pid, l.holder FROM {LEASE_TABLE} l WHERE l.expires_at < now() AND EXISTS "
    "(SELECT 1 FROM pg_locks k WHERE k.pid = l.backend_pid AND k.locktype = 'advisory' AND k.granted)")


class Leadership:
    """The leader lock of the orchestrators on one PostgreSQL database (module docstring).

    Args:
        store: a PostgreSQL store.
        poll_s: how often a standby tries the lock, and a leader checks that it still holds it.
        timeout_s: deadline of one check or try; a leader whose check misses it steps down. Far
            above a healthy check (a round trip, milliseconds); default the larger of 5 s and
            3 × ``poll_s``.

    Attributes:
        lease_s: how long a renewal of the lease lasts: ``timeout_s`` + 3 × ``poll_s`` + 2 s, so a
            leader steps down on its own before a standby may end its session.
    """

    def __init__(self, store: Store, poll_s: float = 1.0, timeout_s: float | None = None) -> None:
        if not store.is_postgresql:
            raise ValueError("leadership needs a PostgreSQL store (SQLite: the data directory's lock)")
        self.store = store
        self.poll_s = poll_s
        self.timeout_s = max(5.0, 3 * poll_s) if timeout_s is None else timeout_s
        self.lease_s = self.timeout_s + 3 * poll_s + 2.0
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.held = False
        # The thread running a database call on _conn: nobody else may touch _conn meanwhile.
        self._worker: threading.Thread | None = None
        # Set when a leader finds its lock gone; it never leads again (its process restarts).
        self.lost = asyncio.Event()
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.log = logs.get_logger("leadership")

    def try_acquire(self) -> bool:
        """Takes the lock if nobody holds it; True when this process leads (now or already)."""
        if not self.held:
            self.held = self._try_lock()
        return self.held

    def _try_lock(self) -> bool:
        try:
            if self._conn is None:
                # AUTOCOMMIT: the lock belongs to the session, and the connection must not sit
                # "idle in transaction" for the leader's whole life.
                self._conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}).scalar())
            if got:
                self._conn.execute(_CREATE_LEASE)
                self._renew(self._conn)
            else:
                self._depose_expired(self._conn)
        except SQLAlchemyError as exc:
            self.log.warning("leadership.try_failed", error=str(exc))
            self._drop_connection()
            return False
        return got

    def _renew(self, conn: Connection) -> None:
        conn.execute(_RENEW_LEASE, {"holder": self.holder, "lease_s": self.lease_s})

    def _depose_expired(self, conn: Connection) -> None:
        """Ends the session of a leader whose lease expired (module docstring); the lock is free at
        the next try."""
        if conn.execute(text("SELECT to_regclass(:table)"), {"table": LEASE_TABLE}).scalar() is None:
            return  # no leader has renewed a lease yet
        expired = conn.execute(_EXPIRED_HOLDER).first()
        if expired is not None:
            self.log.warning("leadership.deposing", holder=expired.holder, backend_pid=expired.backend_pid)
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": expired.backend_pid})

    def still_held(self) -> bool:
        """Whether the lock connection is alive (a session's advisory lock lives as long as it);
        renews the lease on it."""
        if not self.held or self._conn is None:
            return False
        try:
            self._renew(self._conn)
        except SQLAlchemyError as exc:
            self.log.error("leadership.lost", error=str(exc))
            self.held = False
            self._drop_connection()
            return False
        return True

    def start(self, on_acquired: Callable[[], Awaitable[None]], on_lost: Callable[[], Awaitable[None]]) -> None:
        """Runs in the background: as a standby, tries the lock every ``poll_s`` and awaits
        ``on_acquired`` once it has it; as the leader, checks the lock every ``poll_s`` and awaits
        ``on_lost`` (then sets :attr:`lost`) once it is gone."""
        self._task = asyncio.create_task(self._run(on_acquired, on_lost))

    def _in_thread(self, call: Callable[[], bool]) -> asyncio.Future[bool]:
        """Runs ``call`` in a daemon thread (a stuck one must not keep the process from exiting, as
        an executor's thread would); its result arrives on the returned future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def deliver(result: bool | None, error: BaseException | None) -> None:
            self._worker = None
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(bool(result))

        def run() -> None:
            result: bool | None = None
            error: BaseException | None = None
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                error = exc
            try:
                loop.call_soon_threadsafe(deliver, result, error)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        self._worker = threading.Thread(target=run, name="codecbench-leadership", daemon=True)
        self._worker.start()
        return future

    async def _run(self, on_acquired: Callable[[], Awaitable[None]], on_lost: Callable[[], Awaitable[None]]) -> None:
        attempt: asyncio.Future[bool] | None = None
        while not self.held:
            await asyncio.sleep(self.poll_s)
            if attempt is None:
                attempt = self._in_thread(self._try_lock)
            await asyncio.wait({attempt}, timeout=self.timeout_s)
            if not attempt.done():
                self.log.warning("leadership.try_slow", timeout_s=self.timeout_s)
                continue
            got, attempt = attempt.result(), None
            if not got:
                continue
            self.held = True
            self.log.info("leadership.acquired")
            try:
                await on_acquired()
            except Exception as exc:  # noqa: BLE001 - a leader that cannot take office must not keep the lock
                self.log.exception("leadership.take_office_failed", error=str(exc))
                self.held = False
                self._drop_connection()  # another standby (or this one, next poll) tries again
        while True:
            await asyncio.sleep(self.poll_s)
            check = self._in_thread(self.still_held)
            await asyncio.wait({check}, timeout=self.timeout_s)
            if check.done():
                if check.result():
                    continue
                break
            self.log.error("leadership.lost", error=f"the lock check took over {self.timeout_s} s")
            self.held = False
            self._conn = None  # abandoned to the stuck thread (module docstring)
            break
        await on_lost()
        self.lost.set()

    async def close(self) -> None:
        """Stops the background task and releases the lock (closing its session)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.release()

    def release(self) -> None:
        """Releases the lock (closing its session); for a holder that never called :meth:`start`."""
        self.held = False
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._worker is not None and self._worker is not threading.current_thread():
            self._conn = None  # a stuck thread uses it: abandoned (module docstring)
            return
        if self._conn is not None:
            try:
                # Invalidated, not returned to the pool: closing the session is what releases the lock.
                self._conn.invalidate()
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None


__all__ = ["Leadership"]
