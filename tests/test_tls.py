"""TLS and mutual TLS with real certificates (``codecbench-orchestrator certs``), the README's
"Running on several hosts" followed command by command on 127.0.0.1, and the services' logs
searched for every secret of that run."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import stat
import sys
from pathlib import Path

import pytest
from helpers import REPO, agent_bundle
from helpers.services import free_port, orchestrator

from codecbench import certs, errors, rpc
from codecbench.client import Client
from codecbench.local import LocalService, spawn_service, worker_isolation_args

pytestmark = pytest.mark.timeout(240)
# The console scripts, as modules of this interpreter.
MODULES = {"codecbench-orchestrator": "orchestrator_svc", "codecbench-worker": "worker_svc",
           "codecbench": "codecbench.cli"}


def readme_commands() -> list[str]:
    """The command lines of the README's blocks marked ``several-hosts``, in order."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- several-hosts[^>]*-->\n```\n(.*?)```\n<!-- /several-hosts -->", text, re.DOTALL)
    assert len(blocks) == 3, "the README's 'Running on several hosts' blocks moved"
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_certs_command_writes_a_ca_and_private_keys_0600(tmp_path: Path) -> None:
    written = certs.make_quickstart(tmp_path / "c", ["gpu1.example.org", "10.1.2.3"])
    assert {p.name for p in written} == {"ca.pem", "ca-key.pem", "orchestrator.pem", "orchestrator-key.pem",
                                         "worker.pem", "worker-key.pem", "client.pem", "client-key.pem"}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == (0o600 if path.name.endswith("-key.pem") else 0o644), path
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "c" / "worker.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gpu1.example.org" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "10.1.2.3"}
    with pytest.raises(FileExistsError):
        certs.make_quickstart(tmp_path / "c")


async def test_plaintext_or_certificate_less_client_against_mutual_tls_fails(tmp_path: Path) -> None:
    c = tmp_path / "certs"
    certs.make_quickstart(c)
    tls = rpc.TlsConfig(cert=c / "orchestrator.pem", key=c / "orchestrator-key.pem", ca=c / "ca.pem")
    async with orchestrator(tmp_path / "orch", tls=tls) as orch:
        for client_tls in (None, rpc.TlsConfig(ca=c / "ca.pem")):  # plaintext; TLS without a client certificate
            async with Client(orch.address, tls=client_tls) as client:
                with pytest.raises(errors.Unavailable):
                    await client.list()
        mutual = rpc.TlsConfig(cert=c / "client.pem", key=c / "client-key.pem", ca=c / "ca.pem")
        async with Client(orch.address, tls=mutual) as client:
            assert await client.list() == []
            exp = await client.submit(agent_bundle("jpeg"))
            assert exp.owner == "admin"
        async with Client(orch.address, token="wrong", tls=mutual) as client:
            with pytest.raises(errors.Unauthenticated):  # a certificate is no token
                await client.list()


@pytest.mark.parametrize("module", ["orchestrator_svc", "worker_svc"])
async def test_services_refuse_plaintext_beyond_loopback_unless_insecure(tmp_path: Path, module: str) -> None:
    extra = worker_isolation_args() if module == "worker_svc" else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 2 and "without TLS" in stderr.decode()


async def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{stdout.decode()}\n{stderr.decode()}"
    return stdout.decode()


async def test_readme_several_hosts_runs_with_mutual_tls_on_loopback_and_logs_no_secret(tmp_path: Path) -> None:
    """Each README command, with the hosts made 127.0.0.1, the ports free ones, agents/ from the checkout."""
    orch_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECBENCH_")}
    substitutions = {"orch.example.org:50051": f"127.0.0.1:{orch_port}", "--port 50051": f"--port {orch_port}",
                     "--host gpu1.example.org --port 50052": "--host 127.0.0.1 --port 0",
                     "agents/jpeg": str(REPO / "agents" / "jpeg")}
    services: list[LocalService] = []
    token = ""
    try:
        for line in readme_commands():
            for old, new in substitutions.items():
                line = line.replace(old, new)
            if line.startswith("export CODECBENCH_TOKEN="):
                env["CODECBENCH_TOKEN"] = token
                continue
            program, *args = shlex.split(line)
            if program == "codecbench-orchestrator" and args[0] not in ("certs", "token"):
                services.append(await spawn_service(MODULES[program], *args, "--log-level", "debug", cwd=tmp_path,
                                                    env=env, log_path=tmp_path / "orchestrator.log"))
            elif program == "codecbench-worker":
                services.append(await spawn_service(MODULES[program], *args, "--log-level", "debug",
                                                    *worker_isolation_args(), cwd=tmp_path, env=env,
                                                    log_path=tmp_path / "worker.log"))
            else:
                out = await _run([sys.executable, "-m", MODULES[program], *args], tmp_path, env)
                if args[:2] == ["token", "create"]:
                    token = out.strip()
                if args[:1] == ["run"] or "run" in args:
                    assert "SUCCEEDED" in out and "quality=50" in out, out
        assert len(services) == 2 and token
    finally:
        for service in reversed(services):
            await service.stop()
    # Nothing secret in either log: the user's token, the enrollment secret, any private key.
    secrets = [token, (tmp_path / ".codecbench" / "enroll.token").read_text().strip()]
    for key in (tmp_path / "certs").glob("*-key.pem"):
        secrets += [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    logs = "\n".join(s.log_path.read_text() for s in services)
    assert "worker.registered" in logs and "experiments.dispatched" in logs  # the logs are the run's
    for secret in secrets:
        assert secret not in logs
    assert "PRIVATE KEY" not in logs and "Bearer" not in logs
