"""The network-partition scenario of ``tests/test_network_partition.py``, run inside the
orchestrator's network namespace (``ip netns exec NS python -m helpers.partition CONFIG``).

It runs there because a client must be on the private network to reach the orchestrator, and a
gRPC client cannot be moved into a namespace from a process whose gRPC threads already exist (a
socket belongs to the namespace of the thread that opens it). The test process makes and deletes
the namespaces; this process starts the services (each with ``ip netns exec`` into its host),
drives them, asserts, and prints one JSON line of findings for the test to check again.

CONFIG is JSON: ``{"work": DIR, "hosts": {name: Host fields}}`` with hosts ``orchestrator``,
``worker-a`` and ``worker-b``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from codecbench import certs, rpc
from codecbench.client import Client
from codecbench.local import WORKER_LINE, LocalService, eventually, spawn_service, worker_isolation_args
from codecbench.v1 import experiment_pb2, orchestrator_pb2, types_pb2
from helpers import agent_bundle
from helpers.netns import Host, reachable
from helpers.services import write_images

ORCHESTRATOR_PORT = 50051
WORKER_PORT = 50052
# Small, so that a cut link is noticed quickly (the orchestrator asks for a heartbeat every
# second), yet five missed heartbeats: a worker slowed down by a busy machine is not taken for lost.
HEARTBEAT_TIMEOUT_S = 5.0
# The bound: a partitioned worker is LOST within 15 s of the cut.
LOST_WITHIN_S = 15.0
# Each encode of the slow agent sleeps this long: 3 images plus the untimed warm-up encode make an
# attempt last about 4 s, so the cut lands mid-experiment and the cut-off worker finishes while
# its link is still down.
DELAY_S = 1.0
RUNNING = experiment_pb2.EXPERIMENT_STATE_RUNNING
SUCCEEDED = experiment_pb2.EXPERIMENT_STATE_SUCCEEDED
LOST = orchestrator_pb2.WORKER_STATE_LOST
READY = orchestrator_pb2.WORKER_STATE_READY


def log_events(service: LocalService, event: str, **fields: object) -> list[dict[str, object]]:
    """The service's structured log lines with this ``event`` and these field values."""
    found = []
    for line in service.log_lines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            found.append(record)
    return found


async def run(work: Path, hosts: dict[str, Host]) -> dict[str, object]:
    """Starts the services, runs (a), (b) and (c) of the test's docstring, stops them; returns findings."""
    orch_host = hosts["orchestrator"]
    tls_dir = work / "certs"
    certs.make_quickstart(tls_dir, [h.address for h in hosts.values()])
    token_file = work / "admin.token"
    orch_address = f"{orch_host.address}:{ORCHESTRATOR_PORT}"
    services: list[LocalService] = []
    try:
        orchestrator = await spawn_service(
            "orchestrator_svc", "--host", orch_host.address, "--port", str(ORCHESTRATOR_PORT),
            "--data-dir", str(work / "orchestrator"), "--admin-token-file", str(token_file),
            "--heartbeat-timeout-s", str(HEARTBEAT_TIMEOUT_S), "--tls-cert", str(tls_dir / "orchestrator.pem"),
            "--tls-key", str(tls_dir / "orchestrator-key.pem"), "--tls-ca", str(tls_dir / "ca.pem"),
            log_path=work / "orchestrator.log", name="orchestrator", wrapper=orch_host.exec_prefix,
        )
        services.append(orchestrator)
        workers: dict[str, LocalService] = {}
        ids: dict[str, str] = {}
        for name in ("worker-a", "worker-b"):
            host = hosts[name]
            workers[name] = await spawn_service(
                "worker_svc", "--host", host.address, "--port", str(WORKER_PORT), "--orchestrator", orch_address,
                "--enroll-token-file", str(work / "orchestrator" / "enroll.token"),
                "--tls-cert", str(tls_dir / "worker.pem"), "--tls-key", str(tls_dir / "worker-key.pem"),
                "--tls-ca", str(tls_dir / "ca.pem"), "--data-dir", str(work / name), *worker_isolation_args(),
                log_path=work / f"{name}.log", name=name, wrapper=host.exec_prefix,
            )
            services.append(workers[name])
            match = WORKER_LINE.search(workers[name].ready_line)
            assert match and match.group(2) == f"{host.address}:{WORKER_PORT}", workers[name].ready_line
            ids[name] = match.group(1)
        by_id = {worker_id: name for name, worker_id in ids.items()}
        for name in workers:  # the link is real: this namespace reaches each worker's address
            assert reachable(hosts[name].address, WORKER_PORT), f"{name} is not reachable before any cut"

        tls = rpc.TlsConfig(cert=tls_dir / "client.pem", key=tls_dir / "client-key.pem", ca=tls_dir / "ca.pem")
        async with Client(orch_address, token_file=token_file, tls=tls) as client:

            async def states() -> dict[str, int]:
                return {by_id[w.info.worker_id]: w.state for w in await client.workers() if w.info.worker_id in by_id}

            async def both_ready() -> bool:
                return await states() == {"worker-a": READY, "worker-b": READY}

            await eventually(both_ready, timeout_s=60, what="both workers registered and READY")
            await client.upload_dataset("three", write_images(work / "images", [(48, 48)] * 3))
            slow = agent_bundle("slow_lossless")

            # (a) An experiment runs on a remote worker, over TLS, its images read over the network.
            quick = await client.wait((await client.submit(slow, dataset="three", points=[{"delay_s": 0}],
                                                           no_cache=True)).experiment_id)
            assert quick.state == SUCCEEDED, quick
            assert quick.worker_id in by_id, quick.worker_id

            # (b) The link of the worker running a slow experiment is cut in its encode phase.
            exp = await client.submit(slow, dataset="three", points=[{"delay_s": DELAY_S}], max_attempts=3,
                                      no_cache=True)
            async for event in client.watch(exp.experiment_id):
                if event.WhichOneof("event") == "progress" and event.progress.phase == types_pb2.PHASE_ENCODE:
                    break
            first = await client.get(exp.experiment_id)
            assert first.state == RUNNING and first.attempt == 1, first
            victim_name = by_id[first.worker_id]
            survivor_name = next(name for name in workers if name != victim_name)
            victim, victim_host = workers[victim_name], hosts[victim_name]
            victim_host.link(up=False)
            cut = time.monotonic()
            assert not reachable(victim_host.address, WORKER_PORT), "the cut link still carries packets"
            assert victim.process.returncode is None  # nothing was killed

            async def victim_lost() -> bool:
                return (await states()).get(victim_name) == LOST

            await eventually(victim_lost, timeout_s=LOST_WITHIN_S + 5, interval_s=0.1,
                             what=f"{victim_name} marked LOST after its link was cut")
            lost_after_s = time.monotonic() - cut
            assert lost_after_s <= LOST_WITHIN_S, f"{victim_name} marked LOST only {lost_after_s:.1f} s after the cut"

            async def moved() -> bool:
                now = await client.get(exp.experiment_id)
                return now.attempt == 2 and now.worker_id == ids[survivor_name]

            await eventually(moved, timeout_s=30, what=f"the experiment re-dispatched to {survivor_name} (attempt 2)")

            # (c) The cut-off worker finishes attempt 1 behind the partition: a late result exists...
            await eventually(
                lambda: log_events(victim, "experiment.succeeded", experiment_id=exp.experiment_id, attempt=1),
                timeout_s=30, what=f"{victim_name} finished attempt 1 while partitioned")
            victim_host.link(up=True)
            await eventually(lambda: reachable(victim_host.address, WORKER_PORT), timeout_s=10,
                             what=f"{victim_name} reachable again")

            # ... and once the link is back, the worker registers again (a LOST worker's heartbeat is
            # refused) and becomes READY.
            async def victim_back() -> bool:
                return (await states()).get(victim_name) == READY

            await eventually(victim_back, timeout_s=45, what=f"{victim_name} registered again and READY")
            registrations = len(log_events(victim, "worker.registered"))
            assert registrations >= 2, f"{victim_name} registered {registrations} time(s)"
            final = await client.wait(exp.experiment_id)
            # The late result of attempt 1 is not counted: the experiment finished once, on the
            # survivor, at attempt 2, and its stored history has no event of attempt 1 after the requeue.
            history = [e async for e in client.watch(exp.experiment_id)]
            terminal = [e for e in history if e.WhichOneof("event") in ("result", "error")]
            requeue = next(i for i, e in enumerate(history)
                           if e.WhichOneof("event") == "state_change" and e.state_change.attempt == 2)
            late = [e for e in history[requeue:] if e.attempt == 1]
            assert final.state == SUCCEEDED and final.attempt == 2 and final.worker_id == ids[survivor_name], final
            assert len(terminal) == 1 and terminal[0].attempt == 2 and terminal[0].HasField("result"), terminal
            assert not late, late
            assert ids[victim_name] in history[requeue].state_change.reason, history[requeue].state_change.reason
            assert victim.process.returncode is None  # still the same process: it was partitioned, not killed
            return {
                "quick_worker": by_id[quick.worker_id], "victim": victim_name, "survivor": survivor_name,
                "lost_after_s": round(lost_after_s, 2), "final_attempt": final.attempt,
                "final_worker": by_id[final.worker_id], "terminal_events": len(terminal),
                "victim_registrations": registrations, "requeue_reason": history[requeue].state_change.reason,
                "events": len(history),
            }
    finally:
        for service in reversed(services):
            await service.stop()


def main() -> None:
    """Reads CONFIG from argv[1], runs the scenario, prints its findings as one JSON line."""
    config = json.loads(sys.argv[1])
    hosts = {name: Host(**fields) for name, fields in config["hosts"].items()}
    findings = asyncio.run(run(Path(config["work"]), hosts))
    print(json.dumps(findings), flush=True)


if __name__ == "__main__":
    main()
