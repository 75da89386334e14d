"""Tests of the factorized-prior learned codec agent (agents/factorized_prior)."""

from __future__ import annotations

import importlib
import importlib.util
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest
import skimage.data
import torch
from helpers import agent_bundle
from helpers.worker import assert_good_agent_runs, request, result_of, run

from codecbench import errors, tensors, values
from codecbench.v1 import errors_pb2, worker_pb2

AGENT_DIR = Path(__file__).resolve().parents[1] / "agents" / "factorized_prior"
# A package name no other test uses, so this agent's `codec` and `model` modules cannot clash with
# another agent's modules of the same names in one test process.
PACKAGE = "factorized_prior_agent_under_test"


def _load_codec_module() -> ModuleType:
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, AGENT_DIR / "__init__.py", submodule_search_locations=[str(AGENT_DIR)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.codec")


fp = _load_codec_module()


def _structured_image(height: int, width: int) -> torch.Tensor:
    """Deterministic uint8 [3, H, W]: colour gradients, a disk and stripes, plus mild noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 0.5 + 0.4 * np.sin(xx / 7.0)
    g = yy / max(height - 1, 1)
    b = np.where((yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (min(height, width) / 3) ** 2, 0.9, 0.2)
    noise = np.random.default_rng(0).normal(0.0, 0.02, size=(3, height, width))
    image = np.clip(np.stack([r, g, b]) + noise, 0.0, 1.0)
    return torch.from_numpy(np.round(image * 255).astype(np.uint8))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def codecs() -> dict[int, object]:
    return {q: fp.Codec("cpu", quality=q) for q in fp.QUALITIES}


def test_round_trip_odd_size(codecs: dict[int, object]) -> None:
    image = _structured_image(37, 53)
    bitstream = codecs[2].encode(image)
    decoded = codecs[2].decode(bitstream)
    assert isinstance(bitstream, bytes)
    assert decoded.dtype == torch.uint8
    assert decoded.shape == (3, 37, 53)
    assert _psnr(image, decoded) > 20.0  # a broken decoder lands near 10 dB


def test_header_carries_everything_the_decoder_needs(codecs: dict[int, object]) -> None:
    bitstream = codecs[3].encode(_structured_image(37, 53))
    magic, version, quality, height, width = struct.unpack_from(">2sBBHH", bitstream)
    assert (magic, version, quality, height, width) == (b"FP", 1, 3, 37, 53)
    # a decoder set up for another quality follows the bitstream's quality
    assert torch.equal(codecs[1].decode(bitstream), codecs[3].decode(bitstream))


def test_coding_is_deterministic(codecs: dict[int, object]) -> None:
    image = _structured_image(37, 53)
    bitstream = codecs[2].encode(image)
    assert codecs[2].encode(image) == bitstream
    first = codecs[2].decode(bitstream)
    assert torch.equal(first, codecs[2].decode(bitstream))
    assert torch.equal(first, fp.Codec("cpu", quality=2).decode(bitstream))


def test_loads_on_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    codec = fp.Codec("cpu", quality=1)
    model = codec._models[1]
    assert all(p.device.type == "cpu" for p in model.synthesis.parameters())
    assert codec.decode(codec.encode(_structured_image(16, 16))).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="CUDA is not available"):
        fp.Codec("cuda", quality=1)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:-5], "CRC-32 mismatch"),
        (lambda b: b[:-4], "CRC-32 mismatch"),
        (lambda b: b[:20] + bytes([b[20] ^ 0x40]) + b[21:], "CRC-32 mismatch"),
        (lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:], "CRC-32 mismatch"),  # height changed
        (lambda b: b[:7], "too short"),
        (lambda b: b"", "too short"),
        (lambda b: b"XX" + b[2:], "magic"),
        (lambda b: b[:2] + bytes([9]) + b[3:], "version"),
        (lambda b: b[:3] + bytes([7]) + b[4:], "quality"),
    ],
)
def test_bad_bitstream_raises_value_error(codecs: dict[int, object], mangle, message: str) -> None:
    bitstream = codecs[2].encode(_structured_image(37, 53))
    with pytest.raises(ValueError, match=message):
        codecs[2].decode(mangle(bitstream))


def test_bad_input_raises_value_error(codecs: dict[int, object]) -> None:
    with pytest.raises(ValueError, match="uint8"):
        codecs[2].encode(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        codecs[2].encode(torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="quality"):
        fp.Codec("cpu", quality=5)


def test_rate_and_psnr_rise_with_quality(codecs: dict[int, object]) -> None:
    image = torch.from_numpy(np.ascontiguousarray(skimage.data.chelsea().transpose(2, 0, 1)))
    bpp, psnr = [], []
    for quality in fp.QUALITIES:
        bitstream = codecs[quality].encode(image)
        bpp.append(8 * len(bitstream) / (image.shape[1] * image.shape[2]))
        psnr.append(_psnr(image, codecs[quality].decode(bitstream)))
    assert all(a < b for a, b in zip(bpp, bpp[1:], strict=False)), bpp
    assert all(a < b for a, b in zip(psnr, psnr[1:], strict=False)), psnr
    assert psnr[0] > 26.0, psnr


def test_sandbox_layout_encodes_in_another_process(codecs: dict[int, object], tmp_path: Path) -> None:
    """The agent directory copied elsewhere, alone on sys.path, encodes; this process decodes."""
    agent = tmp_path / "agent"
    shutil.copytree(AGENT_DIR, agent, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    image = _structured_image(40, 29)
    np.save(tmp_path / "image.npy", image.numpy())
    script = (
        "import sys; import numpy as np, torch; sys.path.insert(0, sys.argv[1]); import codec; "
        "image = torch.from_numpy(np.load(sys.argv[2])); "
        "open(sys.argv[3], 'wb').write(codec.Codec('cpu', quality=2).encode(image))"
    )
    subprocess.run(
        [sys.executable, "-I", "-c", script, str(agent), str(tmp_path / "image.npy"), str(tmp_path / "bits")],
        check=True, timeout=120, cwd=tmp_path,
    )
    decoded = codecs[2].decode((tmp_path / "bits").read_bytes())
    assert decoded.shape == (3, 40, 29)
    assert _psnr(image, decoded) > 20.0  # a broken decoder lands near 10 dB


# ---- through a real worker (sandboxed encoder and decoder processes) ----


async def test_runs_through_the_worker_and_rate_and_quality_rise_together(worker_stub) -> None:
    _, terminal = await run(worker_stub, request("factorized_prior", points=[{"quality": 1}, {"quality": 4}]))
    low, high = result_of(terminal).points
    assert low.bpp < high.bpp and low.psnr_db < high.psnr_db
    assert all(item.metrics.bytes > 12 for point in (low, high) for item in point.images)  # header + payload


async def test_corrupted_bitstream_is_an_agent_error_and_the_worker_stays_healthy(worker_stub) -> None:
    bundle, params = agent_bundle("factorized_prior"), values.params_from_python({"quality": 2})
    image = tensors.from_torch(torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8))
    encoded = await worker_stub.Encode(worker_pb2.EncodeRequest(agent=bundle, params=params, image=image))
    corrupted = bytearray(encoded.bitstream)
    corrupted[-1] ^= 0xFF
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker_stub.Decode(worker_pb2.DecodeRequest(agent=bundle, params=params, bitstream=bytes(corrupted)))
    error = errors.error_from_rpc(info.value)
    assert error is not None and error.kind == errors_pb2.ERROR_KIND_AGENT_EXCEPTION
    assert error.exception_type == "ValueError" and error.location.startswith("codec.py:")
    await assert_good_agent_runs(worker_stub)
