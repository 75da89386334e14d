"""Measure the shipped codec on the ``photos`` images and compare it with Pillow JPEG.

Run from the repository root::

    python -m agents.factorized_prior.evaluate

This is the agent's own measurement (not codecbench's): per image ``bpp = 8 * bytes / (H * W)``,
PSNR in dB on uint8 RGB, MS-SSIM (pytorch-msssim, ``data_range=255``); per rate point the mean over
images (CompressAI's convention). JPEG: Pillow, qualities 10..90, default 4:2:0 chroma subsampling.
BD-rate vs JPEG on (mean bpp, mean PSNR) with PCHIP interpolation (``bjontegaard`` package,
G. Bjøntegaard, VCEG-M33, 2001); negative means fewer bits at equal PSNR.
Prints one JSON line per rate point, then a summary line and a markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from typing import IO, cast

import bjontegaard
import matplotlib.cbook
import numpy as np
import skimage.data
import torch
from PIL import Image
from pytorch_msssim import ms_ssim

from agents.factorized_prior.codec import QUALITIES, Codec


def photos() -> list[tuple[str, torch.Tensor]]:
    """The 8 images of codecbench's ``photos`` set as (name, uint8 ``[3, H, W]``)."""
    with cast(IO[bytes], matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as f:  # a file, not an .npy
        grace = np.asarray(Image.open(f).convert("RGB"))
    arrays = {
        "astronaut": skimage.data.astronaut(), "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(), "rocket": skimage.data.rocket(),
        "hubble_deep_field": skimage.data.hubble_deep_field(),
        "immunohistochemistry": skimage.data.immunohistochemistry(),
        "motorcycle_left": skimage.data.stereo_motorcycle()[0], "grace_hopper": grace,
    }
    return [(name, torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
            for name, a in arrays.items()]


def _metrics(original: torch.Tensor, decoded: torch.Tensor, nbytes: int) -> dict[str, float]:
    """bpp, PSNR (dB) and MS-SSIM of one uint8 ``[3, H, W]`` pair."""
    h, w = original.shape[1:]
    mse = torch.mean((original.double() - decoded.double()) ** 2).item()
    psnr = 10 * math.log10(255**2 / mse) if mse > 0 else float("inf")
    msssim = ms_ssim(original[None].float(), decoded[None].float(), data_range=255).item()
    return {"bpp": 8 * nbytes / (h * w), "psnr": psnr, "ms_ssim": msssim}


def _jpeg(image: torch.Tensor, quality: int) -> tuple[torch.Tensor, int]:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1))), len(buffer.getvalue())


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images = photos()

    ours = {}
    for quality in args.qualities:
        codec = Codec(args.device, quality=quality)
        rows = []
        for _, image in images:
            bitstream = codec.encode(image.to(args.device))
            rows.append(_metrics(image, codec.decode(bitstream).cpu(), len(bitstream)))
        ours[quality] = _mean(rows)
        print(json.dumps({"codec": "factorized_prior", "quality": quality, **ours[quality]}), flush=True)

    jpeg = {}
    for quality in range(10, 100, 10):
        rows = []
        for _, image in images:
            decoded, nbytes = _jpeg(image, quality)
            rows.append(_metrics(image, decoded, nbytes))
        jpeg[quality] = _mean(rows)
        print(json.dumps({"codec": "jpeg", "quality": quality, **jpeg[quality]}), flush=True)

    bd = bjontegaard.bd_rate(
        [p["bpp"] for p in jpeg.values()], [p["psnr"] for p in jpeg.values()],
        [p["bpp"] for p in ours.values()], [p["psnr"] for p in ours.values()],
        method="pchip", require_matching_points=False,
    )
    print(json.dumps({"bd_rate_vs_jpeg_psnr_percent": bd}), flush=True)
    print("| quality | bpp | PSNR (dB) | MS-SSIM |\n| --- | --- | --- | --- |")
    for quality, p in ours.items():
        print(f"| {quality} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")


if __name__ == "__main__":
    main()
