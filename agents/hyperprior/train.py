"""Train the hyperprior (all qualities in one network) on CPU or CUDA, resumable.

Run from the repository root::

    python -m agents.hyperprior.data DATA                              # once: the training photos
    python -m agents.hyperprior.train --data DATA --checkpoint ckpt.pt --steps 20000 [--device cuda]
    python -m agents.hyperprior.train ... --resume                     # continue a saved run
    python -m agents.hyperprior.export ckpt.pt                          # -> weights/hyperprior.pt

Objective, per image of the batch with its own quality q (uniform over the qualities) [C21]:
``L = R + λ_q · 255² · MSE`` with ``R`` the estimated rate of y and z in bits per pixel and ``MSE``
over RGB in [0, 1] (the units of CompressAI's ``RateDistortionLoss``). λ per quality: CompressAI's
``mbt2018-mean`` qualities 1-8, plus 0.30 for a ninth point at the high end.

Optimiser: Adam, lr ``--lr`` with 500 warm-up steps and a cosine decay to lr/20 at ``--steps``;
10x lr on the density of z and on the gains; gradient-norm clip 1 (CompressAI's default).
Batches: ``--batch`` random ``--crop``² crops with horizontal flips, from the full- and half-size
images of :func:`agents.hyperprior.data.load_images`, picked with probability ∝ area.

Resumable and reproducible: the checkpoint (``--checkpoint``, written every ``--save-every`` steps,
at ``--max-minutes`` and at the end) holds the model, the optimiser, the step and every random
generator's state; ``--resume`` continues exactly where it stopped, so a run cut into sittings
equals the uninterrupted run (bit-exactly on CPU with one thread; on CUDA up to the
non-determinism of cuDNN's kernels). ``--snapshot`` additionally writes float16 model weights
(no optimiser; ~14 MB) for :mod:`agents.hyperprior.export`.
Each log line is JSON: ``{"event": "train", "step", "loss", "bpp", "psnr_db", "lr", "steps_per_s"}``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.hyperprior.data import load_images
from agents.hyperprior.model import Hyperprior

#: λ per quality (1-based) for ``L = bpp + λ · 255² · MSE``.
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800, 0.3000)
N_CHANNELS, M_CHANNELS = 128, 192
WARMUP_STEPS = 500
FAST_LR_FACTOR = 10.0


def build_model(n: int = N_CHANNELS, m: int = M_CHANNELS, init_transforms: Path | None = None) -> Hyperprior:
    """A freshly initialised model with ``len(LAMBDAS)`` qualities.

    ``init_transforms``: a ``factorized_prior`` weights file (``agents/factorized_prior/weights/qK.pt``)
    whose g_a and g_s start this model (same N, M) -- a warm start that saves most of a CPU run.
    """
    model = Hyperprior(n, m, len(LAMBDAS))
    if init_transforms is not None:
        saved = torch.load(init_transforms, map_location="cpu", weights_only=True)
        if (saved["n"], saved["m"]) != (n, m):
            raise SystemExit(f"{init_transforms} has N={saved['n']}, M={saved['m']}; this run has N={n}, M={m}")
        model.g_a.load_state_dict({k: v.float() for k, v in saved["analysis"].items()})
        model.g_s.load_state_dict({k: v.float() for k, v in saved["synthesis"].items()})
    return model


def _lr_at(step: int, steps: int, lr: float) -> float:
    if step < WARMUP_STEPS:
        return lr * (step + 1) / WARMUP_STEPS
    progress = min((step - WARMUP_STEPS) / max(steps - WARMUP_STEPS, 1), 1.0)
    return lr / 20 + (lr - lr / 20) * 0.5 * (1 + math.cos(math.pi * progress))


class CropSampler:
    """Random crops of the training images as a float ``[B, 3, crop, crop]`` batch in [0, 1] on ``device``."""

    def __init__(self, images: list[np.ndarray], crop: int, device: torch.device, seed: int) -> None:
        if not images:
            raise ValueError(f"no training image has both sides >= {crop} px")
        self.images = [torch.from_numpy(img).permute(2, 0, 1).contiguous().to(device) for img in images]
        areas = np.array([img.shape[0] * img.shape[1] for img in images], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        """``size`` crops, each from an image picked with probability ∝ area, flipped half of the time."""
        crops = []
        for index in self.rng.choice(len(self.images), size=size, p=self.weights):
            img = self.images[index]
            top = int(self.rng.integers(0, img.shape[1] - self.crop + 1))
            left = int(self.rng.integers(0, img.shape[2] - self.crop + 1))
            crop = img[:, top : top + self.crop, left : left + self.crop]
            crops.append(crop.flip(-1) if self.rng.random() < 0.5 else crop)
        return torch.stack(crops).float() / 255.0


def _optimizer(model: Hyperprior, lr: float) -> torch.optim.Adam:
    fast = [*model.density.parameters(), model.gain, model.inv_gain]
    fast_ids = {id(p) for p in fast}
    slow = [p for p in model.parameters() if id(p) not in fast_ids]
    return torch.optim.Adam([{"params": slow, "lr_factor": 1.0}, {"params": fast, "lr_factor": FAST_LR_FACTOR}], lr=lr)


def _rng_state(sampler: CropSampler, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "numpy": sampler.rng.bit_generator.state, "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], sampler: CropSampler, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    sampler.rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def snapshot(model: Hyperprior) -> dict[str, Any]:
    """Model weights in float16 plus sizes and λs: the input of :mod:`agents.hyperprior.export`."""
    return {
        "n": model.n, "m": model.m, "lambdas": list(LAMBDAS),
        "state": {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()},
    }


def train(args: argparse.Namespace) -> Hyperprior:
    """Run (or resume) training as configured by the command line; returns the model."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = build_model(args.n, args.m, args.init_transforms).to(device)
    optimizer = _optimizer(model, args.lr)
    sampler = CropSampler(load_images(args.data, args.crop), args.crop, device, args.seed)
    lambdas = torch.tensor(LAMBDAS, device=device)
    step = 0
    if args.resume:
        saved = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step = saved["step"]
        _set_rng_state(saved["rng"], sampler, device)
        if saved["steps"] != args.steps:
            raise SystemExit(f"{args.checkpoint} was started with --steps {saved['steps']}; resume with the same value")

    def save() -> None:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "steps": args.steps, "n": args.n, "m": args.m, "rng": _rng_state(sampler, device)}, tmp)
        tmp.replace(args.checkpoint)
        if args.snapshot:
            torch.save(snapshot(model), args.snapshot)

    started = time.monotonic()
    window: list[torch.Tensor] = []  # per step (loss, bpp, mse), kept on the device: no sync per step
    window_start = time.monotonic()
    model.train()
    while step < args.steps:
        lr = _lr_at(step, args.steps, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        x = sampler.batch(args.batch)
        quality = torch.randint(len(LAMBDAS), (args.batch,), device=device)
        x_hat, bits_y, bits_z = model(x, quality)
        pixels = x.shape[2] * x.shape[3]
        bpp = (bits_y + bits_z) / pixels
        mse = torch.mean((x_hat - x) ** 2, dim=(1, 2, 3))
        loss = torch.mean(bpp + lambdas[quality] * 255**2 * mse)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window.append(torch.stack([loss.detach(), bpp.detach().mean(), mse.detach().mean()]))
        if step % args.log_every == 0 or step == args.steps:
            loss_mean, bpp_mean, mse_mean = torch.stack(window).mean(dim=0).tolist()
            elapsed = time.monotonic() - window_start
            print(json.dumps({"event": "train", "step": step, "loss": round(loss_mean, 4), "bpp": round(bpp_mean, 4),
                              "psnr_db": round(10 * math.log10(1 / max(mse_mean, 1e-10)), 2), "lr": lr,
                              "steps_per_s": round(len(window) / elapsed, 2)}), flush=True)
            window, window_start = [], time.monotonic()
        if step % args.save_every == 0:
            save()
        if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
            print(json.dumps({"event": "paused", "step": step, "resume_with": "--resume"}), flush=True)
            break
    save()
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of training images (agents.hyperprior.data)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="resumable checkpoint file (written)")
    parser.add_argument("--snapshot", type=Path, help="also write float16 weights here at each save")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--steps", type=int, default=20000, help="total optimisation steps (sets the lr schedule)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=N_CHANNELS, help="channels of the transforms")
    parser.add_argument("--m", type=int, default=M_CHANNELS, help="latent channels")
    parser.add_argument("--init-transforms", type=Path, help="start g_a, g_s from a factorized_prior weights file")
    parser.add_argument("--crop", type=int, default=256, help="crop side in pixels (a multiple of 64)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 = deterministic)")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop and save after this long (0 = no limit)")
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args(argv)
    if args.crop % 64:
        parser.error("--crop must be a multiple of 64")
    return args


if __name__ == "__main__":
    train(parse_args())
