"""``--health-port``: both services answer grpc.health.v1 in plaintext on a second port (for
Kubernetes' grpc probe, which presents no certificate), while their own port keeps refusing
plaintext callers."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers.services import free_port

from codecbench import certs
from codecbench.local import spawn_service, worker_isolation_args

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("module", ["orchestrator_svc", "worker_svc"])
async def test_health_port_serves_health_in_plaintext_beside_a_mutual_tls_port(tmp_path: Path, module: str) -> None:
    c = tmp_path / "certs"
    certs.make_quickstart(c)
    name = "orchestrator" if module == "orchestrator_svc" else "worker"
    health_port = free_port()
    extra = worker_isolation_args() if module == "worker_svc" else []
    service = await spawn_service(
        module, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "data"),
        "--tls-cert", str(c / f"{name}.pem"), "--tls-key", str(c / f"{name}-key.pem"), "--tls-ca", str(c / "ca.pem"),
        "--health-port", str(health_port), *extra, log_path=tmp_path / "service.log",
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as probe:
            reply = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(service.address) as plaintext:  # the service's port: TLS only
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert await service.stop() == 0
