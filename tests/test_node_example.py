"""The Node.js example client (examples/node) against a real orchestrator and worker: the flow an
other-language client follows from the .proto files alone (issue 19). Runs when ``node`` and
``npm`` are installed (CI installs them); the example's packages come from its package-lock.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from helpers import AGENTS, REPO, TEST_ADMIN_TOKEN, TEST_AGENTS
from helpers.services import attach_worker, orchestrator
from helpers.worker import line_of

EXAMPLE = REPO / "examples" / "node"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not installed: the Node.js example is tested where they are (CI installs them; "
    "Debian: apt-get install nodejs npm)",
)


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        """The last line, which --json prints."""
        return json.loads(self.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The example's packages, installed exactly as its package-lock.json pins them."""
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (EXAMPLE / "package-lock.json").stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=EXAMPLE, check=True,
                       timeout=300)
    return EXAMPLE / "node_modules"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def address(tmp_path_factory: pytest.TempPathFactory, node_modules: Path) -> AsyncIterator[str]:
    """A real orchestrator with one real worker attached, both on 127.0.0.1 port 0."""
    root = tmp_path_factory.mktemp("node-example")
    async with orchestrator(root / "orchestrator") as handle:
        worker = await attach_worker(handle, root / "worker")
        try:
            yield handle.address
        finally:
            await worker.stop()


async def node(address: str, *args: str) -> Finished:
    """Runs the example with the test session's token; bounded by the test's timeout."""
    process = await asyncio.create_subprocess_exec(
        "node", str(EXAMPLE / "client.js"), *args, "--address", address,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CODECBENCH_TOKEN": TEST_ADMIN_TOKEN},
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


@pytest.mark.timeout(300)
async def test_submits_an_agent_folder_and_prints_its_metrics(address) -> None:
    """zlib_lossless on photos, as the issue tried it: int64 fields arrive as strings and the
    infinite PSNR of a lossless point survives JSON as "Infinity" (plain JSON.stringify: null)."""
    done = await node(address, "run", str(AGENTS / "zlib_lossless"), "--dataset", "photos", "--json")
    assert done.code == 0, done.stdout + done.stderr
    assert "created exp-" in done.stdout and "SUCCEEDED in" in done.stdout
    assert "point (defaults): " in done.stdout and "PSNR Infinity dB" in done.stdout and "lossless true" in done.stdout
    terminal = done.json()["terminal"]
    point = terminal["result"]["points"][0]
    assert point["psnr_db"] == "Infinity" and point["lossless"] is True
    assert isinstance(terminal["sequence"], str) and int(terminal["sequence"]) > 2  # int64 -> string
    assert isinstance(point["total_bytes"], str) and int(point["total_bytes"]) > 0
    assert len(point["images"]) == 8 and all(i["metrics"]["psnr_db"] == "Infinity" for i in point["images"])


@pytest.mark.timeout(300)
async def test_resumes_a_watch_after_a_sequence_number(address) -> None:
    done = await node(address, "run", str(AGENTS / "zlib_lossless"), "--dataset", "photos", "--param", "level=1",
                      "--json")
    assert done.code == 0, done.stdout + done.stderr
    experiment_id, last = done.json()["experiment_id"], int(done.json()["terminal"]["sequence"])
    again = await node(address, "watch", experiment_id, "--after", str(last - 2), "--json")
    assert again.code == 0, again.stdout + again.stderr
    sequences = [int(line.split()[0][1:]) for line in again.stdout.splitlines() if line.startswith("#")]
    assert sequences == [last - 1, last]
    assert "point level=1: " in again.stdout


@pytest.mark.timeout(300)
async def test_a_failing_agent_ends_with_the_typed_error(address) -> None:
    done = await node(address, "run", str(TEST_AGENTS / "exc_encode"), "--dataset", "photos")
    assert done.code == 2, done.stdout + done.stderr
    line = line_of("exc_encode", "return image.numel() / 0")
    assert f"FAILED AGENT_EXCEPTION at codec.py:{line} in encode: ZeroDivisionError: division by zero" in done.stdout


@pytest.mark.timeout(120)
async def test_decodes_the_error_details_of_a_refused_call(address) -> None:
    """The status trailer is a google.rpc.Status (protos/google/rpc): ErrorInfo and BadRequest name
    the reason and the field."""
    done = await node(address, "run", str(AGENTS / "zlib_lossless"), "--param", "device=cuda")
    assert done.code == 1, done.stdout + done.stderr
    assert "call failed: INVALID_ARGUMENT: points[0].params['device']" in done.stdout
    details = [json.loads(line.removeprefix("detail ")) for line in done.stdout.splitlines()
               if line.startswith("detail ")]
    info = next(d for d in details if d["type"] == "google.rpc.ErrorInfo")
    assert info["domain"] == "codecbench.v1" and info["reason"] == "INVALID_ARGUMENT"
    bad = next(d for d in details if d["type"] == "google.rpc.BadRequest")
    assert bad["field_violations"][0]["field"] == "points[0].params['device']"

    missing = await node(address, "get", "exp-0000000000000000")
    assert missing.code == 1
    assert "call failed: NOT_FOUND" in missing.stdout and '"reason":"NOT_FOUND"' in missing.stdout


def test_parameters_parse_strictly_as_decimal_numbers(node_modules: Path) -> None:
    """Hostile test of issue 20: Number() made "0x10" the int 16 and " 5 " the number 5."""
    cases = ["q=50", "q=-3", "q=0.5", "q=1e-3", "q=0x10", "q= 5", "q=5 ", "q=", "q=inf", "q=1e999", "q=true", "q=a=b"]
    script = ("const { parseParam } = require('./client.js');"
              f"console.log(JSON.stringify({json.dumps(cases)}.map(parseParam)));"
              "for (const bad of ['q', '=5']) { try { parseParam(bad); console.log('accepted ' + bad); }"
              " catch (e) { console.log('refused ' + bad); } }")
    out = subprocess.run(["node", "-e", script], cwd=EXAMPLE, capture_output=True, text=True, check=True, timeout=60)
    first, *rest = out.stdout.splitlines()
    assert json.loads(first) == [
        ["q", {"int_value": "50"}], ["q", {"int_value": "-3"}], ["q", {"float_value": 0.5}],
        ["q", {"float_value": 0.001}], ["q", {"string_value": "0x10"}], ["q", {"string_value": " 5"}],
        ["q", {"string_value": "5 "}], ["q", {"string_value": ""}], ["q", {"string_value": "inf"}],
        ["q", {"string_value": "1e999"}], ["q", {"bool_value": True}], ["q", {"string_value": "a=b"}]]
    assert rest == ["refused q", "refused =5"]
