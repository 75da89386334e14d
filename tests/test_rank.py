"""Issue 20, ranking: ``codecbench run-many`` submits candidates under a run label, ``codecbench
rank`` orders them by BD-rate against a baseline with known curves, lists those without a BD-rate
with the reason and groups the failures; with a real orchestrator and worker on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import TEST_AGENTS, agent_bundle
from helpers.services import attach_worker, orchestrator, write_images
from typer.testing import CliRunner

from codecbench import analysis
from codecbench.cli import app
from codecbench.client import Client
from codecbench.states import SUCCEEDED

pytestmark = pytest.mark.timeout(300)
QUALITIES = [20, 40, 60, 80]


def _padded_candidate(folder: Path, pad_bytes: int) -> Path:
    """JPEG with ``pad_bytes`` zero bytes more per image: JPEG's RD curve moved right by a known rate.
    Each candidate also has the same NOTES.txt, a file the batch uploads once."""
    folder.mkdir(parents=True)
    source = (TEST_AGENTS / "jpeg_padded" / "codec.py").read_text()
    (folder / "codec.py").write_text(source.replace("pad_bytes: int = 0", f"pad_bytes: int = {pad_bytes}"))
    (folder / "NOTES.txt").write_text("a generated candidate\n")
    return folder


async def _cli(address: str, *args: str, code: int = 0) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["--server", address, *args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.stdout


async def test_rank_orders_three_candidates_against_a_baseline_with_known_curves(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(176, 200)])
    candidates = {pad: _padded_candidate(tmp_path / f"pad{pad}", pad) for pad in (800, 0, 200)}
    async with orchestrator(tmp_path / "orch") as orch:
        worker = await attach_worker(orch, tmp_path / "w", slots=2)
        try:
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                baseline = await client.wait((await client.submit(
                    agent_bundle("jpeg_padded"), dataset="one",
                    points=[{"quality": q, "pad_bytes": 400} for q in QUALITIES])).experiment_id)
                assert baseline.state == SUCCEEDED, baseline.error
                short = await client.submit(agent_bundle("jpeg"), dataset="one", points=[{"quality": 30},
                                                                                          {"quality": 70}],
                                            labels={"run": "night"})
                await client.wait(short.experiment_id)
                on_photos = await client.submit(agent_bundle("jpeg"), dataset="photos", labels={"run": "night"},
                                                points=[{"quality": q} for q in QUALITIES], queue_timeout_s=0)
                await client.cancel(on_photos.experiment_id)  # never finished: still listed, with why

            dirs = [str(p) for p in candidates.values()] + [str(TEST_AGENTS / "load_syntax_error")]
            out = await _cli(orch.address, "run-many", *dirs, "--dataset", "one", "--label", "run=night",
                             "--param", f"quality={','.join(map(str, QUALITIES))}", code=1)  # one failed
            assert "submitted 4 of 4" in out and "AGENT_LOAD_ERROR" in out

            ranked: dict[str, Any] = json.loads(await _cli(
                orch.address, "rank", "--baseline", baseline.experiment_id, "--label", "run=night", "--json"))
            async with Client(orch.address) as client:
                by_id = {e.experiment_id: e for e in await client.list(labels={"run": "night"}, limit=100)}
                pads = [next(pad for pad, folder in candidates.items() if by_id[r["experiment_id"]].agent.name
                             == folder.name) for r in ranked["ranked"]]
                # Less padding than the baseline's 400 bytes: fewer bits at equal quality, and in order.
                assert pads == [0, 200, 800], ranked
                percents = [r["bd_rate_percent"] for r in ranked["ranked"]]
                assert percents[0] < percents[1] < 0 < percents[2], percents
                assert all(r["points"] == 4 and r["bpp_range"][0] < r["bpp_range"][1] for r in ranked["ranked"])
                reasons = {r["experiment_id"]: r["reason"] for r in ranked["not_computable"]}
                assert set(reasons) == {short.experiment_id, on_photos.experiment_id}
                assert "at least 4" in reasons[short.experiment_id]
                assert "CANCELLED" in reasons[on_photos.experiment_id]
                assert ranked["failed"] == 1 and ranked["failures"][0]["kind"] == "AGENT_LOAD_ERROR"
                assert ranked["failures"][0]["location"].startswith("codec.py:")

                # The same from the client, by MS-SSIM; and the table names what it could not rank.
                by_ms_ssim = await client.rank(baseline.experiment_id, {"run": "night"}, metric="ms_ssim")
                assert by_ms_ssim.metric == analysis.MS_SSIM and len(by_ms_ssim.ranked) == 3
            text = await _cli(orch.address, "rank", "--baseline", baseline.experiment_id, "--label", "run=night")
            assert "2 candidate(s) without a BD-rate" in text and "AGENT_LOAD_ERROR" in text
        finally:
            await worker.stop()
