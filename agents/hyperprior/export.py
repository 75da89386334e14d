"""Turn a training snapshot or checkpoint into the shipped weights file, on CPU, deterministically.

    python -m agents.hyperprior.export SNAPSHOT_OR_CHECKPOINT [--out agents/hyperprior/weights/hyperprior.pt]

The weights file holds what the codec needs and nothing else:

- ``g_a``, ``g_s``: transform weights in float16 (computed in float32 by the codec);
- ``gain``, ``inv_gain``: float32 ``[Q, M]`` log-gains per quality;
- ``h_a``: float16 (encoder only: its output is rounded and coded, so it needs no exactness);
- ``h_s_int``: the hyper-synthesis in fixed point (:func:`model.integer_hyper_synthesis`);
- ``z_tables``: integer tables of the hyper-latent's factorized density, one per channel;
- ``y_tables``: integer tables of the discretised Gaussian, one per table scale;
- ``n``, ``m``, ``lambdas``.

The float16 rounding happens before the tables are derived, so the tables describe exactly the
model the codec runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from agents.hyperprior.factorized import quantized_pmf_tables
from agents.hyperprior.model import Hyperprior, gaussian_pmf_tables, integer_hyper_synthesis

WEIGHTS = Path(__file__).resolve().parent / "weights" / "hyperprior.pt"


def load_model(path: Path) -> tuple[Hyperprior, list[float]]:
    """A model from a snapshot (``agents.hyperprior.train.snapshot``) or a full checkpoint, on CPU in float32,
    with its weights rounded through float16 as shipped. Returns the model and its λ per quality."""
    from agents.hyperprior.train import LAMBDAS, M_CHANNELS, N_CHANNELS

    saved = torch.load(path, map_location="cpu", weights_only=False)
    if "state" in saved:
        state, n, m, lambdas = saved["state"], saved["n"], saved["m"], list(saved["lambdas"])
    else:
        state, lambdas = saved["model"], list(LAMBDAS)
        n, m = saved.get("n", N_CHANNELS), saved.get("m", M_CHANNELS)
    model = Hyperprior(n, m, len(lambdas))
    model.load_state_dict({k: v.to(torch.float16).float() for k, v in state.items()})
    return model.eval(), lambdas


def weights_file(model: Hyperprior, lambdas: list[float]) -> dict[str, Any]:
    """The shipped weights dictionary (see the module docstring)."""
    def half(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to(torch.float16) for k, v in module.state_dict().items()}

    return {
        "n": model.n, "m": model.m, "lambdas": lambdas,
        "g_a": half(model.g_a), "g_s": half(model.g_s), "h_a": half(model.h_a),
        "gain": model.gain.detach().float().clone(), "inv_gain": model.inv_gain.detach().float().clone(),
        "h_s_int": integer_hyper_synthesis(model.h_s),
        "z_tables": quantized_pmf_tables(model.density),
        "y_tables": gaussian_pmf_tables(),
    }


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="snapshot (--snapshot of train) or checkpoint")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    model, lambdas = load_model(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights_file(model, lambdas), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {len(lambdas)} qualities)")


if __name__ == "__main__":
    main()
