"""Helpers of the learned-codec agents' tests: loading an agent folder as a package, test images."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch


def load_codec_module(agent_dir: Path, package: str) -> ModuleType:
    """The agent's ``codec`` module, imported with ``agent_dir`` as the package ``package``.

    A package name no other test uses keeps one agent's ``codec`` and ``model`` from clashing with
    another agent's modules of the same names in one test process.
    """
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, agent_dir / "__init__.py", submodule_search_locations=[str(agent_dir)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.codec")


def structured_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Deterministic uint8 ``[3, H, W]``: colour gradients, a disk and stripes, plus mild noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 0.5 + 0.4 * np.sin(xx / 7.0)
    g = yy / max(height - 1, 1)
    b = np.where((yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (min(height, width) / 3) ** 2, 0.9, 0.2)
    noise = np.random.default_rng(seed).normal(0.0, 0.02, size=(3, height, width))
    return torch.from_numpy(np.round(np.clip(np.stack([r, g, b]) + noise, 0.0, 1.0) * 255).astype(np.uint8))


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two uint8 images (+inf when equal)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))
