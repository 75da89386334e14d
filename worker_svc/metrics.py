"""Trusted rate-distortion metrics, computed by the worker outside the agent's process.

Definitions (README "How results are computed"):

- ``bytes``: length of the bitstream the decoder receives; ``bpp = 8 * bytes / (H * W)``.
- reconstruction: uint8 as returned, or float clamped to [0, 1], times 255, rounded half to even
  (``torch.round``); floats beyond [-0.05, 1.05] are refused (:mod:`codecbench.reconstructions`).
- ``mse``: mean over all pixels and the 3 channels of (x - y)^2 on uint8 RGB values (the sum of
  squares in integers, exactly, chunk by chunk: a few MiB of working memory at any image size).
- ``psnr_db = 10 * log10(255^2 / mse)``; +inf for an exact round trip.
- ``ms_ssim``: ``pytorch_msssim.ms_ssim(x, y, data_range=255)`` with its defaults (5 scales,
  11-px Gaussian window, sigma 1.5; Wang, Simoncelli & Bovik 2003), when the shorter side is
  above 160 px (the library's minimum for 5 scales), else a stated reason. The library's figure
  is the mean of per-channel MS-SSIMs; they are computed one channel per call, which gives that
  figure (to float32 rounding: the convolutions differ in the last bits, ~1e-6) with half the
  working memory (a 24 MP image on the CPU: ~3.5 GB instead of ~6.7 GB).
  On a CUDA worker running a CUDA experiment it is computed on the GPU (:func:`device_for`); the
  convolutions there differ from the CPU's in the last float32 bits.
  An exact reconstruction has MS-SSIM 1 (every SSIM and contrast-structure term is 1) and is not
  computed: 45-70 s of one CPU core for a 24 MP image.
- per parameter point, beside total bytes and pixels:
  - per-image means (CompressAI's convention): bpp, MSE, encode and decode ms; PSNR is the mean of
    the finite per-image PSNRs, with the number of exact images stated (+inf only when every
    image is exact, so one exact image does not make the whole point infinite); MS-SSIM the mean
    over the images that have one, with their count;
  - pooled figures (CLIC's convention): ``pooled_bpp = 8 * total bytes / total pixels`` and
    ``pooled_psnr_db`` of ``pooled_mse``, the squared errors of all images over all their values
    (a tiny image weighs by its pixels, not as much as a large one);
  - medians of the encode and decode ms beside their means;
  - ``lossless`` only when every image is exact.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics

import torch
from pytorch_msssim import ms_ssim

from codecbench import devices, errors, reconstructions, tensors
from codecbench.v1 import experiment_pb2, types_pb2

# pytorch-msssim needs min(H, W) > (win_size - 1) * 2**(levels - 1) = 10 * 16 for its defaults.
MS_SSIM_MIN_SIDE = 161
# Values per chunk of the squared-error sum: 16 MiB of int32 differences at most.
SSE_CHUNK_VALUES = 1 << 22


def device_for(device: devices.Device.ValueType) -> str:
    """Where an experiment's MS-SSIM is computed: ``"cuda"`` for a CUDA experiment on a worker
    whose torch sees a GPU, else ``"cpu"`` (DEVICE_UNSPECIFIED reads as CPU).

    The agent runs on the experiment's device, so its GPU is the one the worker has; a worker
    without a usable CUDA runtime still measures, on the CPU, instead of failing the run.
    """
    if devices.resolve(device) == devices.CUDA and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def metrics_threads(slots: int, cores: int | None = None) -> int:
    """The torch intra-op threads for the worker's metrics: the cores its agents are not using.

    Each of the worker's ``slots`` runs one agent process at a time (encoder, then decoder), which
    keeps about one core busy; the metrics get the rest, and at least one thread. More threads
    than free cores were slower, not faster: on a busy 2-core machine two threads took twice as
    long as one (the agent and the metrics fought for the cores).

    Args:
        slots: experiments the worker runs at once.
        cores: usable cores; None reads this process's CPU affinity.
    """
    usable = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, usable - max(slots, 0))


def reconstruction_to_uint8(message: types_pb2.Tensor, height: int, width: int) -> torch.Tensor:
    """Validates a decoder's output and converts it to uint8 [3, H, W].

    Raises:
        errors.InvalidOutput: wrong shape, wrong dtype, NaN/inf values, or malformed data;
            the message states what was expected and what came.
    """
    expected_shape = [3, height, width]
    expected = f"tensor [3, {height}, {width}], {reconstructions.EXPECTED}"
    try:
        recon = tensors.to_torch(message)
    except tensors.TensorFormatError as exc:
        raise errors.InvalidOutput(str(exc), phase=types_pb2.PHASE_DECODE, expected=expected, actual=str(exc)) from exc
    actual = f"tensor {list(recon.shape)} {str(recon.dtype).removeprefix('torch.')}"
    if list(recon.shape) != expected_shape:
        raise errors.InvalidOutput(
            f"decode returned shape {list(recon.shape)}, expected {expected_shape}",
            phase=types_pb2.PHASE_DECODE, expected=expected, actual=actual,
        )
    # The sandbox sends uint8 already (codecbench.reconstructions); a forged float frame meets the same rules.
    return reconstructions.to_uint8(recon, expected=expected).pixels


def image_metrics(
    original: torch.Tensor,
    reconstruction: torch.Tensor,
    bitstream: bytes | int,
    encode_ms: float,
    decode_ms: float,
    device: str = "cpu",
) -> experiment_pb2.ImageMetrics:
    """Metrics of one image.

    Args:
        original: uint8 [3, H, W] on the CPU.
        reconstruction: uint8 [3, H, W] on the CPU.
        bitstream: the bitstream (its digest is recorded) or, for a seed agent, the byte count of
            its serialized encoding dict.
        encode_ms: wall time of the encode call measured by the worker, in ms.
        decode_ms: wall time of the decode call measured by the worker, in ms.
        device: where to compute MS-SSIM ("cpu" or "cuda").
    """
    _, height, width = original.shape
    n_bytes = bitstream if isinstance(bitstream, int) else len(bitstream)
    mse = squared_error_sum(original, reconstruction) / original.numel()
    psnr = psnr_db(mse)
    result = experiment_pb2.ImageMetrics(
        bytes=n_bytes,
        width=width,
        height=height,
        bpp=8.0 * n_bytes / (height * width),
        mse=mse,
        psnr_db=psnr,
        lossless=mse == 0.0,
        encode_ms=encode_ms,
        decode_ms=decode_ms,
        bitstream_sha256=hashlib.sha256(bitstream).hexdigest() if isinstance(bitstream, bytes) else "",
    )
    if min(height, width) < MS_SSIM_MIN_SIDE:
        result.ms_ssim_unavailable_reason = (
            f"image {width}x{height} is below {MS_SSIM_MIN_SIDE} px on its shorter side, the minimum of "
            "5-scale MS-SSIM with an 11-px window (pytorch-msssim)"
        )
    elif mse == 0.0:
        result.ms_ssim = 1.0  # exact: every term is 1 (module docstring)
    else:
        result.ms_ssim = ms_ssim_per_channel(original, reconstruction, device)
    return result


def squared_error_sum(original: torch.Tensor, reconstruction: torch.Tensor) -> int:
    """The sum of (x - y)^2 over every value of two uint8 tensors of one shape, exactly.

    Computed in integers, :data:`SSE_CHUNK_VALUES` values at a time, so the working memory does
    not grow with the image (float64 copies of a 24 MP image took 2 GB). At most 255^2 * 3 *
    32 Mi, well within int64.
    """
    x, y = original.reshape(-1), reconstruction.reshape(-1)
    total = 0
    for start in range(0, x.numel(), SSE_CHUNK_VALUES):
        diff = x[start:start + SSE_CHUNK_VALUES].to(torch.int32) - y[start:start + SSE_CHUNK_VALUES].to(torch.int32)
        total += int((diff * diff).sum())  # the sum of an int32 tensor is int64
    return total


def ms_ssim_per_channel(original: torch.Tensor, reconstruction: torch.Tensor, device: str = "cpu") -> float:
    """``pytorch_msssim.ms_ssim(x, y, data_range=255)`` (defaults) of two uint8 [C, H, W] images.

    The library returns the mean of its per-channel MS-SSIMs; each channel is computed in its own
    call here, so at most one channel's float32 maps exist at a time (module docstring). Equal to
    one call on all channels to float32 rounding (~1e-6).

    Args:
        original: uint8 [C, H, W], min(H, W) >= :data:`MS_SSIM_MIN_SIDE`.
        reconstruction: uint8 [C, H, W].
        device: where to compute ("cpu" or "cuda").
    """
    per_channel = []
    for c in range(original.shape[0]):
        x = original[c:c + 1].to(device=device, dtype=torch.float32).unsqueeze(0)
        y = reconstruction[c:c + 1].to(device=device, dtype=torch.float32).unsqueeze(0)
        per_channel.append(ms_ssim(x, y, data_range=255, size_average=False).reshape(1))
    return float(torch.cat(per_channel).mean())


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def psnr_db(mse: float) -> float:
    """``10 * log10(255^2 / mse)`` in dB for uint8 values; +inf when ``mse`` is 0 (exact)."""
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def point_result(
    point_index: int, params: types_pb2.ParameterPoint, images: list[experiment_pb2.ImageResult]
) -> experiment_pb2.PointResult:
    """Aggregates one parameter point: per-image means, pooled figures, medians (module docstring).

    Args:
        point_index: the point's index in the experiment.
        params: the point's parameters.
        images: the point's image results, each with its metrics.
    """
    metrics = [image.metrics for image in images]
    pixels = [m.width * m.height for m in metrics]
    total_pixels = sum(pixels)
    total_bytes = sum(m.bytes for m in metrics)
    finite_psnr = [m.psnr_db for m in metrics if math.isfinite(m.psnr_db)]
    exact = sum(1 for m in metrics if m.lossless)
    # mse is a mean over 3 * pixels values: weighting by pixels pools the squared errors exactly.
    pooled_mse = math.fsum(m.mse * n for m, n in zip(metrics, pixels, strict=True)) / total_pixels if metrics else 0.0
    with_ms_ssim = [m.ms_ssim for m in metrics if m.HasField("ms_ssim")]
    result = experiment_pb2.PointResult(
        point_index=point_index,
        params=params,
        image_count=len(images),
        total_bytes=total_bytes,
        total_pixels=total_pixels,
        bpp=_mean([m.bpp for m in metrics]),
        mse=_mean([m.mse for m in metrics]),
        psnr_db=_mean(finite_psnr) if finite_psnr else math.inf,
        lossless=bool(metrics) and exact == len(metrics),
        lossless_image_count=exact,
        pooled_bpp=8.0 * total_bytes / total_pixels if total_pixels else math.nan,
        pooled_mse=pooled_mse,
        pooled_psnr_db=psnr_db(pooled_mse),
        ms_ssim_image_count=len(with_ms_ssim),
        encode_ms=_mean([m.encode_ms for m in metrics]),
        decode_ms=_mean([m.decode_ms for m in metrics]),
        encode_ms_median=statistics.median([m.encode_ms for m in metrics]) if metrics else math.nan,
        decode_ms_median=statistics.median([m.decode_ms for m in metrics]) if metrics else math.nan,
        images=images,
    )
    if with_ms_ssim:
        result.ms_ssim = _mean(with_ms_ssim)
    return result


# PNG compression level of kept reconstructions: zlib level 3 is a few times faster than the
# default 6 on photos for files about 10 % larger (lossless either way).
PNG_COMPRESS_LEVEL = 3


def png_bytes(recon: torch.Tensor) -> bytes:
    """A reconstruction as a PNG file (lossless: the pixels the metrics were computed on).

    Args:
        recon: uint8 [3, H, W] RGB, as :func:`reconstruction_to_uint8` returns it.

    Returns:
        The PNG file's bytes (8-bit RGB).
    """
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(recon.permute(1, 2, 0).contiguous().cpu().numpy(), mode="RGB").save(
        out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()
