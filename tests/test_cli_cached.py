"""Hostile test of issue 20: a copy from the result cache is marked wherever it shows (run and
watch progress, ls, export, compare, errors, run-many lines); its own servers, so that its cached
failures do not mix into test_cli's counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import AGENTS, TEST_AGENTS
from test_cli import Services, invoke, services, submitted_id, tiny

pytestmark = pytest.mark.timeout(300)
__all__ = ["services", "tiny"]  # fixtures, used by name


async def test_a_cached_copy_is_marked_wherever_it_shows(services: Services, tiny: str, tmp_path: Path) -> None:
    run = ["run", str(AGENTS / "jpeg"), "--dataset", tiny, "--param", "quality=10,30,50,70"]
    original = submitted_id(await invoke(services, *run, "--label", "suite=original"))
    result = await invoke(services, *run, "--label", "suite=cached")
    copy = submitted_id(result)
    out = result.stdout
    assert f"cached from {original}" in out and "nothing ran" in out
    assert "queued" not in out and "unspecified" not in out, out  # no bars, no phase-less "unspecified"
    watched = (await invoke(services, "watch", copy)).stdout
    assert "unspecified" not in watched and "system| outcome reused from" in watched
    listed = (await invoke(services, "ls", "--label", "suite=cached")).stdout
    assert "cached" in listed and original in listed.replace("\n", ""), listed
    assert json.loads((await invoke(services, "export", copy)).stdout)["cached_from"] == original
    assert "cached_from" not in json.loads((await invoke(services, "export", original)).stdout)
    compared = (await invoke(services, "compare", copy, "--baseline", original)).stdout
    assert f"{copy} is a copy of {original}" in compared
    # run-many: each line of a copy says so.
    folders = []
    for name in ("a", "b"):
        folders.append(tmp_path / name)
        shutil.copytree(AGENTS / "jpeg", folders[-1])
    many = ["run-many", *map(str, folders), "--dataset", tiny, "--param", "quality=10,30,50,70"]
    await invoke(services, *many, "--label", "run=first")
    lines = (await invoke(services, *many, "--label", "run=second")).stdout
    assert lines.count("SUCCEEDED (cached from exp-") == 2, lines
    # errors: a load error twice (evaluated twice), then copies of it, which are no new failures.
    broken = ["run", str(TEST_AGENTS / "load_syntax_error"), "--dataset", tiny]
    for _ in range(2):
        await invoke(services, *broken, code=1)
    copied = await invoke(services, *broken, code=1)
    assert "cached from" in copied.stdout
    report = json.loads((await invoke(services, "errors", "--json")).stdout)
    assert report["failed_experiments"] == 2 and report["cached_copies_left_out"] == 1
    assert [g["count"] for g in report["groups"]] == [2]
