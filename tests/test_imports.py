"""Light imports (issue 10, point 3): the CLI and the orchestrator server load neither torch nor
scipy/matplotlib (through bjontegaard or the photos dataset) until a command needs them.

Every check runs in a fresh interpreter: this test process has long imported all of them. What a
running service or command imported is read from ``-X importtime`` output (``PYTHONPROFILEIMPORTTIME``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers.services import admin_token_file

from codecbench.local import spawn_service

HEAVY = frozenset({"torch", "scipy", "matplotlib", "bjontegaard", "skimage"})
_IMPORT_TIME = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)", re.MULTILINE)


def _imported(importtime_output: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` output."""
    return {name.split(".")[0] for name in _IMPORT_TIME.findall(importtime_output)}


def _fresh(code: str) -> set[str]:
    """Runs ``code`` in a new interpreter; returns which of :data:`HEAVY` it left in ``sys.modules``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_cli_app_and_orchestrator_server_import_no_heavy_library() -> None:
    assert _fresh("from codecbench.cli import app\nassert app.registered_commands") == set()
    assert _fresh("import orchestrator_svc.server, orchestrator_svc.__main__") == set()
    # the probe itself works: a module that needs torch is seen
    assert _fresh("import codecbench.tensors, torch") == {"torch"}


def test_demo_uses_the_views_without_the_commands() -> None:
    code = ("import codecbench.demo, sys\n"
            "assert 'codecbench.cli.commands' not in sys.modules and 'typer' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_help_runs_from_the_console_script_and_the_module() -> None:
    script = Path(sys.executable).with_name("codecbench")
    for argv in ([str(script), "--help"], [sys.executable, "-m", "codecbench.cli", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout and all(c in done.stdout for c in ("run", "ls", "compare", "datasets"))


async def test_a_started_orchestrator_and_ls_load_no_heavy_library(tmp_path: Path) -> None:
    """The orchestrator starts (store, built-in photos) and answers ``codecbench ls``; neither process
    imported torch, scipy or matplotlib on the way."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    orchestrator = await spawn_service("orchestrator_svc", "--port", "0", "--data-dir", str(tmp_path / "orch"),
                                       "--admin-token-file", str(admin_token_file(tmp_path)),
                                       log_path=tmp_path / "orchestrator.log", env=env)
    try:
        ls = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "codecbench.cli", "--server", orchestrator.address, "ls", "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(ls.communicate(), timeout=120)
        assert ls.returncode == 0, stderr.decode()[-2000:]
        assert json.loads(stdout) == []
    finally:
        assert await orchestrator.stop() == 0
    ls_imported, orchestrator_imported = _imported(stderr.decode()), _imported(orchestrator.log_path.read_text())
    assert {"grpc", "typer", "codecbench"} <= ls_imported  # the importtime output was read
    assert {"grpc", "sqlalchemy", "orchestrator_svc"} <= orchestrator_imported
    assert not ls_imported & HEAVY
    assert not orchestrator_imported & HEAVY
