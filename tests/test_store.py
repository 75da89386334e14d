"""The orchestrator's store: creation is atomic, the queue deadline restarts at a requeue (issue 14);
every test runs on SQLite and on a real PostgreSQL server (the ``store_url`` fixture, issue 16), and
the claim of a QUEUED experiment is exclusive between two stores on one database."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from codecbench.states import QUEUED, RUNNING
from codecbench.v1 import experiment_pb2, orchestrator_pb2
from orchestrator_svc.ledger import Ledger
from orchestrator_svc.store import Append, Dispatched, Store


def _experiment(experiment_id: str) -> orchestrator_pb2.Experiment:
    exp = orchestrator_pb2.Experiment(experiment_id=experiment_id, state=QUEUED, attempt=1, max_attempts=3,
                                      dataset="photos", owner="alice")
    exp.create_time.GetCurrentTime()
    return exp


def _created() -> experiment_pb2.ExperimentEvent:
    return experiment_pb2.ExperimentEvent(
        attempt=1, state_change=experiment_pb2.StateChange(state=QUEUED, attempt=1, reason="created"))


def test_an_experiment_is_stored_with_its_first_event(store_url: str) -> None:
    store = Store(store_url)
    store.create_experiment(_experiment("exp-1"), _created())
    events = store.events_after("exp-1", 0)
    assert [e.sequence for e in events] == [1] and events[0].state_change.reason == "created"
    exp = store.get_experiment("exp-1")
    assert exp is not None and exp.last_sequence == 1


def test_a_failure_while_storing_the_first_event_leaves_no_experiment(store_url: str) -> None:
    """A crash between the two writes used to leave an experiment without its "created" event."""
    store = Store(store_url)
    with store.engine.begin() as conn:  # the event insert fails, as a crash at that point would
        if store.is_postgresql:
            conn.execute(text("CREATE FUNCTION crash() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'crash'; END $$"))
            conn.execute(text("CREATE TRIGGER no_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION crash()"))
        else:
            conn.execute(text(
                "CREATE TRIGGER no_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'crash'); END"))
    with pytest.raises(SQLAlchemyError):
        store.create_experiment(_experiment("exp-1"), _created())
    assert store.get_experiment("exp-1") is None


def test_migration_4_adds_the_cache_key_to_a_store_of_version_3(store_url: str) -> None:
    url = store_url
    store = Store(url)
    store.create_experiment(_experiment("exp-old"), _created())
    with store.engine.begin() as conn:  # back to the schema of version 3
        conn.execute(text("DROP INDEX ix_experiments_cache_key"))
        conn.execute(text("ALTER TABLE experiments DROP COLUMN cache_key"))
        conn.execute(text("DELETE FROM schema_migrations WHERE version = 4"))
    store.close()
    reopened = Store(url)
    assert reopened.schema_version() == 6  # the highest recorded; 4 itself applied again
    reopened.create_experiment(_experiment("exp-new"), _created(), cache_key="k" * 64)
    assert reopened.get_experiment("exp-old") is not None
    assert reopened.cached("k" * 64, "alice") == []  # only finished experiments are reused


async def test_the_queue_timeout_runs_again_from_a_requeue(store_url: str) -> None:
    """The queue deadline used to run from creation only: an experiment requeued after its worker
    was lost, past creation + queue timeout, was failed UNSCHEDULABLE at once."""
    store = Store(store_url)
    ledger = Ledger(store)
    exp = _experiment("exp-1")
    exp.queue_timeout_s = 60
    exp.create_time.FromSeconds(int(time.time()) - 3600)  # created an hour ago, queued ever since
    await ledger.create(exp)
    assert [q.experiment_id for q in store.queued_past_deadline(time.time())] == ["exp-1"]
    assert await ledger.dispatched("exp-1", 1, "w-1")
    await ledger.requeue_or_fail("exp-1", 1, "worker w-1 lost")
    requeued = store.get_experiment("exp-1")
    assert requeued is not None and requeued.state == QUEUED and requeued.attempt == 2
    assert store.queued_past_deadline(time.time()) == []  # a fresh 60 s from the requeue
    assert [q.experiment_id for q in store.queued_past_deadline(time.time() + 61)] == ["exp-1"]
    store.close()


def _claim(store: Store, experiment_id: str, worker_id: str) -> bool:
    """The scheduler's claim (Ledger.dispatched) without the ledger: QUEUED -> RUNNING, skip locked."""
    return bool(store.dispatch_many([Dispatched(experiment_id, 1, worker_id)], time.time()))


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_two_stores_on_one_database_never_claim_the_same_experiment(store_url: str) -> None:
    """Two orchestrators' stores claim the same 60 QUEUED experiments, in the same order, at the same
    time: each experiment is claimed by exactly one of them, and has exactly one dispatch event.

    PostgreSQL only: on SQLite one orchestrator owns the database (the data directory's lock), and
    pysqlite runs the claim's read outside the write transaction, so two processes are not supported."""
    ids = [f"exp-{i}" for i in range(60)]
    first = Store(store_url)
    for experiment_id in ids:
        first.create_experiment(_experiment(experiment_id), _created())
    second = Store(store_url)
    start = threading.Barrier(2)

    def claim_all(store: Store, name: str) -> list[str]:
        start.wait()
        return [i for i in ids if _claim(store, i, name)]

    with ThreadPoolExecutor(2) as pool:
        claims = list(pool.map(claim_all, [first, second], ["orch-a", "orch-b"]))
    assert sorted(claims[0] + claims[1]) == sorted(ids), "each experiment claimed exactly once"
    assert not set(claims[0]) & set(claims[1])
    for experiment_id in ids:
        dispatches = [e for e in first.events_after(experiment_id, 0) if e.state_change.state == RUNNING]
        assert len(dispatches) == 1
    first.close()
    second.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_claim_skips_an_experiment_another_transaction_holds(store_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: while another orchestrator's transaction holds the row, the claim
    returns at once without it (instead of waiting); once released, the claim succeeds."""
    store = Store(store_url)
    store.create_experiment(_experiment("exp-1"), _created())
    with store.engine.connect() as other:
        other.execute(text("SELECT state FROM experiments WHERE experiment_id = 'exp-1' FOR UPDATE"))
        assert not _claim(store, "exp-1", "orch-a")
        exp = store.get_experiment("exp-1")
        assert exp is not None and exp.state == QUEUED and exp.last_sequence == 1
        other.rollback()
    assert _claim(store, "exp-1", "orch-a")
    exp = store.get_experiment("exp-1")
    assert exp is not None and exp.state == RUNNING and exp.worker_id == "orch-a"
    store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_two_orchestrators_migrating_one_database_at_once_both_start(store_url: str) -> None:
    """Without the migration lock, the second CREATE TABLE of two processes starting together fails."""
    start = threading.Barrier(4)

    def open_store(_: int) -> int:
        start.wait()
        store = Store(store_url)
        try:
            return store.schema_version()
        finally:
            store.close()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_store, range(4))) == [6, 6, 6, 6]


def test_events_appended_together_are_stored_in_order_in_one_transaction(tmp_path: Path) -> None:
    """Store.append_many (the ledger's group commit): the second append of an experiment sees the
    first's state change; a condition that fails stores nothing; an unknown id is reported alone."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    for name in ("exp-1", "exp-2"):
        store.create_experiment(_experiment(name), _created())
    running = {"state": experiment_pb2.EXPERIMENT_STATE_RUNNING, "worker_id": "w-1"}
    progress = experiment_pb2.ExperimentEvent(progress=experiment_pb2.Progress(image_index=1))
    out = store.append_many([
        Append("exp-1", experiment_pb2.ExperimentEvent(), running),
        Append("exp-1", progress, only_if_state={experiment_pb2.EXPERIMENT_STATE_RUNNING}),
        Append("exp-2", progress, only_if_state={experiment_pb2.EXPERIMENT_STATE_RUNNING}),
        Append("exp-missing", progress),
    ])
    assert [getattr(o, "sequence", o) for o in out[:3]] == [2, 3, None]
    assert isinstance(out[3], LookupError)
    first = store.get_experiment("exp-1")
    assert first is not None and first.state == experiment_pb2.EXPERIMENT_STATE_RUNNING and first.worker_id == "w-1"
    assert [e.sequence for e in store.events_after("exp-1", 0)] == [1, 2, 3]
    assert [e.sequence for e in store.events_after("exp-2", 0)] == [1]


def test_a_scheduling_round_moves_only_the_experiments_still_queued_at_their_attempt(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    for name in ("exp-1", "exp-2", "exp-3"):
        store.create_experiment(_experiment(name), _created())
    store.append_event("exp-3", experiment_pb2.ExperimentEvent(), {"state": experiment_pb2.EXPERIMENT_STATE_CANCELLED})
    moved = store.dispatch_many([Dispatched("exp-1", 1, "w-1"), Dispatched("exp-2", 2, "w-1"),
                                 Dispatched("exp-3", 1, "w-2")], now=1000.0)
    assert [(exp.experiment_id, exp.state, exp.worker_id) for exp, _ in moved] == [
        ("exp-1", experiment_pb2.EXPERIMENT_STATE_RUNNING, "w-1")]  # exp-2 is at attempt 1, exp-3 cancelled
    stored = store.get_experiment("exp-1")
    assert stored is not None and stored.state == experiment_pb2.EXPERIMENT_STATE_RUNNING
    assert stored.start_time.seconds == 1000 and stored.worker_id == "w-1"
    assert [e.state_change.reason for e in store.events_after("exp-1", 0)] == ["created", "dispatched to w-1"]
