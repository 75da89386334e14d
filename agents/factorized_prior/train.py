"""Train the factorized-prior codec and write its shipped weights and integer entropy tables.

Run from the repository root::

    python -m agents.factorized_prior.train            # all qualities, reproduces weights/q*.pt

References: [B17] Ballé, Laparra, Simoncelli, ICLR 2017; [B18] Ballé et al., ICLR 2018 (see model.py).

Objective (the rate-distortion loss of [B17], in the bits-per-pixel / 8-bit-MSE units of [B18] and
CompressAI):
``L = R + lambda * 255**2 * MSE`` with ``R`` the estimated rate in bits per pixel and ``MSE`` over
RGB values in [0, 1]. The rate term uses additive uniform noise as a proxy for rounding [B17]; the
synthesis transform sees the rounded latent with a straight-through gradient ("mixed" quantization,
D. Minnen, S. Singh, "Channel-wise autoregressive entropy models for learned image compression",
ICIP 2020), which matches what the decoder gets at test time.

Schedule: one base model is trained at quality 4's (highest) lambda, then every quality is
fine-tuned from it at its own lambda (each model inherits the base model's transforms, which saves
CPU time against training four models from scratch). Every phase is seeded; with one CPU thread the
run is deterministic.

Training data never includes an image of the evaluation set "photos" or a near-duplicate of one
(see :data:`COLOUR_SOURCES` / :data:`GRAY_SOURCES` and README.md): it is a few colour and
grayscale images that ship inside scikit-image and matplotlib, plus synthetic dead-leaves images.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import skimage
import torch
from PIL import Image

from agents.factorized_prior.model import (
    AnalysisTransform,
    FactorizedDensity,
    SynthesisTransform,
    quantized_pmf_tables,
)

#: lambda per quality, for L = bpp + lambda * 255**2 * MSE: the lambdas of CompressAI's
#: factorized-prior qualities 1..4 (its model zoo documentation), spaced ~1.5x apart in rate.
LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130}
BASE_QUALITY = 4  # the base model is trained at this quality's lambda, then fine-tuned to each
N_CHANNELS = 64  # hidden channels of g_a / g_s
M_CHANNELS = 128  # latent channels
#: The density network gets a 10x larger learning rate: at the shared rate, narrowing its initial
#: (deliberately wide) density takes thousands of steps, during which the rate term stays ~2.5 bpp.
DENSITY_LR_FACTOR = 10.0

_SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
_MPL_DATA = Path(matplotlib.get_data_path()) / "sample_data"

#: Colour images used as they are (alpha composited on white). None of them is, or resembles, an
#: image of "photos" (astronaut, chelsea, coffee, rocket, hubble_deep_field, ihc, motorcycle
#: left/right, grace_hopper).
COLOUR_SOURCES = (
    _SKIMAGE_DATA / "retina.jpg",
    _SKIMAGE_DATA / "color.png",
    _SKIMAGE_DATA / "logo.png",
    _MPL_DATA / "Minduka_Present_Blue_Pack.png",
    _MPL_DATA / "logo2.png",
)
#: Grayscale photographs and textures, turned into colour by a random duotone per crop.
GRAY_SOURCES = tuple(
    _SKIMAGE_DATA / name
    for name in (
        "camera.png", "coins.png", "brick.png", "grass.png", "gravel.png", "moon.png",
        "cell.png", "clock_motion.png", "page.png", "text.png",
    )
)


def _load_rgb(path: Path) -> np.ndarray:
    """Image file -> float32 ``[3, H, W]`` in [0, 1]; alpha is composited on white."""
    with Image.open(path) as opened:
        im: Image.Image = opened
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _load_gray(path: Path) -> np.ndarray:
    """Image file -> float32 ``[1, H, W]`` luminance in [0, 1]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)[None] / 255.0


def _half(image: np.ndarray) -> np.ndarray:
    """2x box downsampling of ``[C, H, W]`` (adds a coarser scale: more detail per crop)."""
    c, h, w = image.shape
    h2, w2 = h // 2, w // 2
    half: np.ndarray = image[:, : 2 * h2, : 2 * w2].reshape(c, h2, 2, w2, 2).mean(axis=(2, 4))
    return half


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A plausible surface colour: uniform luminance plus a moderate chroma offset, in [0, 1]^3."""
    return np.clip(rng.uniform(0.0, 1.0) + rng.normal(0.0, 0.2, size=3), 0.0, 1.0).astype(np.float32)


def dead_leaves(rng: np.random.Generator, size: int, textures: list[np.ndarray]) -> np.ndarray:
    """Synthetic dead-leaves image, float32 ``[3, size, size]`` in [0, 1].

    Occluding disks with power-law radii, density ``p(r) ~ r**-3`` on [4, size] px (the
    scale-invariant dead-leaves model of A. B. Lee, D. Mumford, J. Huang, "Occlusion models for
    natural images", IJCV 2001), drawn front to back until the canvas is covered. Each disk is a
    flat colour, a linear shading, or a duotone of a grayscale texture crop; the image then gets a
    random defocus (box blur) and sensor-like noise.
    """
    image = np.zeros((3, size, size), dtype=np.float32)
    free = np.ones((size, size), dtype=bool)
    r_min, r_max = 4.0, float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(4000):
        if not free.any():
            break
        u = rng.uniform()
        r = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF of p(r) ~ r^-3
        cy, cx = rng.uniform(-r, size + r, size=2)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, size)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        inside = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        mask = inside & free[y0:y1, x0:x1]
        if not mask.any():
            continue
        h, w = y1 - y0, x1 - x0
        texture = textures[rng.integers(len(textures))]
        fits = texture.shape[1] >= h and texture.shape[2] >= w
        kind = rng.uniform()
        if kind < 0.5:
            fill = np.broadcast_to(_random_colour(rng)[:, None, None], (3, h, w))
        elif kind < 0.75 or not fits:  # a texture smaller than the disk falls back to shading
            c0, c1 = _random_colour(rng), _random_colour(rng)
            angle = rng.uniform(0, 2 * math.pi)
            ramp = (math.cos(angle) * (xx[y0:y1, x0:x1] - cx) + math.sin(angle) * (yy[y0:y1, x0:x1] - cy))
            t = np.clip(0.5 + ramp / (2 * r), 0.0, 1.0)[None]
            fill = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
        else:
            ty = rng.integers(0, texture.shape[1] - h + 1)
            tx = rng.integers(0, texture.shape[2] - w + 1)
            fill = _duotone(rng, texture[:, ty : ty + h, tx : tx + w])
        image[:, y0:y1, x0:x1][:, mask] = fill[:, mask]
        free[y0:y1, x0:x1] &= ~mask
    if free.any():
        image[:, free] = _random_colour(rng)[:, None]
    blur = int(rng.integers(0, 3))  # box blur of radius 0..2 px (0 = sharp)
    if blur:
        kernel = np.ones(2 * blur + 1, dtype=np.float32) / (2 * blur + 1)
        image = np.apply_along_axis(np.convolve, 2, image, kernel, mode="same")
        image = np.apply_along_axis(np.convolve, 1, image, kernel, mode="same")
    image += rng.normal(0.0, rng.uniform(0.0, 0.02), size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _duotone(rng: np.random.Generator, gray: np.ndarray) -> np.ndarray:
    """Colour a ``[1, h, w]`` luminance crop as ``c0 + g * (c1 - c0)``; 30 % stay gray."""
    if rng.uniform() < 0.3:
        return np.repeat(gray, 3, axis=0)
    dark = _random_colour(rng) * rng.uniform(0.0, 0.5)
    light = dark + (1.0 - dark) * rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    return dark[:, None, None] + gray * (light - dark)[:, None, None]


class CropSampler:
    """Random ``crop x crop`` training patches from a fixed pool, with flips and colour augmentation.

    Sources are mixed 40 % dead leaves, 40 % duotone grayscale photos/textures, 20 % colour images
    (channel order randomly permuted). Each source also exists at half resolution.
    """

    def __init__(self, rng: np.random.Generator, crop: int, dead_leaves_count: int = 96) -> None:
        self.rng = rng
        self.crop = crop
        gray = [_load_gray(p) for p in GRAY_SOURCES]
        colour = [_load_rgb(p) for p in COLOUR_SOURCES]
        self.gray = [g for g in gray + [_half(g) for g in gray] if min(g.shape[1:]) >= crop]
        self.colour = [c for c in colour + [_half(c) for c in colour] if min(c.shape[1:]) >= crop]
        self.leaves = [dead_leaves(rng, 256, self.gray) for _ in range(dead_leaves_count)]

    def _crop(self, image: np.ndarray) -> np.ndarray:
        _, h, w = image.shape
        y = self.rng.integers(0, h - self.crop + 1)
        x = self.rng.integers(0, w - self.crop + 1)
        return image[:, y : y + self.crop, x : x + self.crop]

    def sample(self, batch: int) -> torch.Tensor:
        """A float32 batch ``[batch, 3, crop, crop]`` in [0, 1]."""
        out = np.empty((batch, 3, self.crop, self.crop), dtype=np.float32)
        for i in range(batch):
            kind = self.rng.uniform()
            if kind < 0.4:
                patch = self._crop(self.leaves[self.rng.integers(len(self.leaves))])
            elif kind < 0.8:
                patch = _duotone(self.rng, self._crop(self.gray[self.rng.integers(len(self.gray))]))
            else:
                patch = self._crop(self.colour[self.rng.integers(len(self.colour))])
                patch = patch[self.rng.permutation(3)]
            if self.rng.uniform() < 0.5:
                patch = patch[:, :, ::-1]
            if self.rng.uniform() < 0.5:
                patch = patch[:, ::-1, :]
            out[i] = patch
        return torch.from_numpy(out)


class Trainable(torch.nn.Module):
    """g_a, g_s and the factorized density trained jointly."""

    def __init__(self) -> None:
        super().__init__()
        self.analysis = AnalysisTransform(N_CHANNELS, M_CHANNELS)
        self.synthesis = SynthesisTransform(N_CHANNELS, M_CHANNELS)
        self.density = FactorizedDensity(M_CHANNELS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: float ``[B, 3, H, W]`` in [0, 1] -> (reconstruction ``[B, 3, H, W]``, rate in bits)."""
        y = self.analysis(x)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_rounded = y + (torch.round(y) - y).detach()  # straight-through rounding
        bits = -torch.log2(self.density.likelihood(y_noisy).clamp_min(1e-9)).sum()
        return self.synthesis(y_rounded), bits


def _log(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def run_phase(
    net: Trainable,
    sampler: CropSampler,
    *,
    phase: str,
    lam: float,
    steps: int,
    lr: float,
    batch: int,
    log_every: int,
) -> None:
    """Adam on ``L = bpp + lam * 255**2 * MSE`` for ``steps`` steps; cosine-decays ``lr`` to lr/10.

    The transforms use ``lr``, the density ``lr * DENSITY_LR_FACTOR``; gradients are clipped to norm 1
    (large IGDN outputs early in training otherwise make single steps diverge).

    Logs one JSON line per ``log_every`` steps with means over that window: loss, bpp (the
    noisy-latent rate estimate), PSNR in dB of the reconstruction from the rounded latent.
    """
    groups: list[dict[str, Any]] = [
        {"params": [*net.analysis.parameters(), *net.synthesis.parameters()]},
        {"params": net.density.parameters(), "lr": lr * DENSITY_LR_FACTOR},
    ]
    optimizer = torch.optim.Adam(groups, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    window = {"loss": 0.0, "bpp": 0.0, "mse": 0.0}
    start = time.monotonic()
    for step in range(1, steps + 1):
        x = sampler.sample(batch)
        x_hat, bits = net(x)
        bpp = bits / (x.shape[0] * x.shape[2] * x.shape[3])
        mse = torch.mean((x_hat - x) ** 2)
        loss = bpp + lam * 255**2 * mse
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        window["loss"] += loss.item()
        window["bpp"] += bpp.item()
        window["mse"] += mse.item()
        if step % log_every == 0:
            _log({
                "event": "train", "phase": phase, "step": step, "lambda": lam,
                "loss": round(window["loss"] / log_every, 5),
                "bpp": round(window["bpp"] / log_every, 5),
                "psnr_db": round(10 * math.log10(1.0 / max(window["mse"] / log_every, 1e-12)), 3),
                "lr": optimizer.param_groups[0]["lr"],
                "elapsed_s": round(time.monotonic() - start, 1),
            })
            window = dict.fromkeys(window, 0.0)


def export(net: Trainable, quality: int, path: Path) -> None:
    """Write the shipped weights of one quality.

    The file holds g_a and g_s in float16 (halves the size; the codec computes in float32), the
    integer tables from :func:`quantized_pmf_tables` and the hyper-parameters. The density network
    itself is not shipped: coding uses only the tables.
    """
    half = {k: v.half() for k, v in net.state_dict().items() if not k.startswith("density.")}
    payload = {
        "format": 1,
        "quality": quality,
        "lambda": LAMBDAS[quality],
        "n": N_CHANNELS,
        "m": M_CHANNELS,
        "analysis": {k.removeprefix("analysis."): v for k, v in half.items() if k.startswith("analysis.")},
        "synthesis": {k.removeprefix("synthesis."): v for k, v in half.items() if k.startswith("synthesis.")},
        **quantized_pmf_tables(net.density),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    _log({"event": "export", "quality": quality, "path": str(path), "bytes": path.stat().st_size})


def _seed_phase(sampler: CropSampler, seed: int, phase_id: int) -> None:
    """Reseed torch and the crop sampler for one phase (0 = base, q = quality q).

    Each phase depends only on (seed, phase_id) and its starting weights, so training a subset of
    qualities, or resuming from a saved base model, reproduces the same weights as one full run.
    """
    torch.manual_seed(seed * 1000 + phase_id)
    sampler.rng = np.random.default_rng((seed, phase_id))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; the defaults reproduce the shipped weights."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qualities", type=int, nargs="*", default=sorted(LAMBDAS))
    parser.add_argument("--base-steps", type=int, default=14000)
    parser.add_argument("--finetune-steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = deterministic)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "weights")
    parser.add_argument("--base-checkpoint", type=Path, default=None,
                        help="load the base model from this file if it exists, else train and save it there")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    begin = time.monotonic()
    sampler = CropSampler(np.random.default_rng(args.seed), args.crop)
    _log({"event": "data", "gray": len(sampler.gray), "colour": len(sampler.colour),
          "dead_leaves": len(sampler.leaves), "elapsed_s": round(time.monotonic() - begin, 1)})

    _seed_phase(sampler, args.seed, 0)
    base = Trainable()
    if args.base_checkpoint is not None and args.base_checkpoint.is_file():
        base.load_state_dict(torch.load(args.base_checkpoint, weights_only=True))
        _log({"event": "base_loaded", "path": str(args.base_checkpoint)})
    else:
        run_phase(base, sampler, phase="base", lam=LAMBDAS[BASE_QUALITY], steps=args.base_steps,
                  lr=args.lr, batch=args.batch, log_every=args.log_every)
        if args.base_checkpoint is not None:
            torch.save(base.state_dict(), args.base_checkpoint)
    for quality in args.qualities:
        net = Trainable()
        net.load_state_dict(base.state_dict())
        _seed_phase(sampler, args.seed, quality)
        run_phase(net, sampler, phase=f"q{quality}", lam=LAMBDAS[quality], steps=args.finetune_steps,
                  lr=args.lr / 2, batch=args.batch, log_every=args.log_every)
        export(net, quality, args.out / f"q{quality}.pt")
    _log({"event": "done", "elapsed_s": round(time.monotonic() - begin, 1)})


if __name__ == "__main__":
    main()
