"""A service refuses a port that another one is serving on (gRPC's SO_REUSEPORT default is off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator_svc.server import OrchestratorConfig, start_orchestrator
from worker_svc.server import WorkerConfig, start_worker


async def test_a_second_service_on_a_port_in_use_fails_to_bind(tmp_path: Path) -> None:
    first = await start_orchestrator(OrchestratorConfig(data_dir=tmp_path / "first"))
    try:
        with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{first.port}"):
            await start_orchestrator(OrchestratorConfig(data_dir=tmp_path / "second", port=first.port))
        with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{first.port}"):
            await start_worker(WorkerConfig(data_dir=tmp_path / "worker", port=first.port))
    finally:
        await first.stop(0)
