"""Orchestrator and workers on separate network stacks (issue 16, point 4): three Linux network
namespaces on a bridge, each service bound to its own non-loopback address with mutual TLS, the
workers enrolled with the orchestrator's secret.

(a) An experiment runs on a remote worker. (b) Cutting the link of the worker that runs a slow
experiment (link down at the switch, no process killed) gets that worker marked LOST within the
heartbeat timeout (<= 15 s) and the experiment re-dispatched to the other worker, where it
finishes once. (c) The cut-off worker finishes its attempt behind the partition; when the link
comes back its late result is not counted (the stored history has exactly one terminal event, of
attempt 2, and nothing of attempt 1 after the requeue), and the worker registers again.

The scenario itself runs inside the orchestrator's namespace (:mod:`helpers.partition` says why);
this test makes the network, runs it, checks its findings and that every namespace is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import REPO, eventually
from helpers.netns import SUBNET_PREFIX, ip, netns_names, private_network, requires_netns, sweep_stale

from codecbench.local import parent_bound_argv

pytestmark = [requires_netns, pytest.mark.timeout(240)]
SCENARIO_TIMEOUT_S = 180.0


async def test_partitioned_worker_is_lost_its_experiment_finishes_once_elsewhere_and_it_registers_again(
    tmp_path: Path,
) -> None:
    with private_network(["orchestrator", "worker-a", "worker-b"]) as hosts:
        made = {host.netns for host in hosts.values()} | {next(iter(hosts.values())).switch}
        assert all(host.address.startswith(SUBNET_PREFIX) for host in hosts.values())
        config = {"work": str(tmp_path), "hosts": {name: asdict(host) for name, host in hosts.items()}}
        scenario = await asyncio.create_subprocess_exec(
            # Bound to this process (PR_SET_PDEATHSIG through `ip netns exec`, which execs): a killed
            # pytest takes the scenario, and so the services it started, with it.
            *hosts["orchestrator"].exec_prefix, *parent_bound_argv("helpers.partition", json.dumps(config)),
            cwd=REPO / "tests", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(scenario.communicate(), SCENARIO_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(scenario.pid, signal.SIGKILL)
            await scenario.wait()
            raise
        text = output.decode(errors="replace")
        logs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(tmp_path.glob("*.log")))
        assert scenario.returncode == 0, f"the scenario failed:\n{text}\n{logs}"
        findings = json.loads(text.strip().splitlines()[-1])
        print("network partition findings:", findings)
    assert findings["quick_worker"] in ("worker-a", "worker-b")
    assert findings["lost_after_s"] <= 15.0
    assert findings["final_worker"] == findings["survivor"] != findings["victim"]
    assert findings["final_attempt"] == 2 and findings["terminal_events"] == 1
    assert findings["victim_registrations"] >= 2
    assert not made & netns_names(), "namespaces left behind"


def test_the_private_network_is_deleted_when_the_test_body_fails() -> None:
    made: set[str] = set()
    with pytest.raises(RuntimeError, match="body failed"), private_network(["one", "two"]) as hosts:
        made = {host.netns for host in hosts.values()} | {hosts["one"].switch}
        assert made <= netns_names()
        raise RuntimeError("body failed")
    assert len(made) == 3 and not made & netns_names()


async def test_a_sweep_deletes_the_namespaces_of_a_dead_run_and_kills_what_runs_in_them() -> None:
    exited = subprocess.Popen(["true"])  # its pid stands for a killed test run's
    exited.wait()
    stale, alive = f"cb-sw-{exited.pid}-abc123", f"cb-sw-{os.getpid()}-abc123"
    for netns in (stale, alive):
        ip("netns", "add", netns)
    left_running = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "600"], start_new_session=True)
    try:
        async def inside() -> bool:  # `ip netns exec` has joined the namespace (and exec'd sleep)
            return bool(subprocess.run(["ip", "netns", "pids", stale], capture_output=True, text=True).stdout.split())

        await eventually(inside, timeout_s=30, what="a process in the stale namespace")
        assert sweep_stale() == [stale]
        assert left_running.wait(timeout=30) == -signal.SIGKILL
        assert stale not in netns_names() and alive in netns_names()  # a live run's namespace stays
    finally:
        if left_running.poll() is None:
            left_running.kill()
            left_running.wait()
        for netns in (stale, alive):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
