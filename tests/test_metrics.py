"""worker_svc.metrics: the trusted rate-distortion numbers, computed outside the agent."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from pytorch_msssim import ms_ssim

from codecbench import errors, tensors, values
from codecbench.v1 import experiment_pb2, types_pb2
from worker_svc import metrics


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def test_psnr_follows_its_formula_on_a_known_mse() -> None:
    original = torch.full((3, 20, 30), 100, dtype=torch.uint8)
    reconstruction = original.clone()
    reconstruction[:, :10, :] += 4  # half the values off by 4: MSE = 16 / 2 = 8
    m = metrics.image_metrics(original, reconstruction, b"\x01" * 75, encode_ms=1.5, decode_ms=2.5)
    assert m.mse == 8.0
    assert m.psnr_db == pytest.approx(10 * math.log10(255**2 / 8.0), abs=1e-12)
    assert not m.lossless
    assert (m.width, m.height, m.bytes) == (30, 20, 75)
    assert m.bpp == 8 * 75 / (20 * 30)
    assert (m.encode_ms, m.decode_ms) == (1.5, 2.5)
    assert m.bitstream_sha256 == hashlib.sha256(b"\x01" * 75).hexdigest()


def test_psnr_is_infinite_and_lossless_for_an_identical_image() -> None:
    image = _image(24, 24)
    m = metrics.image_metrics(image, image.clone(), b"abc", 0.0, 0.0)
    assert m.mse == 0.0 and math.isinf(m.psnr_db) and m.psnr_db > 0 and m.lossless


def test_one_value_off_by_one_is_not_lossless() -> None:
    image = _image(24, 24)
    off = image.clone()
    off[2, 23, 23] ^= 1
    m = metrics.image_metrics(image, off, b"abc", 0.0, 0.0)
    assert not m.lossless and m.mse > 0 and math.isfinite(m.psnr_db) and m.psnr_db > 60


def test_seed_byte_count_instead_of_a_bitstream() -> None:
    m = metrics.image_metrics(_image(10, 20), _image(10, 20), 123, 0.0, 0.0)
    assert m.bytes == 123 and m.bpp == 8 * 123 / 200 and m.bitstream_sha256 == ""


def _float_output(values_: list[float], dtype=torch.float32) -> types_pb2.Tensor:
    return tensors.from_torch(torch.tensor(values_, dtype=dtype).reshape(3, 1, len(values_) // 3))


def test_float_output_is_clamped_scaled_and_rounded() -> None:
    # Values chosen away from .5 boundaries: v * 255 = -10.2 (clamped), 100.4, 100.6, 127.0,
    # 255 * 1.04 (clamped: both within the 0.05 tolerance), 0.
    raw = [-0.04, 100.4 / 255, 100.6 / 255, 127 / 255, 1.04, 0.0]
    out = metrics.reconstruction_to_uint8(_float_output(raw, torch.float64), 1, 2)
    assert out.dtype == torch.uint8 and list(out.shape) == [3, 1, 2]
    assert out.flatten().tolist() == [0, 100, 101, 127, 255, 0]


@pytest.mark.parametrize(("low", "high", "advice"), [(-0.1, 0.9, "clamp them to [0, 1]"),
                                                     (0.0, 1.2, "clamp them to [0, 1]"),
                                                     (0.0, 254.0, "divide by 255"),
                                                     # tanh output: was told to clamp, losing half the range
                                                     (-0.98, 0.97, "(x + 1) / 2"),
                                                     (-1.0, 1.04, "(x + 1) / 2")])
def test_float_output_beyond_the_tolerance_states_min_max_and_what_to_do(low: float, high: float,
                                                                         advice: str) -> None:
    # Issue 13: 0-255 floats were once clamped to [0, 1] silently and scored ~4 dB.
    raw = [low, 0.5, high, 0.25, 0.0, 0.0]
    with pytest.raises(errors.InvalidOutput) as raised:
        metrics.reconstruction_to_uint8(_float_output(raw, torch.float32), 1, 2)
    message = str(raised.value)
    assert f"from {low:g} to {high:g}" in message and advice in message


def test_rounding_is_half_to_even() -> None:
    # 0.5 / 255 and 1.5 / 255 in float64 scale back to exactly 0.5 and 1.5.
    half, one_and_half = 0.5 / 255, 1.5 / 255
    assert half * 255 == 0.5 and one_and_half * 255 == 1.5
    out = metrics.reconstruction_to_uint8(_float_output([half, one_and_half, 0, 0, 0, 0], torch.float64), 1, 2)
    assert out.flatten().tolist()[:2] == [0, 2]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_float_dtype_is_accepted(dtype) -> None:
    out = metrics.reconstruction_to_uint8(_float_output([0.0, 1.0, 0.5] * 2, dtype), 1, 2)
    assert out.flatten().tolist() == [0, 255, 128] * 2


def test_uint8_output_passes_through_unchanged() -> None:
    image = _image(5, 7)
    assert torch.equal(metrics.reconstruction_to_uint8(tensors.from_torch(image), 5, 7), image)


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (torch.zeros(3, 4, 5, dtype=torch.uint8), r"shape \[3, 4, 5\], expected \[3, 5, 4\]"),
        (torch.zeros(1, 5, 4, dtype=torch.uint8), r"shape \[1, 5, 4\]"),
        (torch.zeros(3, 5, 4, dtype=torch.int32), r"dtype torch.int32"),
        (torch.full((3, 5, 4), float("nan")), r"60 NaN/inf"),
        (torch.tensor(float("inf")).expand(3, 5, 4).contiguous(), r"60 NaN/inf"),
    ],
    ids=["transposed", "one-channel", "int32", "nan", "inf"],
)
def test_invalid_outputs_are_refused_with_what_was_expected(output: torch.Tensor, match: str) -> None:
    with pytest.raises(errors.InvalidOutput, match=match) as info:
        metrics.reconstruction_to_uint8(tensors.from_torch(output), 5, 4)
    assert info.value.error.expected.startswith("tensor [3, 5, 4]")
    assert info.value.error.actual


def test_a_malformed_tensor_is_invalid_output() -> None:
    bad = types_pb2.Tensor(dtype=types_pb2.D_TYPE_UINT8, shape=[3, 5, 4], data=bytes(59))
    with pytest.raises(errors.InvalidOutput, match="needs 60 bytes, got 59"):
        metrics.reconstruction_to_uint8(bad, 5, 4)


def test_ms_ssim_is_replaced_by_a_reason_on_small_images() -> None:
    small = _image(metrics.MS_SSIM_MIN_SIDE - 1, 300)
    m = metrics.image_metrics(small, small, b"x", 0.0, 0.0)
    assert not m.HasField("ms_ssim")
    assert f"300x{metrics.MS_SSIM_MIN_SIDE - 1}" in m.ms_ssim_unavailable_reason
    assert str(metrics.MS_SSIM_MIN_SIDE) in m.ms_ssim_unavailable_reason


def test_ms_ssim_on_large_enough_images() -> None:
    image = _image(metrics.MS_SSIM_MIN_SIDE, metrics.MS_SSIM_MIN_SIDE + 9)
    same = metrics.image_metrics(image, image, b"x", 0.0, 0.0)
    assert same.HasField("ms_ssim") and same.ms_ssim == pytest.approx(1.0) and not same.ms_ssim_unavailable_reason
    noisy = (image.int() + torch.randint(-30, 31, image.shape, generator=torch.Generator().manual_seed(1)))
    worse = metrics.image_metrics(image, noisy.clamp(0, 255).to(torch.uint8), b"x", 0.0, 0.0)
    assert 0.0 < worse.ms_ssim < same.ms_ssim


def _result(index: int, original: torch.Tensor, reconstruction: torch.Tensor, n_bytes: int,
            encode_ms: float = 1.0, decode_ms: float = 1.0) -> experiment_pb2.ImageResult:
    return experiment_pb2.ImageResult(image_index=index, metrics=metrics.image_metrics(
        original, reconstruction, b"b" * n_bytes, encode_ms, decode_ms))


def _noisy(image: torch.Tensor, amplitude: int, seed: int) -> torch.Tensor:
    noise = torch.randint(-amplitude, amplitude + 1, image.shape, generator=torch.Generator().manual_seed(seed))
    return (image.int() + noise).clamp(0, 255).to(torch.uint8)


def test_point_result_averages_per_image_values() -> None:
    a, b = _image(8, 8, 1), _image(170, 165, 2)
    b_off = b.clone()
    b_off[0, 0, 0] ^= 8
    items = [_result(0, a, a, 10, 1.0, 3.0), _result(1, b, b_off, 30, 2.0, 5.0)]
    point = metrics.point_result(0, values.params_from_python({"quality": 5}), items)
    m0, m1 = items[0].metrics, items[1].metrics
    assert point.image_count == 2 and point.total_bytes == 40 and point.total_pixels == 8 * 8 + 170 * 165
    assert point.bpp == pytest.approx((m0.bpp + m1.bpp) / 2)
    assert point.mse == pytest.approx(m1.mse / 2)
    assert point.psnr_db == m1.psnr_db and point.lossless_image_count == 1  # the finite PSNRs' mean
    assert not point.lossless
    assert point.ms_ssim == m1.ms_ssim and point.ms_ssim_image_count == 1  # over the images that have one
    assert (point.encode_ms, point.decode_ms) == (1.5, 4.0)
    assert (point.encode_ms_median, point.decode_ms_median) == (1.5, 4.0)
    assert values.params_to_python(point.params) == {"quality": 5}


# -- issue 13, "Point aggregates": each case fresh, through the real per-image metrics -----------


def test_one_exact_tiny_image_neither_makes_the_psnr_infinite_nor_the_point_lossless() -> None:
    # A 1x1 image a codec happens to reproduce exactly, beside two images at about 30 dB.
    dot = _image(1, 1, 3)
    large = [_image(40, 48, seed) for seed in (4, 5)]
    items = [_result(0, dot, dot.clone(), 1)] + [
        _result(i, img, _noisy(img, 14, seed=i), 200) for i, img in enumerate(large, 1)
    ]
    point = metrics.point_result(0, types_pb2.ParameterPoint(), items)
    lossy = [item.metrics.psnr_db for item in items[1:]]
    assert all(25.0 < p < 35.0 for p in lossy)
    assert point.psnr_db == pytest.approx(sum(lossy) / 2)  # not inf
    assert point.lossless_image_count == 1 and not point.lossless and point.image_count == 3
    assert math.isfinite(point.pooled_psnr_db)


def test_psnr_is_infinite_only_when_every_image_is_exact() -> None:
    images = [_image(6, 7, 8), _image(5, 9, 9)]
    point = metrics.point_result(0, types_pb2.ParameterPoint(), [_result(i, x, x.clone(), 50)
                                                                 for i, x in enumerate(images)])
    assert point.lossless and point.lossless_image_count == 2
    assert math.isinf(point.psnr_db) and math.isinf(point.pooled_psnr_db) and point.pooled_mse == 0.0


def test_pooled_bpp_weighs_images_by_their_pixels() -> None:
    # A 7x5 image whose bitstream has a fixed 300-byte header dominates the mean bpp (68.6 alone),
    # not the bits of the dataset per pixel.
    small, large = _image(5, 7, 10), _image(200, 300, 11)
    items = [_result(0, small, _noisy(small, 3, 1), 300), _result(1, large, _noisy(large, 3, 2), 6000)]
    point = metrics.point_result(0, types_pb2.ParameterPoint(), items)
    assert point.bpp == pytest.approx((8 * 300 / 35 + 8 * 6000 / 60000) / 2)  # per-image mean: 34.7
    assert point.pooled_bpp == pytest.approx(8 * 6300 / (35 + 60000))  # 0.84
    squared = sum(item.metrics.mse * item.metrics.width * item.metrics.height for item in items)
    assert point.pooled_mse == pytest.approx(squared / (35 + 60000))
    assert point.pooled_psnr_db == pytest.approx(10 * math.log10(255**2 / point.pooled_mse))


def test_one_image_below_the_ms_ssim_minimum_keeps_the_points_ms_ssim() -> None:
    side = metrics.MS_SSIM_MIN_SIDE
    small, large_a, large_b = _image(side - 1, 200, 12), _image(side, side + 5, 13), _image(side + 2, side, 14)
    items = [_result(i, img, _noisy(img, 10, i), 100) for i, img in enumerate((small, large_a, large_b))]
    point = metrics.point_result(0, types_pb2.ParameterPoint(), items)
    assert not items[0].metrics.HasField("ms_ssim")
    assert point.HasField("ms_ssim") and point.ms_ssim_image_count == 2
    assert point.ms_ssim == pytest.approx((items[1].metrics.ms_ssim + items[2].metrics.ms_ssim) / 2)
    none = metrics.point_result(0, types_pb2.ParameterPoint(), items[:1])
    assert not none.HasField("ms_ssim") and none.ms_ssim_image_count == 0


def test_medians_of_the_times_stand_beside_the_means() -> None:
    image = _image(4, 4, 15)
    items = [_result(i, image, image, 4, encode_ms=ms, decode_ms=2 * ms) for i, ms in enumerate((5.0, 6.0, 805.0))]
    point = metrics.point_result(0, types_pb2.ParameterPoint(), items)
    assert (point.encode_ms, point.encode_ms_median) == (272.0, 6.0)
    assert (point.decode_ms, point.decode_ms_median) == (544.0, 12.0)


# ---- images at the pixel limit: exact figures in bounded memory ----

def test_the_squared_error_sum_is_exact_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "SSE_CHUNK_VALUES", 10_007)  # chunks that cut rows and channels
    original, recon = _image(170, 190, 21), _noisy(_image(170, 190, 21), 40, seed=22)
    assert original.numel() > 3 * metrics.SSE_CHUNK_VALUES
    exact = int(((original.long() - recon.long()) ** 2).sum())
    assert metrics.squared_error_sum(original, recon) == exact
    assert metrics.image_metrics(original, recon, b"x", 0.0, 0.0).mse == exact / original.numel()


def test_ms_ssim_one_channel_at_a_time_is_the_librarys_figure() -> None:
    original = _image(metrics.MS_SSIM_MIN_SIDE + 3, 240, 23)
    recon = _noisy(original, 25, seed=24)
    library = float(ms_ssim(original.float().unsqueeze(0), recon.float().unsqueeze(0), data_range=255))
    assert metrics.image_metrics(original, recon, b"x", 0.0, 0.0).ms_ssim == pytest.approx(library, abs=1e-5)
    # An exact reconstruction is 1 without computing it, as the library says too.
    assert metrics.image_metrics(original, original.clone(), b"x", 0.0, 0.0).ms_ssim == 1.0
    assert float(ms_ssim(original.float().unsqueeze(0), original.float().unsqueeze(0), data_range=255)) == 1.0


# ---- where and with how many threads the worker computes them (issue 15) ----

@pytest.mark.parametrize(("device", "gpu_seen", "expected"), [
    (types_pb2.DEVICE_CUDA, True, "cuda"),  # a CUDA experiment on a GPU worker: MS-SSIM on the GPU
    (types_pb2.DEVICE_CUDA, False, "cpu"),  # no usable CUDA runtime: still measured, on the CPU
    (types_pb2.DEVICE_CPU, True, "cpu"),  # a CPU experiment never takes the GPU
    (types_pb2.DEVICE_UNSPECIFIED, True, "cpu"),  # unspecified reads as CPU
])
def test_metrics_run_on_the_experiments_device_when_the_worker_has_it(
    monkeypatch: pytest.MonkeyPatch, device: int, gpu_seen: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_seen)
    assert metrics.device_for(device) == expected


def test_the_cpu_path_gives_the_librarys_figure() -> None:
    original, reconstruction = _image(200, 220, seed=1), _image(200, 220, seed=2)
    device = metrics.device_for(types_pb2.DEVICE_CPU)
    expected = float(ms_ssim(original[None].float(), reconstruction[None].float(), data_range=255))
    m = metrics.image_metrics(original, reconstruction, b"x", 0.0, 0.0, device)
    assert m.ms_ssim == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("slots", "cores", "threads"), [(1, 2, 1), (1, 16, 15), (4, 16, 12), (2, 2, 1), (8, 2, 1)])
def test_metrics_threads_are_the_cores_the_agents_leave_free(slots: int, cores: int, threads: int) -> None:
    assert metrics.metrics_threads(slots, cores) == threads
