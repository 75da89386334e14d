"""Kernel state outside every namespace (red-team C1, L5, L6), with real agent processes.

- The seccomp filter: inside an agent (warm template and fresh interpreter) the key calls,
  ``unshare``/``clone`` with namespace flags, ``clone3`` (ENOSYS), ``ptrace``, ``bpf``, ... fail,
  while ``fork`` and threads work; with the filter off (a test-only launcher) they go through.
- The keyring pair of the red team (encoder stores each image in a world-readable key, decoder
  finds it in /proc/keys): a blind guess now; lossless at 0 bytes with the filter off.
- The inotify pair (per-uid instance counts): a blind guess through the worker; controls at the
  sandbox level: with encoder and decoder alive together as one uid the value gets through,
  as two uids it does not.
- L5: an agent that closes its request socket and sleeps is reported within seconds.
- L6: cgroups left by a worker that is gone are removed when a worker starts; a live worker's stay.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch
from helpers import TEST_ADMIN_TOKEN, agent_bundle, requires_bwrap, worker_channel
from helpers.worker import request, run
from PIL import Image

from codecbench import errors, tensors, values
from codecbench.v1 import errors_pb2, sandbox_pb2, types_pb2, worker_pb2, worker_pb2_grpc
from sandbox import cgroups, identity, isolation
from sandbox.launchers import Launcher, TemplateLauncher, make_launcher
from sandbox.process import OutputBudget, SandboxLimits, SandboxProcess
from sandbox.view import agent_view
from worker_svc.sandboxed_agent import SandboxedAgent, SandboxSettings
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

pytestmark = pytest.mark.timeout(300)
EPERM, ENOSYS = 1, 38
MODES = pytest.mark.parametrize("warm", [True, False], ids=["warm-template", "fresh"])


@pytest_asyncio.fixture
async def make_worker(tmp_path: Path) -> AsyncIterator:
    """Starts bwrap workers; ``seccomp_filter=False`` gives one whose agents run without the filter."""
    started: list[tuple[WorkerHandle, object]] = []

    async def start(warm: bool = True, seccomp_filter: bool = True) -> worker_pb2_grpc.WorkerServiceStub:
        handle = await start_worker(WorkerConfig(data_dir=tmp_path / f"worker-{len(started)}", use_bwrap=True,
                                                 warm_template=warm, admin_token=TEST_ADMIN_TOKEN))
        if not seccomp_filter:
            old = handle.servicer.settings.launcher
            view = old.fallback.view if isinstance(old, TemplateLauncher) else old.view
            await old.close()
            launcher = await make_launcher(isolation.BWRAP, view, warm=warm, seccomp_filter=False)
            handle.servicer.settings = SandboxSettings(launcher=launcher, limits=handle.servicer.settings.limits)
        channel = worker_channel(handle.address)
        started.append((handle, channel))
        return worker_pb2_grpc.WorkerServiceStub(channel)

    yield start
    for handle, channel in started:
        await channel.close()  # type: ignore[attr-defined]
        await handle.stop(0)


async def _probe(stub: worker_pb2_grpc.WorkerServiceStub) -> dict[str, int]:
    response = await stub.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle("probe_syscalls"), device=types_pb2.DEVICE_CPU,
        image=tensors.from_torch(torch.zeros(3, 8, 8, dtype=torch.uint8)),
    ))
    return json.loads(response.bitstream)


@requires_bwrap
@MODES
async def test_seccomp_refuses_namespaces_keys_and_tracing_inside_an_agent(warm: bool, make_worker) -> None:
    seen = await _probe(await make_worker(warm=warm))
    for name in ("add_key", "keyctl", "request_key", "unshare_user", "unshare_net", "clone_newuser", "ptrace", "bpf",
                 "perf_event_open", "userfaultfd", "io_uring_setup", "mount", "setns"):
        assert seen[name] == EPERM, (name, seen)
    assert seen["clone3"] == ENOSYS, seen  # glibc falls back to clone, whose flags the filter reads
    assert seen["fork_status"] == 7 and seen["thread"] == 1, seen  # fork and threads still work


@requires_bwrap
async def test_control_without_the_filter_the_same_calls_go_through(make_worker) -> None:
    seen = await _probe(await make_worker(seccomp_filter=False))
    assert seen["unshare_user"] == 0 and seen["add_key"] == 0 and seen["keyctl"] == 0, seen
    assert seen["clone3"] != ENOSYS, seen


# --- the keyring pair ---------------------------------------------------------------------------

SIZE = 16


def _noise_dataset(count: int, seed: int) -> tuple[types_pb2.DatasetRef, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images, arrays = [], []
    for i in range(count):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(out, format="PNG")
        images.append(types_pb2.BlobRef(name=f"noise{i}.png", content=out.getvalue()))
        arrays.append(pixels)
    return types_pb2.DatasetRef(name="noise", images=images), arrays


async def _keyring_run(stub: worker_pb2_grpc.WorkerServiceStub) -> list:
    dataset, _ = _noise_dataset(3, seed=11)
    point = {"tag": f"cbx-{uuid.uuid4().hex[:8]}", "height": SIZE, "width": SIZE}
    _, terminal = await run(stub, request("hostile_keyring", dataset=dataset, points=[point]))
    assert terminal.HasField("result"), errors.describe(terminal.error)
    return list(terminal.result.points[0].images)


@requires_bwrap
@MODES
async def test_keyring_pair_gets_a_blind_guess(warm: bool, make_worker) -> None:
    for item in await _keyring_run(await make_worker(warm=warm)):
        assert item.metrics.bytes == 0
        assert not item.metrics.lossless
        assert item.metrics.psnr_db < 12.0  # black against uniform noise: ~4.8 dB


@requires_bwrap
async def test_control_keyring_pair_without_the_filter_is_lossless_at_zero_bytes(make_worker) -> None:
    """Encoder and decoder are different uids and never alive together, yet a key outlives the
    encoder and a world-readable one is listed in every process's /proc/keys: only the filter
    closes this channel."""
    for item in await _keyring_run(await make_worker(seccomp_filter=False)):
        assert item.metrics.bytes == 0 and item.metrics.lossless


# --- the inotify pair ---------------------------------------------------------------------------

INOTIFY_VALUES = (0, 60, 20)  # the red team's


def _uniform_dataset() -> types_pb2.DatasetRef:
    images = []
    for i, value in enumerate(INOTIFY_VALUES):
        out = io.BytesIO()
        Image.fromarray(np.full((SIZE, SIZE, 3), value, dtype=np.uint8), "RGB").save(out, format="PNG")
        images.append(types_pb2.BlobRef(name=f"flat{i}.png", content=out.getvalue()))
    return types_pb2.DatasetRef(name="flat", images=images)


@requires_bwrap
@MODES
async def test_inotify_pair_gets_a_blind_guess(warm: bool, make_worker) -> None:
    """Through the worker: the encoder of a point has ended, and is another uid, when its decoder runs."""
    stub = await make_worker(warm=warm)
    _, terminal = await run(stub, request("hostile_inotify", dataset=_uniform_dataset(), points=[{"hold_s": 1.0}]))
    assert terminal.HasField("result"), errors.describe(terminal.error)
    items = list(terminal.result.points[0].images)
    assert [item.metrics.lossless for item in items] == [True, False, False]  # 0 is also the blind guess
    for item in items[1:]:
        assert item.metrics.psnr_db < 30.0


async def _open_as(launcher: Launcher, role: sandbox_pb2.SandboxRole.ValueType, uid: int) -> SandboxedAgent:
    """An agent side like SandboxedAgent.open, but as ``uid`` (controls: the old shared uid)."""
    budget = OutputBudget(1 << 20, lambda *_: None)
    process = await SandboxProcess.start(launcher, SandboxLimits(), budget, uid=uid)
    load = sandbox_pb2.SandboxLoad(agent=agent_bundle("hostile_inotify"), role=role, device=types_pb2.DEVICE_CPU)
    response, _ = await process.call(sandbox_pb2.SandboxRequest(load=load), "loaded", types_pb2.PHASE_LOAD, 60)
    side = SandboxedAgent(process, role, response.loaded.contract)
    await side.set_params(values.params_from_python({}), 60)
    return side


async def _concurrent_inotify(launcher: Launcher, encoder_uid: int, decoder_uid: int) -> list[int]:
    """Encoder and decoder alive together (as before the fix): the values the decoder reads."""
    encoder = await _open_as(launcher, sandbox_pb2.SANDBOX_ROLE_ENCODER, encoder_uid)
    decoder = await _open_as(launcher, sandbox_pb2.SANDBOX_ROLE_DECODER, decoder_uid)
    try:
        received = []
        for value in INOTIFY_VALUES:
            encoded, _ = await encoder.encode(torch.full((3, 4, 4), value, dtype=torch.uint8), 60)
            decoded, _ = await decoder.decode(encoded, 60)
            received.append(int(tensors.to_torch(decoded.reconstruction)[0, 0, 0]))
        return received
    finally:
        await encoder.close()
        await decoder.close()


@requires_bwrap
@pytest.mark.skipif(not identity.worker_is_root(), reason="distinct uids need a root worker")
async def test_inotify_counts_carry_data_between_one_uid_but_not_between_the_two_role_uids() -> None:
    launcher = await make_launcher(isolation.BWRAP, agent_view(hidden=(), gpu=False), warm=True)
    try:
        same = await _concurrent_inotify(launcher, identity.AGENT_UID, identity.AGENT_UID)
        assert same == list(INOTIFY_VALUES), "control: one uid, alive together: the channel works"
        apart = await _concurrent_inotify(launcher, identity.ENCODER_UID, identity.DECODER_UID)
        assert apart == [0, 0, 0], apart
    finally:
        await launcher.close()


# --- L5: a closed socket ------------------------------------------------------------------------


@requires_bwrap
@MODES
async def test_an_agent_closing_its_socket_and_sleeping_is_reported_within_seconds(warm: bool, make_worker) -> None:
    stub = await make_worker(warm=warm)
    started = time.monotonic()
    _, terminal = await run(stub, request("hostile_close_socket", timeouts=types_pb2.Timeouts(encode_s=300)))
    elapsed = time.monotonic() - started
    assert terminal.HasField("error")
    assert terminal.error.kind == errors_pb2.ERROR_KIND_SANDBOX_CRASH, errors.describe(terminal.error)
    assert terminal.error.phase == types_pb2.PHASE_ENCODE
    assert elapsed < 30.0, f"reported after {elapsed:.1f} s"


# --- L6: cgroups of dead workers ----------------------------------------------------------------


def _v1_dirs(tag: str, name: str) -> list[Path]:
    return [cgroups._v1_base(controller) / cgroups.PREFIX / tag / name for controller in ("pids", "memory")]


async def test_cgroups_of_a_worker_that_is_gone_are_swept_and_a_live_workers_kept() -> None:
    probe = cgroups.create(64 << 20, 8)
    if probe is None or probe.v2:
        pytest.skip("needs writable cgroup v1 hierarchies (root)")
    await probe.remove()
    gone = subprocess.Popen(["sleep", "60"])
    gone_tag = f"worker-{gone.pid}-{cgroups._start_time(gone.pid)}"
    gone.kill()
    gone.wait()
    leftovers = _v1_dirs(gone_tag, "agent-0123456789ab")
    live = _v1_dirs(cgroups.worker_tag(), "agent-live00000000")
    straggler = subprocess.Popen(["sleep", "60"])
    try:
        for directory in (*leftovers, *live):
            directory.mkdir(parents=True)
        (leftovers[0] / "cgroup.procs").write_text(str(straggler.pid))  # a process that escaped its worker
        assert cgroups.sweep() >= 4  # two agent cgroups and two worker folders
        assert not any(d.exists() or d.parent.exists() for d in leftovers)
        assert straggler.wait(timeout=10) == -signal.SIGKILL
        assert all(d.exists() for d in live)
    finally:
        straggler.kill()
        for directory in live:
            if directory.exists():
                directory.rmdir()
    after = cgroups.create(0, 8)  # this worker still makes its own afterwards
    assert after is not None and cgroups.worker_tag() in str(after.pids_dir)
    await after.remove()
