"""Agents written the way researchers and generators write them run as written, on a real worker
(issue 13): positional-only signatures, relative imports, ``async def``, the old runner's own
contract, float output on the wrong scale, big float reconstructions."""

from __future__ import annotations

import importlib.util
import io
import math
import struct
import zlib

import grpc
import numpy as np
import pytest
import torch
from helpers import AGENTS, agent_bundle
from helpers.worker import TINY_SIZES, error_of, png_bytes, request, result_of, run
from PIL import Image

from codecbench import datasets, reconstructions, rpc, tensors, values
from codecbench.v1 import errors_pb2, experiment_pb2, types_pb2, worker_pb2

K = errors_pb2


def _lossless(terminal: experiment_pb2.ExperimentEvent) -> experiment_pb2.PointResult:
    point = result_of(terminal).points[0]
    assert len(point.images) == len(TINY_SIZES) and all(i.metrics.lossless for i in point.images)
    return point


# ---- binding and loading ----

@pytest.mark.timeout(120)
async def test_positional_only_image_and_device_bind(worker_stub) -> None:
    # Old: SIGNATURE_MISMATCH "'image' parameter is positional only, but was passed as a keyword".
    _, terminal = await run(worker_stub, request("sig_positional_only", points=[{"shift": 3}]))
    _lossless(terminal)


@pytest.mark.timeout(120)
async def test_relative_imports_inside_the_bundle_work(worker_stub) -> None:
    # Old: "attempted relative import with no known parent package".
    _, terminal = await run(worker_stub, request("rel_import"))
    _lossless(terminal)


@pytest.mark.timeout(120)
async def test_a_failed_relative_import_says_what_to_do(worker_stub) -> None:
    _, terminal = await run(worker_stub, request("rel_import_missing"))
    error = error_of(terminal)
    assert error.kind == K.ERROR_KIND_AGENT_LOAD_ERROR and error.location == "codec.py:2"
    assert "No module named 'helpers'" in error.message
    assert "imported as a package" in error.message and "helpers.py or a folder helpers/" in error.message


@pytest.mark.timeout(120)
async def test_async_def_methods_are_awaited(worker_stub) -> None:
    # Old: INVALID_OUTPUT "got coroutine" after a RuntimeWarning.
    events, terminal = await run(worker_stub, request("async_codec"))
    _lossless(terminal)
    assert not any("never awaited" in e.log.text for e in events if e.HasField("log"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("agent", [
    "shape_method_any_name",  # Codec.decode(self, b): was "multiple values for argument 'self'"
    "shape_callable_attrs",  # encode = Encoder(), decode = functools.partial(...): were given a self
    "shape_posonly_by_name",  # encode(device, image, /): the image went into device
    "shape_args_only",  # encode(*args): was "unexpected keyword argument 'device'"
    "shape_decorator_changes_signature",  # wraps() with another signature: was bound on __wrapped__
    "seed_posonly_image",  # run_encoding_agent(device, image, /): was taken for the no-image shape
])
async def test_every_shape_the_tester_wrote_runs_as_written(worker_stub, agent: str) -> None:
    _, terminal = await run(worker_stub, request(agent))
    _lossless(terminal)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("agent", "said"), [
    ("load_async_generator", "is an async generator function"),  # encode and decode both are
    ("load_async_init", "Codec.__init__ is async def"),
])
async def test_generators_and_async_constructors_are_refused_at_load(worker_stub, agent: str, said: str) -> None:
    # Old: the async generator failed at the first image; async __init__ was an AGENT_EXCEPTION without advice.
    _, terminal = await run(worker_stub, request(agent))
    error = error_of(terminal)
    assert error.kind == K.ERROR_KIND_SIGNATURE_MISMATCH and error.phase == types_pb2.PHASE_LOAD
    assert said in error.message and error.location.startswith("codec.py:")


# ---- the old runner's own contract ----

def _seed_original() -> object:
    spec = importlib.util.spec_from_file_location("seed_original_under_test", AGENTS / "seed_original/agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
async def test_the_old_contract_without_an_image_runs_once_per_point_and_reports_its_own_figures(worker_stub) -> None:
    # Old: INVALID_OUTPUT "run_decoding_agent's dict has no 'reconstruction' entry".
    events, terminal = await run(worker_stub, request("seed_original"))
    point = result_of(terminal).points[0]
    assert point.image_count == 0 and not point.images and not any(e.HasField("image_result") for e in events)
    report = point.agent_report
    assert {k: values.from_value(v) for k, v in report.values.items()} == {
        "status": "ok", "lossless": True, "compression_ratio": 1.97}
    # The rate: the encoding dict as it crossed the process boundary, serialized as the protocol does.
    wire = values.to_value(_seed_original().run_encoding_agent(device="cpu"), "encoding_data")  # type: ignore[attr-defined]
    assert report.encoding_data_bytes == len(wire.SerializeToString(deterministic=True))
    # Nothing trusted is claimed: no bpp, no PSNR, not lossless.
    assert point.bpp == 0 and point.psnr_db == 0 and not point.lossless and not point.HasField("ms_ssim")
    encodes = [e for e in events if e.HasField("progress") and e.progress.phase == types_pb2.PHASE_ENCODE]
    assert len(encodes) == 1 and encodes[0].progress.image_count == 0  # called once, not per image


@pytest.mark.timeout(120)
async def test_unconvertible_decoding_entries_are_listed_as_not_reported(worker_stub) -> None:
    # Old: {'status': 'ok', 1: 2} or {'big': 2**70} failed the whole experiment with INVALID_OUTPUT.
    _, terminal = await run(worker_stub, request("seed_unconvertible_report"))
    report = result_of(terminal).points[0].agent_report
    assert {k: values.from_value(v) for k, v in report.values.items()} == {"status": "ok", "ratio": 2.5}
    assert sorted(report.ignored_keys) == ["1", "big"]


@pytest.mark.timeout(120)
async def test_the_unary_rpcs_serve_the_old_contract_without_an_image(worker_stub) -> None:
    # Old: Decode answered INVALID_OUTPUT (DecodeResponse had no place for the agent's own figures),
    # and Encode demanded an image that run_encoding_agent cannot take.
    bundle, cpu = agent_bundle("seed_original"), types_pb2.DEVICE_CPU
    image = tensors.from_numpy(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker_stub.Encode(worker_pb2.EncodeRequest(agent=bundle, image=image, device=cpu))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("image: ") and "takes no image" in info.value.details()
    encoded = await worker_stub.Encode(worker_pb2.EncodeRequest(agent=bundle, device=cpu))
    decoded = await worker_stub.Decode(worker_pb2.DecodeRequest(agent=bundle, bitstream=encoded.bitstream, device=cpu))
    assert not decoded.HasField("reconstruction")
    report = decoded.agent_report
    assert {k: values.from_value(v) for k, v in report.values.items()} == {
        "status": "ok", "lossless": True, "compression_ratio": 1.97}
    assert report.encoding_data_bytes == len(encoded.bitstream) > 0


@pytest.mark.timeout(120)
async def test_an_image_seed_agents_own_figures_stay_typed(worker_stub) -> None:
    # Old: only numbers were kept (as doubles); a bool or a str entry vanished.
    _, terminal = await run(worker_stub, request("seed_typed_report"))
    point = _lossless(terminal)
    assert not point.HasField("agent_report")  # measured: not an agent-reported point
    expected = {"lossless": True, "blocks": 12, "ratio": 2.5, "note": "fast path"}
    kinds = {"lossless": "bool_value", "blocks": "int_value", "ratio": "float_value", "note": "string_value"}
    for item in point.images:
        report = item.metrics.agent_report
        assert {k: values.from_value(v) for k, v in report.values.items()} == expected
        assert {k: v.WhichOneof("kind") for k, v in report.values.items()} == kinds
        assert list(report.ignored_keys) == ["raw"] and report.encoding_data_bytes == 0
    # The unary Decode reports them the same way, beside the reconstruction.
    bundle, cpu = agent_bundle("seed_typed_report"), types_pb2.DEVICE_CPU
    pixels = datasets.decode_image("tiny0.png", png_bytes(*TINY_SIZES[0], seed=0)).pixels
    encoded = await worker_stub.Encode(worker_pb2.EncodeRequest(agent=bundle, image=tensors.from_torch(pixels),
                                                                device=cpu))
    decoded = await worker_stub.Decode(worker_pb2.DecodeRequest(agent=bundle, bitstream=encoded.bitstream, device=cpu))
    assert torch.equal(tensors.to_torch(decoded.reconstruction), pixels)
    assert {k: values.from_value(v) for k, v in decoded.agent_report.values.items()} == expected


@pytest.mark.timeout(120)
async def test_a_decoding_status_other_than_ok_is_a_failure_quoting_it(worker_stub) -> None:
    _, terminal = await run(worker_stub, request("seed_status_error"))
    error = error_of(terminal)
    assert error.kind == K.ERROR_KIND_AGENT_EXCEPTION and error.phase == types_pb2.PHASE_DECODE
    assert "status 'failed'" in error.message and "checksum mismatch in block 3" in error.message
    assert (error.expected, error.actual) == ("status 'ok'", "status 'failed'")


# ---- output checks that teach ----

@pytest.mark.timeout(120)
async def test_float_output_on_the_0_255_scale_says_divide_by_255(worker_stub) -> None:
    # Old: clamped to [0, 1] silently, ~4 dB.
    _, terminal = await run(worker_stub, request("out_float_scale", points=[{"scale": 255}]))
    error = error_of(terminal)
    assert error.kind == K.ERROR_KIND_INVALID_OUTPUT
    original = datasets.decode_image("tiny0.png", png_bytes(*TINY_SIZES[0], seed=0)).pixels
    low, high = float(original.min()), float(original.max())
    assert f"from {low:g} to {high:g}" in error.message and "divide by 255" in error.message


@pytest.mark.timeout(120)
async def test_slightly_out_of_range_floats_are_clamped_and_counted(worker_stub) -> None:
    overshoot = 0.03
    _, terminal = await run(worker_stub, request("out_float_scale", points=[{"overshoot": overshoot},
                                                                            {"overshoot": 0.2}]))
    error = error_of(terminal)  # the second point: beyond the tolerance, after the first one succeeded
    assert error.point_index == 1 and "clamp them to [0, 1]" in error.message
    first = datasets.decode_image("tiny0.png", png_bytes(*TINY_SIZES[0], seed=0)).pixels.to(torch.float32) / 255
    expected = int((first[:, 0, :] + overshoot > 1).sum() + (first[:, 1, :] - overshoot < 0).sum())
    assert expected > 0
    _, terminal = await run(worker_stub, request("out_float_scale", points=[{"overshoot": overshoot}]))
    image = result_of(terminal).points[0].images[0]
    assert image.metrics.clamped_values == expected


def _bitstream(height: int, width: int) -> bytes:
    """out_float_scale's bitstream of a smooth image (compresses well), and the pixels."""
    pixels = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
    return struct.pack(">II", height, width) + zlib.compress(np.repeat(pixels[None], 3, 0).tobytes(), 1)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("dtype", "height", "width"), [("float32", 4096, 4096), ("float64", 2000, 3000)],
                         ids=["float32-16MiP", "float64-6MP"])
async def test_big_float_reconstructions_arrive_converted(worker_stub, dtype: str, height: int, width: int) -> None:
    # Old: "frame of 72000024 bytes exceeds the limit" for float32 at 6 MP, float64 above ~2.8 MP.
    # The unary Decode returns them (uint8 under the 64 MiB message limit); larger ones: below.
    assert height * width <= datasets.MAX_PIXELS
    decoded = await worker_stub.Decode(worker_pb2.DecodeRequest(
        agent=agent_bundle("out_float_scale"), params=values.params_from_python({"dtype": dtype}),
        bitstream=_bitstream(height, width), device=types_pb2.DEVICE_CPU))
    recon = tensors.to_numpy(decoded.reconstruction)
    assert recon.dtype == np.uint8 and recon.shape == (3, height, width)
    expected = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
    assert np.array_equal(recon[2], expected)  # float pixels/255 come back exactly


CAMERA = (4000, 6000)  # height, width: a 24 MP camera photo


def _flat_png(height: int, width: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.timeout(300)
async def test_a_float32_24mp_reconstruction_runs_through_run_experiment(worker_stub) -> None:
    # Old: the image limit (16 MiP) refused a 6000x4000 photo, and its float32 reconstruction
    # (288 MB) exceeded the frame limit.
    height, width = CAMERA
    assert height * width <= datasets.MAX_PIXELS
    png = _flat_png(height, width, (200, 120, 40))
    assert len(png) < 1024 * 1024  # inline in the request; a real photo would go by digest
    dataset = types_pb2.DatasetRef(name="camera", images=[types_pb2.BlobRef(name="camera.png", content=png)])
    _, terminal = await run(worker_stub, request("flat_float32", dataset))
    point = result_of(terminal).points[0]
    (image,) = point.images
    m = image.metrics
    assert (m.width, m.height, m.bytes) == (width, height, 11)
    # The worker measured the reconstruction against the 24 MP original, pixel for pixel.
    assert m.lossless and m.mse == 0 and math.isinf(m.psnr_db) and m.ms_ssim == 1.0 and m.clamped_values == 0
    assert m.bpp == pytest.approx(8 * 11 / (height * width))


@pytest.mark.timeout(300)
async def test_a_reconstruction_over_the_message_limit_is_refused_by_decode_naming_it(worker_stub) -> None:
    height, width = CAMERA
    bitstream = struct.pack(">IIBBB", height, width, 200, 120, 40)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker_stub.Decode(worker_pb2.DecodeRequest(
            agent=agent_bundle("flat_float32"), bitstream=bitstream, device=types_pb2.DEVICE_CPU))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = info.value.details()
    assert f"[3, {height}, {width}]" in details and str(rpc.MAX_MESSAGE_BYTES) in details, details
    assert "RunExperiment" in details


@pytest.mark.timeout(300)
async def test_a_reconstruction_over_the_pixel_limit_is_invalid_output_naming_it(worker_stub) -> None:
    side = 6000  # 36 MP, over the 32 MiP limit: refused in the agent's process, before any conversion
    assert side * side > datasets.MAX_PIXELS
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker_stub.Decode(worker_pb2.DecodeRequest(
            agent=agent_bundle("flat_float32"), bitstream=struct.pack(">IIBBB", side, side, 1, 2, 3),
            device=types_pb2.DEVICE_CPU))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{3 * side * side} values" in info.value.details() and str(datasets.MAX_PIXELS) in info.value.details()


def test_the_sandbox_conversion_is_the_trusted_one_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconstructions, "CHUNK_VALUES", 100_003)  # chunks that cut rows and channels
    rng = np.random.default_rng(3)
    values_ = torch.from_numpy(rng.uniform(-0.04, 1.04, size=(3, 700, 900)).astype(np.float32))
    converted = reconstructions.to_uint8(values_)
    trusted = torch.round(values_.to(torch.float64).clamp(0, 1) * 255).to(torch.uint8)
    assert values_.numel() > reconstructions.CHUNK_VALUES  # several chunks
    assert torch.equal(converted.pixels, trusted)
    assert converted.clamped_values == int(((values_ < 0) | (values_ > 1)).sum())
