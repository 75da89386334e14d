"""Confinement of agent processes (issue 11), with real workers and real agent processes.

- The decoder is blind: given the image size and a pixel hash, a decoder that searches every
  path it can list (files, and image members of zip/wheel/egg archives) finds no original, for a
  dataset uploaded from a folder next to the checkout, from a home directory, and for the
  built-in photos with a wheel copy of scikit-image outside the venv. Controls: the same agent
  with the view widened to ``/`` finds every original, so "not found" is the view's doing.
- Agents run as uid 65534: a root-only (0600) file in a folder they are shown is unreadable.
- An agent killing itself is reported with its true signal (9, 6, 15, 11) under bwrap (warm
  template and fresh interpreter) and without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch
from helpers import REPO, TEST_ADMIN_TOKEN, agent_bundle, requires_bwrap, worker_channel
from helpers.worker import request, run
from PIL import Image

from codecbench import datasets, errors, values
from codecbench.v1 import errors_pb2, experiment_pb2, types_pb2, worker_pb2, worker_pb2_grpc
from sandbox import isolation
from sandbox.launchers import make_launcher
from sandbox.view import FilesystemView, agent_view, builtin_dataset_dirs
from worker_svc.sandboxed_agent import SandboxSettings
from worker_svc.server import WorkerConfig, WorkerHandle, start_worker

pytestmark = pytest.mark.timeout(300)
SEARCH_TIMEOUTS = types_pb2.Timeouts(load_s=60, encode_s=60, decode_s=120)


@dataclass
class Worker:
    handle: WorkerHandle
    stub: worker_pb2_grpc.WorkerServiceStub


@pytest_asyncio.fixture
async def make_worker(tmp_path: Path) -> AsyncIterator:
    """Starts workers; ``view`` replaces the agents' filesystem view (controls widen it)."""
    started: list[tuple[WorkerHandle, object]] = []

    async def start(use_bwrap: bool = True, warm: bool = True, view: FilesystemView | None = None) -> Worker:
        handle = await start_worker(WorkerConfig(data_dir=tmp_path / f"worker-{len(started)}", use_bwrap=use_bwrap,
                                                 warm_template=warm, admin_token=TEST_ADMIN_TOKEN))
        if view is not None:
            await handle.servicer.settings.launcher.close()
            launcher = await make_launcher(isolation.BWRAP, view, warm=warm)
            handle.servicer.settings = SandboxSettings(launcher=launcher, limits=handle.servicer.settings.limits)
        channel = worker_channel(handle.address)
        started.append((handle, channel))
        return Worker(handle, worker_pb2_grpc.WorkerServiceStub(channel))

    yield start
    for handle, channel in started:
        await channel.close()  # type: ignore[attr-defined]
        await handle.stop(0)


# --- the hostile decoder ------------------------------------------------------------------------


def _noise_png(path: Path, height: int, width: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def places() -> Iterator[dict[str, Path]]:
    """Folders a user may upload a dataset from, outside the test's tmp dir on purpose (that is
    the point), removed at the end: next to the checkout, in a home directory under /home, and a
    folder under /opt holding a wheel copy of scikit-image (its built-in photos included). All
    world-readable, as such folders usually are: only the view may hide them."""
    made = {
        "next_to_checkout": Path(tempfile.mkdtemp(prefix="cb-test-dataset-", dir=REPO.parent)),
        "home": Path(tempfile.mkdtemp(prefix="cb-test-home-", dir="/home")),
        "wheels": Path(tempfile.mkdtemp(prefix="cb-test-wheels-", dir="/opt")),
    }
    try:
        pictures = made["home"] / "Pictures"
        pictures.mkdir()
        for i, (h, w) in enumerate(((40, 56), (72, 64))):
            _noise_png(made["next_to_checkout"] / f"img{i}.png", h, w, seed=100 + i)
            _noise_png(pictures / f"holiday{i}.png", h + 8, w + 8, seed=200 + i)
        skimage_data = builtin_dataset_dirs()[0]
        with zipfile.ZipFile(made["wheels"] / "scikit_image-0.0-cp311-cp311-linux_x86_64.whl", "w") as wheel:
            for file in sorted(skimage_data.iterdir()):
                if file.is_file():
                    wheel.write(file, f"skimage/data/{file.name}")
        for folder in (*made.values(), pictures):
            folder.chmod(0o755)
            for file in folder.iterdir():
                if file.is_file():
                    file.chmod(0o644)
        made["pictures"] = pictures
        yield made
    finally:
        for folder in made.values():
            shutil.rmtree(folder, ignore_errors=True)


def _uploaded(folder: Path) -> types_pb2.DatasetRef:
    """The dataset `codecbench datasets add FOLDER` makes: the files' bytes, by name."""
    files = sorted(p for p in folder.iterdir() if p.suffix in datasets.IMAGE_SUFFIXES)
    return types_pb2.DatasetRef(name=folder.name, images=[
        types_pb2.BlobRef(name=p.name, content=p.read_bytes()) for p in files
    ])


def _originals(dataset: types_pb2.DatasetRef) -> dict[str, torch.Tensor]:
    if not dataset.images:
        return {img.name: img.pixels for img in datasets.load_photos()}
    return {img.name: datasets.decode_image(img.name, img.content).pixels for img in dataset.images}


async def _search(worker: Worker, dataset: types_pb2.DatasetRef, roots: list[Path]
                  ) -> tuple[experiment_pb2.ExperimentResult, list[str]]:
    events, terminal = await run(worker.stub, request(
        "hostile_search_original", dataset=dataset, timeouts=SEARCH_TIMEOUTS,
        points=[{"roots": ",".join(map(str, [*roots, "/"]))}],
    ))
    assert terminal.HasField("result"), errors.describe(terminal.error)
    reports = [e.log.text for e in events if e.HasField("log") and e.log.text.startswith("searched ")]
    return terminal.result, reports


def _stats(report: str) -> dict[str, str]:
    return dict(field.split("=") for field in report.split()[1:])


def _assert_blind(result: experiment_pb2.ExperimentResult, reports: list[str], originals: dict) -> None:
    """Every reconstruction is the mid-grey guess, after a search that did run: it listed the
    runtime's files and decoded at least the decoy image of its own bundle."""
    assert reports and all(_stats(r)["found"] == "False" for r in reports), reports
    stats = _stats(reports[0])
    assert int(stats["files"]) > 1000 and int(stats["decoded"]) >= 1, stats
    for item in result.points[0].images:
        original = originals[item.image_name].to(torch.float64)
        assert not item.metrics.lossless, f"{item.image_name}: the decoder found the original"
        grey_mse = float(((original - 128) ** 2).mean())
        # The PSNR of a blind guess, exactly: the reconstruction is the mid-grey image.
        assert math.isclose(item.metrics.mse, grey_mse, rel_tol=1e-9), item.image_name


def _assert_recovered(result: experiment_pb2.ExperimentResult, reports: list[str]) -> None:
    assert all(_stats(r)["found"] == "True" for r in reports), reports
    assert all(item.metrics.lossless for item in result.points[0].images)
    assert all(item.metrics.bytes == 16 for item in result.points[0].images)


CASES = {
    "a: uploaded from a folder next to the checkout": ("next_to_checkout", "next_to_checkout"),
    "b: uploaded from a home directory": ("pictures", "home"),
    "c: built-in photos, a wheel of scikit-image outside the venv": (None, "wheels"),
}


@requires_bwrap
@pytest.mark.parametrize("case", list(CASES))
async def test_decoder_finds_no_original_anywhere_it_can_list(case: str, make_worker, places) -> None:
    folder, searched_first = CASES[case]
    dataset = _uploaded(places[folder]) if folder else types_pb2.DatasetRef(name=datasets.PHOTOS)
    blind = await make_worker()
    result, reports = await _search(blind, dataset, [places[searched_first]])
    _assert_blind(result, reports, _originals(dataset))


@requires_bwrap
async def test_control_with_the_view_widened_to_root_the_same_decoder_finds_every_original(
    make_worker, places
) -> None:
    """The control the blindness tests rest on: only the view differs (the built-in dataset
    folders stay hidden, so case c can only succeed through the wheel). The upload folders are
    bound as well, for a checkout under /tmp, which the top-level folders leave out."""
    view = agent_view(hidden=(), gpu=False).widened(*_root_folders(), *places.values())
    widened = await make_worker(view=view)
    for case, (folder, searched_first) in CASES.items():
        dataset = _uploaded(places[folder]) if folder else types_pb2.DatasetRef(name=datasets.PHOTOS)
        result, reports = await _search(widened, dataset, [places[searched_first]])
        _assert_recovered(result, reports)
        assert case


def _root_folders() -> list[Path]:
    """``/`` as the old view bound it, folder by folder: all but the folders the sandbox mounts
    itself (/proc, /sys, /dev, /tmp) and /root (0700: uid 65534 could not cross it anyway, and
    binding it whole would hide the pyenv runtime this machine keeps under it)."""
    own = {"proc", "sys", "dev", "tmp", "root"}
    return [p for p in Path("/").iterdir() if p.is_dir() and not p.is_symlink() and p.name not in own]


def test_view_is_an_allow_list() -> None:
    """What agent_view binds: the runtime and the two code packages, nothing of the checkout
    around them, no home or data folders; image files inside are masked."""
    view = agent_view(hidden=(), gpu=False)
    assert Path("/") not in view.binds
    # The interpreter and the virtualenv may live anywhere (a venv inside the checkout, under /home):
    # they are bound; nothing else of those folders is.
    runtime = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    for path in view.binds:
        if any(path.is_relative_to(r) for r in runtime):
            continue
        for forbidden in ("/home", "/opt", "/srv", "/mnt", "/media", "/var"):
            assert not path.is_relative_to(forbidden), path
        assert not path.is_relative_to(REPO) or path in (REPO / "codecbench", REPO / "sandbox"), path
    assert set(builtin_dataset_dirs()) <= set(view.masked_dirs)
    bound_dirs = [p for p in view.binds if p.is_dir() and not p.is_relative_to("/sys")]
    masked = set(view.masked_files)
    for root in bound_dirs:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(folder, d) not in view.masked_dirs]
            for name in files:
                if Path(name).suffix.lower() in {".png", ".jpg", ".jpeg"}:
                    assert Path(folder, name) in masked, Path(folder, name)


# --- identity -------------------------------------------------------------------------------------


@requires_bwrap
@pytest.mark.parametrize("warm", [True, False], ids=["warm-template", "fresh"])
async def test_root_only_file_is_unreadable_from_an_agent(warm: bool, make_worker, tmp_path: Path) -> None:
    """A folder shown to the agent holds a 0644 file (readable: the folder is visible) and a
    root-only 0600 file: "Permission denied", although the worker runs as root."""
    if os.geteuid() != 0:
        pytest.skip("needs a root worker: a root-only file is unreadable to any other worker anyway")
    shown = tmp_path / "shown"
    shown.mkdir(mode=0o755)
    shown.chmod(0o755)
    (shown / "public.txt").write_text("public")
    (shown / "public.txt").chmod(0o644)
    secret = shown / "secret.txt"
    secret.write_text("root only")
    secret.chmod(0o600)
    worker = await make_worker(warm=warm, view=agent_view(hidden=(), gpu=False).widened(shown))
    response = await worker.stub.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle("probe_files"), device=types_pb2.DEVICE_CPU, image=_tiny_image(),
        params=values.params_from_python({"paths": f"{shown}/public.txt,{secret}"}),
    ))
    seen = json.loads(response.bitstream)
    assert seen[f"{shown}/public.txt"] == "public"
    assert seen[str(secret)] == "PermissionError: Permission denied"


def _tiny_image() -> types_pb2.Tensor:
    from codecbench import tensors

    return tensors.from_torch(torch.zeros(3, 8, 8, dtype=torch.uint8))


# --- signals ----------------------------------------------------------------------------------------

SIGNALS = {"SIGKILL": signal.SIGKILL, "abort": signal.SIGABRT, "SIGTERM": signal.SIGTERM, "SIGSEGV": signal.SIGSEGV}
MODES = {
    "bwrap-warm-template": {"use_bwrap": True, "warm": True},
    "bwrap-fresh": {"use_bwrap": True, "warm": False},
    "process": {"use_bwrap": False, "warm": False},
}


@pytest.mark.parametrize("mode", [
    pytest.param(m, marks=requires_bwrap) if MODES[m]["use_bwrap"] else m for m in MODES
])
async def test_an_agent_killing_itself_is_reported_with_its_true_signal(mode: str, make_worker) -> None:
    worker = await make_worker(**MODES[mode])
    expected_isolation = types_pb2.ISOLATION_BWRAP if MODES[mode]["use_bwrap"] else types_pb2.ISOLATION_PROCESS
    assert worker.handle.info.isolation == expected_isolation
    for how, sig in SIGNALS.items():
        _, terminal = await run(worker.stub, request("crash_self_signal", points=[{"how": how}]))
        assert terminal.HasField("error"), f"{how}: the agent went on"
        error = terminal.error
        assert error.kind == errors_pb2.ERROR_KIND_SANDBOX_CRASH, f"{how}: {errors.describe(error)}"
        assert error.signal == sig and f"signal {int(sig)} ({sig.name})" in error.message, errors.describe(error)
        assert error.phase == types_pb2.PHASE_ENCODE


def test_pixel_hash_of_the_search_agent_matches_the_workers_pixels() -> None:
    """The hostile decoder hashes the pixels exactly as the worker holds them ([3, H, W] uint8),
    so its "not found" is not a hashing mismatch (the controls find through the same hash)."""
    image = next(iter(datasets.load_photos()))
    expected = hashlib.sha256(image.pixels.numpy().tobytes()).digest()[:8]
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "search_agent", Path(__file__).parent / "agents" / "hostile_search_original" / "codec.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.pixel_hash(image.pixels.numpy()) == expected


# --- secure by default ----------------------------------------------------------------------------


async def _worker_main(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Runs ``python -m worker_svc ARGS`` with a PATH that has no bwrap, until it prints its
    listening line (then stops it) or exits; returns the exit code (0: it started) and stderr."""
    import asyncio
    import sys

    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker_svc", "--data-dir", str(tmp_path / "w"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if b"listening on" in line:
        proc.terminate()
        await proc.wait()
        return 0, ""
    await proc.wait()
    return proc.returncode or 0, (await proc.stderr.read()).decode()


async def test_worker_refuses_to_start_without_bubblewrap_unless_told(tmp_path: Path) -> None:
    code, stderr = await _worker_main(tmp_path)
    assert code == 2 and "'bubblewrap'" in stderr and "--isolation process" in stderr, stderr
    code, stderr = await _worker_main(tmp_path, "--isolation", "process")
    assert code == 0, stderr
