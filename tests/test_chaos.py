"""The quick form of ``make chaos`` (issue 14): the same code as ``python -m chaos``, at a small size.

(a) experiments under worker and orchestrator SIGKILLs, (b) the hypothesis fuzz of every RPC of
both services, (c) a full disk on a small tmpfs (skipped, naming why, where no tmpfs can be mounted).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO
from sqlalchemy import create_engine, text

from chaos import report
from chaos.disk import run_disk_full
from chaos.fuzz import SERVICES, run_fuzz
from chaos.kills import run_kills

pytestmark = pytest.mark.timeout(300)


async def test_sigkilled_workers_and_orchestrator_lose_duplicate_and_strand_nothing(tmp_path: Path) -> None:
    outcome = await run_kills(tmp_path, experiments=16, worker_kills=2, drain_s=120.0)
    assert (outcome.worker_kills, outcome.orchestrator_kills) == (2, 1)
    assert outcome.submitted == outcome.stored == 16
    assert (outcome.lost, outcome.duplicated, outcome.stuck) == (0, 0, 0)
    assert outcome.bad_histories == {}
    assert outcome.ok
    text = report.render("python -m chaos --experiments 16", outcome, None, None, outcome.wall_s)
    assert "| **lost** | 0 |" in text and "## (a)" in text and "**pass**" in text


async def test_fuzzing_every_rpc_gives_no_unknown_or_internal_status_crash_or_hang(tmp_path: Path) -> None:
    outcome = await run_fuzz(tmp_path, examples=3)
    every_rpc = {f"{service.name}/{method.name}" for service in SERVICES for method in service.methods}
    assert set(outcome.calls) == every_rpc and "WorkerService/RunExperiment" in every_rpc
    assert outcome.bad == [] and outcome.crashed == []
    assert outcome.unfinishable == []
    assert outcome.ok


async def test_a_full_disk_refuses_writes_with_a_reason_and_strands_nothing(tmp_path: Path) -> None:
    outcome = await run_disk_full(tmp_path, experiments=8)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.refused_while_full == 4 and outcome.other_refusals == []
    assert outcome.stuck == 0 and outcome.bad_histories == {} and not outcome.crashed
    assert outcome.ok


def test_python_m_chaos_postgres_serves_a_database_until_ctrl_c(tmp_path: Path) -> None:
    # The documented way to start a local PostgreSQL server (docs/postgresql.md).
    proc = subprocess.Popen([sys.executable, "-m", "chaos.postgres", str(tmp_path / "pg")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("postgresql+psycopg://")
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar() == "codecbench"
        finally:
            engine.dispose()
        postmaster_pid = int((tmp_path / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        # The server stopped with it: gone, or a zombie when the tests' process is a subreaper.
        stat = Path(f"/proc/{postmaster_pid}/stat")
        assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
