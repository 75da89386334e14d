"""The ``codecbench`` CLI against a real orchestrator and a real worker on 127.0.0.1.

The servers run in the test's event loop; each CLI call runs through typer's CliRunner in a
thread (the CLI calls ``asyncio.run`` itself, which cannot run inside the test's loop). Two tests
run the CLI as a real subprocess: ``python -m codecbench.cli`` and ``codecbench up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bjontegaard
import numpy as np
import pytest
import pytest_asyncio
from helpers import AGENTS, TEST_ADMIN_TOKEN, TEST_AGENTS, eventually
from helpers.services import admin_token_file
from PIL import Image
from typer.testing import CliRunner, Result

from codecbench import auth
from codecbench.cli import app, parsing
from codecbench.client import Client
from codecbench.v1 import orchestrator_pb2
from orchestrator_svc.server import OrchestratorConfig, start_orchestrator
from worker_svc.registration import OrchestratorLink
from worker_svc.server import WorkerConfig, start_worker

FAILING = TEST_AGENTS / "cli_failing"
# The line of cli_failing/codec.py that divides by zero: what every report must point at.
FAILING_LINE = next(i for i, line in enumerate((FAILING / "codec.py").read_text().splitlines(), 1) if "/ empty" in line)
SUBMITTED = re.compile(r"submitted (exp-[0-9a-f]+)")
RUNNER = CliRunner()


@dataclass
class Services:
    address: str
    worker_id: str
    data_dir: Path
    enroll_secret: str


@pytest_asyncio.fixture(scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    """An orchestrator and a registered 2-slot worker, for this module."""
    root = tmp_path_factory.mktemp("cli")
    orchestrator = await start_orchestrator(OrchestratorConfig(
        data_dir=root / "orchestrator", admin_token_file=admin_token_file(root)))
    link = OrchestratorLink(orchestrator.address, orchestrator.enroll_secret)
    worker = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=root / "worker", slots=2),
                                link.read_blob)
    registration = asyncio.create_task(link.keep_registered(worker))
    async with Client(orchestrator.address) as client:
        async def registered() -> bool:
            return any(w.info.worker_id == worker.info.worker_id and w.state == orchestrator_pb2.WORKER_STATE_READY
                       for w in await client.workers())

        await eventually(registered, what="the worker registers")
    yield Services(orchestrator.address, worker.info.worker_id, root, orchestrator.enroll_secret)
    registration.cancel()
    await worker.stop(0)
    await link.close()
    await orchestrator.stop(0)


async def invoke(services: Services, *args: str, code: int = 0) -> Result:
    """Runs ``codecbench --server ADDRESS ARGS`` and checks its exit code."""
    result = await asyncio.to_thread(RUNNER.invoke, app, ["--server", services.address, *args])
    assert result.exit_code == code, f"exit {result.exit_code} != {code}\n{result.output}\n{result.exception!r}"
    return result


async def invoke_json(services: Services, *args: str) -> Any:
    return json.loads((await invoke(services, *args, "--json")).stdout)


def submitted_id(result: Result) -> str:
    match = SUBMITTED.search(result.stdout)
    assert match, result.stdout
    return match.group(1)


@pytest_asyncio.fixture(scope="module")
async def tiny(services: Services, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A two-image dataset uploaded with ``datasets add`` (large enough for 5-scale MS-SSIM)."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(7)
    for name, (height, width) in {"a.png": (176, 200), "b.png": (168, 184)}.items():
        y, x = np.mgrid[0:height, 0:width]
        smooth = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / name)
    result = await invoke(services, "datasets", "add", "tiny", str(folder))
    assert "dataset tiny: 2 image(s)" in result.stdout
    return "tiny"


@pytest_asyncio.fixture(scope="module")
async def jpeg_id(services: Services, tiny: str) -> str:
    """``codecbench run`` of jpeg at four qualities on the tiny dataset, followed live."""
    result = await invoke(services, "run", str(AGENTS / "jpeg"), "--dataset", tiny, "--param", "quality=10,30,50,70",
                          "--label", "suite=cli", "--request-id", "cli-jpeg-1")
    out = result.stdout
    assert "SUCCEEDED" in out
    for quality in (10, 30, 50, 70):
        assert re.search(rf"quality={quality} .*2/2 images", out), out  # a finished bar per point
    assert "results of" in out and "PSNR dB" in out and "MS-SSIM" in out
    return submitted_id(result)


async def run_failing(services: Services, tiny: str, quality: int) -> tuple[str, Result]:
    result = await invoke(services, "run", str(FAILING), "--dataset", tiny, "--param", f"quality={quality}", code=1)
    return submitted_id(result), result


# -- pure parsing ------------------------------------------------------------------------------


def test_parameter_values_parse_as_int_then_float_then_str() -> None:
    assert [parsing.parse_value(v) for v in ("10", "-3", "0.5", "1e-3", "fast")] == [10, -3, 0.5, 0.001, "fast"]
    # Only finite numbers are floats (red-team L1): the services refuse NaN and infinities.
    not_finite = ["nan", "inf", "-Infinity", "1e999"]
    assert [parsing.parse_value(v) for v in not_finite] == not_finite
    assert parsing.parameter_grid(["quality=10,30", "mode=a,b"]) == [
        {"quality": 10, "mode": "a"}, {"quality": 10, "mode": "b"},
        {"quality": 30, "mode": "a"}, {"quality": 30, "mode": "b"},
    ]
    assert parsing.parameter_grid([]) == [{}]
    for bad, message in [(["quality"], "expected NAME=VALUE"), (["q=1", "q=2"], "given twice"), (["=1"], "NAME")]:
        with pytest.raises(parsing.UsageError, match=message):
            parsing.parameter_grid(bad)


def test_since_and_state_options_parse() -> None:
    assert parsing.parse_since("30m", now=10_000.0) == 10_000.0 - 1800
    assert parsing.parse_since("2d", now=200_000.0) == 200_000.0 - 2 * 86400
    assert parsing.parse_since("2024-05-01T00:00:00+00:00") == 1714521600.0
    with pytest.raises(parsing.UsageError, match="expected a duration"):
        parsing.parse_since("yesterday")
    assert parsing.parse_states(["failed,RUNNING", "EXPERIMENT_STATE_QUEUED"]) == [4, 2, 1]
    with pytest.raises(parsing.UsageError, match="--state done: expected one of queued, running"):
        parsing.parse_states(["done"])


# -- against the services ----------------------------------------------------------------------


async def test_datasets_lists_builtin_and_uploaded(services: Services, tiny: str) -> None:
    listed = {d["name"]: d for d in await invoke_json(services, "datasets")}
    assert listed["photos"]["builtin"] is True and len(listed["photos"]["images"]) == 8
    assert [i["name"] for i in listed[tiny]["images"]] == ["a.png", "b.png"]
    text = (await invoke(services, "datasets")).stdout
    assert "photos" in text and tiny in text


async def test_show_reports_points_and_images(services: Services, jpeg_id: str) -> None:
    shown = await invoke_json(services, "show", jpeg_id)
    assert shown["state"] == "EXPERIMENT_STATE_SUCCEEDED"
    assert shown["attempt"] == 1 and shown["worker_id"] == services.worker_id
    points = shown["result"]["points"]
    assert [p["params"]["params"]["quality"]["int_value"] for p in points] == [10, 30, 50, 70]
    assert all(len(p["images"]) == 2 for p in points)
    assert points[0]["bpp"] < points[-1]["bpp"] and points[0]["psnr_db"] < points[-1]["psnr_db"]
    text = (await invoke(services, "show", jpeg_id)).stdout
    assert "SUCCEEDED" in text and "attempt 1 of 3" in text and services.worker_id in text
    assert "a.png" in text and "b.png" in text and "labels     suite=cli" in text
    assert "W×H px" in text and "200×176" in text  # width × height, said so (a new user could not tell)


async def test_ls_filters_by_label_and_state(services: Services, jpeg_id: str) -> None:
    assert [e["experiment_id"] for e in await invoke_json(services, "ls", "--label", "suite=cli")] == [jpeg_id]
    assert await invoke_json(services, "ls", "--label", "suite=other") == []
    succeeded = await invoke_json(services, "ls", "--state", "succeeded")
    assert jpeg_id in [e["experiment_id"] for e in succeeded]
    assert all(e["state"] == "EXPERIMENT_STATE_SUCCEEDED" for e in succeeded)
    assert jpeg_id in (await invoke(services, "ls")).stdout


async def test_run_with_the_same_request_id_returns_the_first_experiment(services: Services, jpeg_id: str,
                                                                         tiny: str) -> None:
    result = await invoke(services, "run", str(AGENTS / "jpeg"), "--dataset", tiny, "--param", "quality=10,30,50,70",
                          "--label", "suite=cli", "--request-id", "cli-jpeg-1", "--detach")
    assert submitted_id(result) == jpeg_id
    # The same id with another spec (here: without the label) is refused, naming the first.
    refused = await invoke(services, "run", str(AGENTS / "jpeg"), "--dataset", tiny, "--param",
                           "quality=10,30,50,70", "--request-id", "cli-jpeg-1", "--detach", code=2)
    assert "different spec" in refused.output and jpeg_id in refused.output


async def test_watch_resumes_after_a_sequence_number(services: Services, jpeg_id: str) -> None:
    lines = (await invoke(services, "watch", jpeg_id, "--after", "5", "--json")).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["sequence"] for e in events] == list(range(6, 6 + len(events)))
    assert "result" in events[-1] and all("result" not in e for e in events[:-1])
    text = (await invoke(services, "watch", jpeg_id)).stdout
    assert text.startswith("#1") and "QUEUED attempt 1: created" in text and "result: 4 points" in text


async def test_export_writes_compressai_layout(services: Services, jpeg_id: str, tmp_path: Path) -> None:
    target = tmp_path / "jpeg.json"
    await invoke(services, "export", jpeg_id, "-o", str(target))
    exported = json.loads(target.read_text())
    assert exported["name"] == "jpeg" and jpeg_id in exported["description"]
    shown = await invoke_json(services, "show", jpeg_id)
    points = shown["result"]["points"]
    results = exported["results"]
    assert results["bpp"] == [p["bpp"] for p in points]
    assert results["psnr-rgb"] == [p["psnr_db"] for p in points]
    assert results["ms-ssim-rgb"] == [p["ms_ssim"] for p in points]
    assert results["encoding_time"] == [p["encode_ms"] / 1000 for p in points]
    assert results["decoding_time"] == [p["decode_ms"] / 1000 for p in points]
    to_stdout = json.loads((await invoke(services, "export", jpeg_id)).stdout)
    assert to_stdout == exported


async def test_failing_agent_reports_kind_and_location(services: Services, tiny: str) -> None:
    experiment_id, result = await run_failing(services, tiny, 50)
    out = result.stdout
    assert f"AGENT_EXCEPTION at codec.py:{FAILING_LINE} in encode" in out
    assert "ZeroDivisionError: division by zero" in out
    assert "cli_failing: encoding at quality 50" in out  # the agent's own print, streamed as a log line
    assert f"{experiment_id} (cli_failing) FAILED" in out
    shown = (await invoke(services, "show", experiment_id)).stdout
    assert "FAILED" in shown and "traceback" in shown and f"codec.py:{FAILING_LINE} in _bits_per_pixel" in shown
    error = (await invoke_json(services, "show", experiment_id))["error"]
    assert error["kind"] == "ERROR_KIND_AGENT_EXCEPTION" and error["exception_type"] == "ZeroDivisionError"
    await invoke(services, "watch", experiment_id, code=1)


async def test_errors_groups_failures_by_location(services: Services, tiny: str) -> None:
    first, _ = await run_failing(services, tiny, 10)
    second, _ = await run_failing(services, tiny, 20)
    report = await invoke_json(services, "errors", "--since", "1h")
    group = next(g for g in report["groups"] if g["location"] == f"codec.py:{FAILING_LINE}")
    # this test's two failures, plus the one of test_failing_agent_reports_kind_and_location when it ran first
    assert group["count"] >= 2
    assert group["kind"] == "AGENT_EXCEPTION" and group["exception_type"] == "ZeroDivisionError"
    assert group["agents"] == ["cli_failing"]
    assert group["example_experiment_id"] == second  # the newest
    assert "ZeroDivisionError: division by zero" in group["example_message"]
    failed_ids = [e["experiment_id"] for e in await invoke_json(services, "ls", "--state", "failed")]
    assert group["count"] == len(failed_ids) and {first, second} <= set(failed_ids)
    text = (await invoke(services, "errors")).stdout
    assert f"codec.py:{FAILING_LINE}" in text and "ZeroDivisionError" in text and second in text
    assert (await invoke_json(services, "errors", "--since", "2999-01-01"))["groups"] == []


async def test_compare_bd_rate_and_plot(services: Services, jpeg_id: str, tiny: str, tmp_path: Path) -> None:
    other = submitted_id(await invoke(services, "run", str(AGENTS / "jpeg"), "--dataset", tiny,
                                      "--param", "quality=20,40,60,80"))
    lossless = submitted_id(await invoke(services, "run", str(AGENTS / "zlib_lossless"), "--dataset", tiny))
    plot = tmp_path / "rd.png"
    report = await invoke_json(services, "compare", jpeg_id, other, lossless, "--baseline", jpeg_id,
                               "--plot", str(plot))
    rows = {r["experiment_id"]: r["bd_rate"] for r in report["rows"]}
    assert report["baseline"]["experiment_id"] == jpeg_id and report["method"] == "pchip"
    assert rows[jpeg_id]["psnr"]["percent"] == pytest.approx(0.0, abs=1e-9)
    assert rows[jpeg_id]["ms-ssim"]["percent"] == pytest.approx(0.0, abs=1e-9)

    def rd(experiment: dict[str, Any]) -> tuple[list[float], list[float]]:
        points = sorted(experiment["result"]["points"], key=lambda p: p["bpp"])
        return [p["bpp"] for p in points], [p["psnr_db"] for p in points]

    anchor, test = rd(await invoke_json(services, "show", jpeg_id)), rd(await invoke_json(services, "show", other))
    expected = bjontegaard.bd_rate(*anchor, *test, method="pchip", min_overlap=0)
    assert rows[other]["psnr"]["percent"] == pytest.approx(expected, rel=1e-9)
    assert rows[lossless]["psnr"]["percent"] is None
    assert "not computable" in rows[lossless]["psnr"]["reason"] and "lossless" in rows[lossless]["psnr"]["reason"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lossless_bpp = (await invoke_json(services, "show", lossless))["result"]["points"][0]["bpp"]
    assert report["plot_notes"] == [
        f"zlib_lossless: lossless (every image exact; PSNR = inf, not drawn) at {lossless_bpp:.2f} bpp"
    ]
    text = (await invoke(services, "compare", other, lossless, "--baseline", jpeg_id)).stdout
    assert "BD-rate against jpeg" in text and "n/a [" in text and "has an infinite PSNR at its only point" in text
    # the baseline's own row, as in `make demo`, even when it is not named among the experiments
    assert re.search(rf"jpeg +. {jpeg_id} .*\+0\.00 % .*\+0\.00 %", text), text
    named = await invoke_json(services, "compare", other, "--baseline", jpeg_id)
    assert [r["experiment_id"] for r in named["rows"]] == [jpeg_id, other]


async def _upload(services: Services, name: str, folder: Path, images: dict[str, np.ndarray]) -> str:
    folder.mkdir()
    for file, pixels in images.items():
        Image.fromarray(pixels, "RGB").save(folder / file)
    await invoke(services, "datasets", "add", name, str(folder))
    return name


async def test_compare_refuses_experiments_on_different_datasets_unless_allowed(
    services: Services, jpeg_id: str, tmp_path: Path
) -> None:
    y, x = np.mgrid[0:170, 0:180]
    smooth = np.stack([y * 1.5, x * 1.4, (x + y) * 0.7], axis=-1)
    pixels = np.clip(smooth + np.random.default_rng(11).normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    other = await _upload(services, "tiny-other", tmp_path / "other", {"c.png": pixels})
    elsewhere = submitted_id(await invoke(services, "run", str(AGENTS / "jpeg"), "--dataset", other,
                                          "--param", "quality=10,30,50,70"))
    refused = await invoke(services, "compare", elsewhere, "--baseline", jpeg_id, code=2)
    assert f"the baseline jpeg ({jpeg_id}) ran on dataset 'tiny'" in refused.stderr
    assert f"jpeg ({elsewhere}) on 'tiny-other'" in refused.stderr and "--allow-different-datasets" in refused.stderr
    report = await invoke_json(services, "compare", jpeg_id, elsewhere, "--baseline", jpeg_id,
                               "--allow-different-datasets")
    rows = {r["experiment_id"]: r for r in report["rows"]}
    assert (rows[jpeg_id]["different_dataset"], rows[elsewhere]["different_dataset"]) == (False, True)
    assert rows[elsewhere]["dataset"] == "tiny-other" and report["baseline"]["dataset"] == "tiny"
    assert rows[elsewhere]["bd_rate"]["psnr"]["percent"] is not None
    text = (await invoke(services, "compare", elsewhere, "--baseline", jpeg_id, "--allow-different-datasets")).stdout
    assert "tiny-other [1]" in text and "measured on dataset 'tiny-other', the baseline on 'tiny'" in text


async def test_show_json_keeps_a_psnr_of_exactly_zero(services: Services, tmp_path: Path) -> None:
    black = await _upload(services, "black", tmp_path / "black", {"k.png": np.zeros((6, 8, 3), np.uint8)})
    result = await invoke(services, "run", str(TEST_AGENTS / "white_decoder"), "--dataset", black)
    shown = await invoke_json(services, "show", submitted_id(result))
    [point] = shown["result"]["points"]
    [image] = point["images"]
    assert image["metrics"]["psnr_db"] == 0.0 and image["metrics"]["lossless"] is False
    assert point["psnr_db"] == 0.0 and point["pooled_psnr_db"] == 0.0 and point["lossless_image_count"] == 0


async def test_compare_refuses_an_experiment_without_results(services: Services, jpeg_id: str, tiny: str) -> None:
    failed, _ = await run_failing(services, tiny, 30)
    result = await invoke(services, "compare", failed, "--baseline", jpeg_id, code=2)
    assert f"{failed} (cli_failing) is FAILED: it has no results" in result.stderr
    result = await invoke(services, "export", failed, code=2)
    assert "is FAILED" in result.stderr


async def test_the_old_contract_runs_unmodified_with_agent_reported_figures(
    services: Services, jpeg_id: str, tiny: str
) -> None:
    """The seed's own example (issue 13): run_encoding_agent(device='cpu') takes no image and the decoder
    returns only its own numbers; it succeeds, and every view labels the numbers as the agent's."""
    result = await invoke(services, "run", str(AGENTS / "seed_original"), "--dataset", tiny)
    out, experiment_id = result.stdout, submitted_id(result)
    assert f"{experiment_id} (seed_original) SUCCEEDED" in out
    # The live bar of a point without images says so (it used to count "0/0 images").
    assert re.search(r"\(no parameters\) .*point 1/1, agent-reported, no images .*done", out), out
    assert "0/0" not in out
    assert "agent-reported only" in out and "NOT measured by codecbench" in out
    assert "compression_ratio=1.97, lossless=True, status='ok'" in out
    assert "as it crossed the process boundary" in out
    shown = (await invoke(services, "show", experiment_id)).stdout
    assert "agent-reported only" in shown and "compression_ratio=1.97, lossless=True, status='ok'" in shown
    report = (await invoke_json(services, "show", experiment_id))["result"]["points"][0]["agent_report"]
    assert report["values"] == {"status": {"string_value": "ok"}, "lossless": {"bool_value": True},
                                "compression_ratio": {"float_value": 1.97}}
    assert report["encoding_data_bytes"] > 0
    listed = next(e for e in await invoke_json(services, "ls") if e["experiment_id"] == experiment_id)
    assert listed["state"] == "EXPERIMENT_STATE_SUCCEEDED"
    assert "agent-reported" in (await invoke(services, "ls")).stdout  # the summary column (wrapped)
    exported = json.loads((await invoke(services, "export", experiment_id)).stdout)
    assert exported["results"] == {} and "NOT measured by codecbench" in exported["description"]
    assert exported["agent_reported"] == [{"params": "", "values": {"compression_ratio": 1.97, "lossless": True,
                                                                    "status": "ok"},
                                           "not_scalar": [], "encoding_data_bytes": report["encoding_data_bytes"]}]
    refused = await invoke(services, "compare", experiment_id, "--baseline", jpeg_id, code=2)
    assert "agent-reported figures only" in refused.stderr and "no image was coded" in refused.stderr


async def test_cancel_stops_a_running_experiment(services: Services, tiny: str) -> None:
    result = await invoke(services, "run", str(TEST_AGENTS / "timeout_encode"), "--dataset", tiny, "--detach")
    experiment_id = submitted_id(result)
    assert f"codecbench watch {experiment_id}" in result.stdout

    async def running() -> bool:
        return (await invoke_json(services, "show", experiment_id))["state"] == "EXPERIMENT_STATE_RUNNING"

    await eventually(running, what="the experiment runs")
    assert f"{experiment_id} is CANCELLED" in (await invoke(services, "cancel", experiment_id)).stdout
    watched = (await invoke(services, "watch", experiment_id, code=1)).stdout
    assert "CANCELLED" in watched
    assert experiment_id in [e["experiment_id"] for e in await invoke_json(services, "ls", "--state", "cancelled")]


async def test_run_on_photos(services: Services) -> None:
    result = await invoke(services, "run", str(AGENTS / "jpeg"), "--param", "quality=50")
    assert re.search(r"quality=50 .*8/8 images", result.stdout), result.stdout
    shown = (await invoke(services, "show", submitted_id(result))).stdout
    for image in ("astronaut.png", "hubble_deep_field.jpg", "grace_hopper.jpg"):
        assert image in shown


async def test_workers_show_state_and_stale_reason(services: Services) -> None:
    link = OrchestratorLink(services.address, services.enroll_secret)
    stale = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=services.data_dir / "stale",
                                            build_id="0000stale0000000"),
                               link.read_blob)
    registration = asyncio.create_task(link.keep_registered(stale))
    try:
        async def listed() -> bool:
            return len(await invoke_json(services, "workers")) == 2

        await eventually(listed, what="the stale worker registers")
        workers = {w["info"]["worker_id"]: w for w in await invoke_json(services, "workers")}
        good = workers[services.worker_id]
        assert good["state"] in ("WORKER_STATE_READY", "WORKER_STATE_BUSY") and good["info"]["slots"] == 2
        assert good["info"]["pid"] == os.getpid() and good["info"]["devices"][0]["name"] == "cpu"
        assert workers[stale.info.worker_id]["state"] == "WORKER_STATE_STALE"
        text = (await invoke(services, "workers")).stdout
        assert f"{stale.info.worker_id} STALE: build 0000stale0000000 differs from the expected build" in text
        assert services.worker_id in text and "/2" in text and " ago" in text
    finally:
        registration.cancel()
        await stale.stop(0)
        await link.close()


async def test_drain_stops_new_work_for_a_worker(services: Services) -> None:
    """The README says an admin drains workers; the CLI had no command for it."""
    link = OrchestratorLink(services.address, services.enroll_secret)
    spare = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=services.data_dir / "spare"),
                               link.read_blob)
    registration = asyncio.create_task(link.keep_registered(spare))
    try:
        async def ready() -> bool:
            return any(w["info"]["worker_id"] == spare.info.worker_id and w["state"] == "WORKER_STATE_READY"
                       for w in await invoke_json(services, "workers"))

        await eventually(ready, what="the spare worker registers")
        drained = await invoke(services, "drain", spare.info.worker_id)
        assert f"worker {spare.info.worker_id} is DRAINING: it gets no new experiments" in drained.stdout
        states = {w["info"]["worker_id"]: w["state"] for w in await invoke_json(services, "workers")}
        assert states[spare.info.worker_id] == "WORKER_STATE_DRAINING"
        assert states[services.worker_id] != "WORKER_STATE_DRAINING"
        missing = await invoke(services, "drain", "w-nosuchworker", code=2)
        assert "w-nosuchworker" in missing.stderr
    finally:
        registration.cancel()
        await spare.stop(0)
        await link.close()


async def test_run_on_a_folder_without_python_files_says_so(services: Services, tmp_path: Path) -> None:
    """It said "name one (--entry-module NAME)" for a folder with no .py file to name."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = await invoke(services, "run", str(empty), code=2)
    assert f"error: {empty} has no Python files: an agent is a folder with an entry module" in result.stderr
    assert "--entry-module" not in result.stderr
    (empty / "sub").mkdir()
    (empty / "sub" / "codec.py").write_text("")
    result = await invoke(services, "run", str(empty), code=2)
    assert "has no Python files at its top level (only in subfolders" in result.stderr


async def test_usage_problems_exit_2(services: Services) -> None:
    result = await invoke(services, "run", str(AGENTS / "jpeg"), "--param", "quality", code=2)
    assert "--param 'quality': expected NAME=VALUE" in result.stderr
    result = await invoke(services, "run", str(AGENTS / "jpeg"), "--dataset", "nope", code=2)
    # a refused request arrives as the error tree (errors.InvalidArgument, errors.NotFound): its message
    assert result.stderr.startswith("error: dataset: unknown dataset 'nope'"), result.stderr
    result = await invoke(services, "show", "exp-missing", code=2)
    assert result.stderr.startswith("error: experiment_id: no experiment 'exp-missing'"), result.stderr
    result = await asyncio.to_thread(RUNNER.invoke, app, ["--server", "127.0.0.1:1", "ls"])
    assert result.exit_code == 2 and "cannot reach the orchestrator at 127.0.0.1:1" in result.stderr


async def test_module_entry_point_reads_the_server_from_the_environment(services: Services) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codecbench.cli", "workers", "--json",
        env={**os.environ, "CODECBENCH_SERVER": services.address},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert services.worker_id in [w["info"]["worker_id"] for w in json.loads(stdout)]


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def _cli(cwd: Path, env: dict[str, str], *args: str, module: str = "codecbench.cli") -> Completed:
    """Runs ``python -m MODULE ARGS`` to its end in ``cwd``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return Completed(process.returncode, stdout.decode(), stderr.decode())


async def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A second `up` on a port in use printed a traceback ending in `OSError: could not bind`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        up = await _cli(tmp_path, dict(os.environ), "up", "--port", port, "--data-dir", "d")
        assert up.returncode == 2, up
        [line] = up.stderr.strip().splitlines()
        assert line == (f"error: the orchestrator did not start: could not bind 127.0.0.1:{port} (in use by another "
                        "process, or not an address of this host); choose another --port (--port 0 picks a free one)")
        assert not (tmp_path / "d" / "up.pid").exists()
        for module, args in (("orchestrator_svc", ["--data-dir", "o"]), ("worker_svc", ["--isolation", "process"])):
            service = await _cli(tmp_path, dict(os.environ), "--port", port, *args, module=module)
            assert service.returncode == 2, service
            assert service.stderr.strip().splitlines()[-1].endswith(
                f"error: could not bind 127.0.0.1:{port} (in use by another process, or not an address of this "
                "host); choose another --port (--port 0 picks a free one)"), service.stderr
            assert "Traceback" not in service.stderr


async def test_up_starts_and_stops_an_orchestrator_and_a_worker(tmp_path: Path) -> None:
    # Zero configuration: `up` in a folder, then the CLI in the same folder finds the admin token
    # that `up` wrote into its default data dir (.codecbench/client.token); no token in the environment.
    env = {k: v for k, v in os.environ.items() if k not in (auth.TOKEN_ENV, auth.TOKEN_FILE_ENV)}
    data_dir = tmp_path / ".codecbench"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "codecbench.cli", "up", "--port", "0", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        lines = []
        async with asyncio.timeout(90):
            while not lines or not lines[-1].startswith("use it:"):
                line = (await process.stdout.readline()).decode()
                assert line, f"`up` ended early: {lines} {(await process.stderr.read()).decode()}"
                lines.append(line.strip())
        text = "\n".join(lines)
        address, orchestrator_pid = re.search(r"orchestrator listening on (\S+) \(pid (\d+)\)", text).groups()
        worker_id, worker_pid = re.search(r"worker (\S+) listening on \S+ \(pid (\d+)", text).groups()
        workers = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "codecbench.cli", "--server", address, "workers", "--json", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(workers.communicate(), timeout=60)
        assert workers.returncode == 0, stderr.decode()
        [status] = json.loads(stdout)
        assert status["info"]["worker_id"] == worker_id and status["info"]["pid"] == int(worker_pid)
        assert status["state"] == "WORKER_STATE_READY"
        assert (data_dir / "orchestrator" / "codecbench.db").is_file() and (data_dir / "logs" / "worker.log").is_file()
        for private in (data_dir, data_dir / "orchestrator", data_dir / "logs"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o700, private
        for secret in (data_dir / auth.CLIENT_TOKEN_FILE, data_dir / "orchestrator" / auth.ENROLL_TOKEN_FILE,
                       data_dir / "orchestrator" / "codecbench.db"):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        # a second `up` for the same data dir says which one runs and how to stop it
        second = await _cli(tmp_path, env, "up", "--port", "0")
        assert second.returncode == 2, second
        assert f"`codecbench up` already runs for .codecbench (pid {process.pid})" in second.stderr
        assert "codecbench down --data-dir .codecbench" in second.stderr and "Traceback" not in second.stderr
        # the README's `codecbench up --data-dir .codecbench &` is stopped by `codecbench down`
        down = await _cli(tmp_path, env, "down", "--data-dir", ".codecbench")
        assert down.returncode == 0, down
        assert f"stopped `codecbench up` (pid {process.pid})" in down.stdout
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert "stopped" in (await process.stdout.read()).decode()
        assert not (data_dir / "up.pid").exists()
        again = await _cli(tmp_path, env, "down")
        assert again.returncode == 0 and "nothing to stop" in again.stdout

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        await eventually(lambda: gone(int(orchestrator_pid)) and gone(int(worker_pid)), what="services exit")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
