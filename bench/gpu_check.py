"""The CUDA paths, checked on a machine with a GPU: ``python -m bench.gpu_check [--out DIR] [--stage S]``.

Not part of ``make bench`` or the tests (neither may depend on a GPU). Writes ``gpu_check_STAGE.json``
to ``--out`` (default ``out/``) and prints one line per figure (``--stage codecs`` runs 1 and 2,
``metrics`` runs 4, ``service`` runs 3, ``all`` every one; ``--device cpu`` runs the same code
without a GPU, a dry run, which ``tests/test_gpu_check.py`` runs with ``--stage metrics``):

1. In process, per learned codec (``factorized_prior`` quality 4, ``hyperprior`` quality 5) on one
   768×512 photo: median encode / decode ms over 5 calls after one warm-up, on CPU and on CUDA,
   each call ended by ``torch.cuda.synchronize()`` so the figure includes the GPU work; and the
   cross-device check: a bitstream encoded on CUDA decoded on CPU and the other way round, with the
   PSNR of each reconstruction against the original and the largest pixel difference between the
   CPU and CUDA decodes of the same bitstream.
2. The worker's trusted metrics on that image (PSNR + MS-SSIM, ``worker_svc.metrics.image_metrics``)
   on CPU and on CUDA: median ms of 5.
3. Through a real orchestrator and worker (``--isolation process``: bubblewrap may be missing on
   GPU hosts), experiments with ``device="cuda"``: ``jpeg`` (qualities 30, 70), ``factorized_prior``
   (1, 4) and ``hyperprior`` (2, 5, 8) on ``photos``; state, and per point bpp, PSNR, encode_ms and
   decode_ms as measured by the worker (its sandbox child synchronises CUDA around each call).
4. The worker's GPU metrics path: the device ``worker_svc.metrics.device_for`` picks for a CUDA
   experiment (``"cuda"`` on a GPU worker: the path ``RunExperiment`` takes), MS-SSIM alone
   (``metrics.ms_ssim_per_channel``) on the 768×512 image on CPU and on that device, median ms of 5
   with ``torch.cuda.synchronize()``, and the difference between the two figures (float32 rounding).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import json_format
from PIL import Image

from codecbench import devices
from codecbench.client import Client
from codecbench.datasets import load_photos
from codecbench.local import start_local
from worker_svc import metrics

REPO = Path(__file__).resolve().parent.parent
#: The accelerator under test (``--device``); "cpu" runs the same code without a GPU (a dry run).
GPU = "cuda"


def _photo_768x512() -> torch.Tensor:
    coffee = next(p for p in load_photos() if p.name.startswith("coffee")).pixels
    img = Image.fromarray(coffee.permute(1, 2, 0).numpy()).resize((768, 512), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def _median_ms(fn: Callable[[], Any], device: str, repeats: int = 5) -> tuple[float, Any]:
    def timed() -> tuple[float, Any]:
        start = time.perf_counter()
        out = fn()
        if device == "cuda" and GPU == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000.0, out

    timed()  # warm-up: cuDNN autotuning, lazy loading
    runs = [timed() for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double().cpu() - b.double().cpu()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def in_process(image: torch.Tensor) -> dict[str, Any]:
    """Figures 1 and 2 (see the module docstring)."""
    out: dict[str, Any] = {}
    for agent, quality in (("factorized_prior", 4), ("hyperprior", 5)):
        module = importlib.import_module(f"agents.{agent}.codec")
        codecs = {"cpu": module.Codec("cpu", quality=quality), "cuda": module.Codec(GPU, quality=quality)}
        row: dict[str, Any] = {}
        streams = {}
        for device, codec in codecs.items():
            enc_ms, stream = _median_ms(partial(codec.encode, image), device)
            dec_ms, recon = _median_ms(partial(codec.decode, stream), device)
            streams[device] = stream
            row[device] = {"encode_ms": round(enc_ms, 2), "decode_ms": round(dec_ms, 2), "bytes": len(stream),
                           "psnr_db": round(_psnr(image, recon), 3)}
        for src, dst in (("cuda", "cpu"), ("cpu", "cuda")):
            recon = codecs[dst].decode(streams[src])
            same_stream_other_device = codecs[src].decode(streams[src])
            row[f"encoded_{src}_decoded_{dst}"] = {
                "psnr_db": round(_psnr(image, recon), 3),
                "max_pixel_diff_vs_same_device_decode": int((recon.cpu().int() - same_stream_other_device.cpu().int())
                                                            .abs().max()),
            }
        row["bitstreams_identical_cpu_vs_cuda"] = streams["cpu"] == streams["cuda"]
        out[agent] = row
        print(agent, json.dumps(row), flush=True)
    recon = codecs["cpu"].decode(streams["cpu"])
    for device in ("cpu", "cuda"):
        on = GPU if device == "cuda" else "cpu"
        ms, m = _median_ms(partial(metrics.image_metrics, image, recon, streams["cpu"], 0.0, 0.0, on), device)
        out[f"metrics_{device}"] = {"ms": round(ms, 2), "psnr_db": m.psnr_db, "ms_ssim": m.ms_ssim}
        print(f"metrics on {device}: {ms:.2f} ms (PSNR {m.psnr_db:.3f} dB, MS-SSIM {m.ms_ssim:.6f})", flush=True)
    return out


def gpu_metrics(image: torch.Tensor) -> dict[str, Any]:
    """Figure 4 (see the module docstring): the metrics device of a CUDA experiment, and MS-SSIM there."""
    picked = metrics.device_for(devices.CUDA) if GPU == "cuda" else "cpu"
    # A reconstruction with JPEG-like error: the original plus small noise (MS-SSIM < 1, so it is computed).
    noise = torch.randint(-6, 7, image.shape, generator=torch.Generator().manual_seed(0), dtype=torch.int16)
    recon = (image.to(torch.int16) + noise).clamp(0, 255).to(torch.uint8)
    out: dict[str, Any] = {"device_for_cuda_experiment": picked}
    figures = {}
    for device, on in (("cpu", "cpu"), ("cuda", picked)):
        ms, value = _median_ms(partial(metrics.ms_ssim_per_channel, image, recon, on), device)
        figures[device] = value
        out[f"ms_ssim_{device}"] = {"ms": round(ms, 2), "ms_ssim": value, "on": on}
        print(f"MS-SSIM alone on {on} ({device} arm): {ms:.2f} ms, {value:.6f}", flush=True)
    out["ms_ssim_abs_diff_cpu_vs_gpu"] = abs(figures["cpu"] - figures["cuda"])
    print(json.dumps({k: out[k] for k in ("device_for_cuda_experiment", "ms_ssim_abs_diff_cpu_vs_gpu")}), flush=True)
    return out


async def through_service(data_dir: Path) -> dict[str, Any]:
    """Figure 3 (see the module docstring)."""
    runs = (("jpeg", (30, 70)), ("factorized_prior", (1, 4)), ("hyperprior", (2, 5, 8)))
    out: dict[str, Any] = {}
    services = await start_local(data_dir, worker_slots=1, use_bwrap=False)
    try:
        async with Client(services.orchestrator.address, token_file=services.token_file) as client:
            submitted = [(name, await client.submit(REPO / "agents" / name, points=[{"quality": q} for q in qs],
                                                    device=GPU)) for name, qs in runs]
            for name, experiment in submitted:
                done = await client.wait(experiment.experiment_id)
                points = [{k: v for k, v in json_format.MessageToDict(p).items() if k != "images"}
                          for p in done.result.points]
                out[name] = {"state": done.state, "error": json_format.MessageToDict(done.error), "points": points}
                print(name, json.dumps(out[name]), flush=True)
            out["workers"] = [json_format.MessageToDict(w) for w in await client.workers()]
    finally:
        await services.stop()
    return out


def main() -> int:
    """Runs the checks; returns 0, or 1 when the device is CUDA and there is none."""
    global GPU  # noqa: PLW0603 - the one setting of this script, read by every check
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--stage", choices=("codecs", "metrics", "service", "all"), default="all")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    GPU = args.device
    args.out.mkdir(parents=True, exist_ok=True)
    if GPU == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (--device cpu runs a dry run)", file=sys.stderr)
        return 1
    report: dict[str, Any] = {"torch": torch.__version__,
                              "device": torch.cuda.get_device_name() if GPU == "cuda" else "cpu (dry run)"}
    print(json.dumps(report), flush=True)
    if args.stage in ("all", "codecs"):
        report["in_process"] = in_process(_photo_768x512())
    if args.stage in ("all", "metrics"):
        report["gpu_metrics"] = gpu_metrics(_photo_768x512())
    if args.stage in ("all", "service"):
        with tempfile.TemporaryDirectory() as data_dir:
            report["service"] = asyncio.run(through_service(Path(data_dir)))
    (args.out / f"gpu_check_{args.stage}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
