"""What an agent process is allowed (issue 5): its namespaces, capabilities and cgroup limits,
and a control run showing that the cheating agent of the corpus does cheat without a sandbox."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import TEST_ADMIN_TOKEN, agent_bundle, requires_bwrap, worker_channel
from helpers.worker import request, run

from codecbench import tensors
from codecbench.v1 import types_pb2, worker_pb2, worker_pb2_grpc
from sandbox import cgroups, identity
from worker_svc.server import WorkerConfig, start_worker

pytestmark = pytest.mark.timeout(180)


@requires_bwrap
async def test_forked_agent_process_has_its_own_namespaces_and_no_capabilities(worker, worker_stub) -> None:
    assert worker.info.isolation == types_pb2.ISOLATION_BWRAP  # CI installs bubblewrap
    response = await worker_stub.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle("probe_isolation"), device=types_pb2.DEVICE_CPU,
        image=tensors.from_torch(torch.zeros(3, 8, 8, dtype=torch.uint8)),
    ))
    seen = json.loads(response.bitstream)
    # Its own PID namespace: sees its init (PID 1) and itself, no other process.
    assert seen["pid"] == 2 and seen["visible_pids"] == [1, 2] and seen["init_comm"] == "cb-init"
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_bnd"], 16) == 0 and seen["no_new_privs"] == "1"
    # An encoder's own uid (as root; decoders have another), a seccomp filter (mode 2).
    uid = identity.ENCODER_UID if identity.worker_is_root() else identity.AGENT_UID
    assert seen["uid"] == [uid] * 3 and seen["gid"] == [uid] * 3 and seen["groups"] == []
    assert seen["seccomp"] == "2"
    assert seen["interfaces"] == ["lo"]  # its own network namespace
    assert seen["cwd"].startswith("/tmp/agent-")  # its private copy of the bundle
    assert seen["comm"] == "cb-agent"


async def test_memory_cgroup_kills_at_the_limit_and_says_so() -> None:
    group = cgroups.create(memory_bytes=64 * 1024 * 1024, pids_max=16)
    assert group is not None, "cgroups are writable here (CI runs as root)"
    hog = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read(1); x = b'1' * (512 * 1024 * 1024)",
        stdin=asyncio.subprocess.PIPE,
    )
    group.add(hog.pid)
    assert hog.stdin is not None
    hog.stdin.write(b"g")
    await hog.stdin.drain()
    assert await hog.wait() == -9  # SIGKILL by the OOM killer of the cgroup
    assert group.oom_killed()
    await group.remove()
    assert not group.pids_dir.exists()


async def test_pids_cgroup_refuses_forks_past_its_limit() -> None:
    group = cgroups.create(memory_bytes=0, pids_max=4)
    assert group is not None
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import os, sys\nsys.stdin.read(1)\nn = 0\ntry:\n    while n < 50:\n        if os.fork() == 0:\n"
        "            os.read(0, 1); os._exit(0)\n        n += 1\nexcept BlockingIOError:\n    pass\nprint(n)",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    group.add(probe.pid)
    out, _ = await probe.communicate(b"g" + b"x" * 64)
    assert int(out) == 3  # the probe itself plus 3 children fill pids.max = 4
    await group.remove()


async def test_without_a_sandbox_the_cheating_decoder_does_recover_the_image(tmp_path: Path) -> None:
    """Control for the corpus: the same agent, with process-only isolation (shared /tmp), gets a
    lossless result. So the corpus's "not recovered" is the sandbox's doing, not a broken cheat."""
    handle = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=tmp_path, use_bwrap=False))
    channel = worker_channel(handle.address)
    try:
        assert handle.info.isolation == types_pb2.ISOLATION_PROCESS
        _, terminal = await run(worker_pb2_grpc.WorkerServiceStub(channel), request("hostile_cheat_files"))
        assert terminal.HasField("result")
        assert terminal.result.points[0].lossless
    finally:
        await channel.close()
        await handle.stop(0)
        for leftover in Path("/dev/shm").glob("codecbench-original-*.npy"):  # shared /dev/shm: the cheat's files
            leftover.unlink(missing_ok=True)
