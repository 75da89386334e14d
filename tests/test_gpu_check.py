"""bench/gpu_check.py runs without a GPU as a dry run (``--device cpu``), so it is ready when one is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.timeout(300)
def test_the_gpu_metrics_stage_runs_as_a_dry_run_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--stage", "metrics", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_metrics.json").read_text())
    figures = report["gpu_metrics"]
    assert report["device"] == "cpu (dry run)"
    assert figures["device_for_cuda_experiment"] == "cpu"
    for arm in ("cpu", "cuda"):
        assert figures[f"ms_ssim_{arm}"]["ms"] > 0 and 0 < figures[f"ms_ssim_{arm}"]["ms_ssim"] < 1
    assert figures["ms_ssim_abs_diff_cpu_vs_gpu"] == 0.0  # both arms on the CPU here: one computation
