"""Tests of the factorized-prior learned codec agent (agents/factorized_prior)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import skimage.data
import torch
from helpers import agent_bundle
from helpers.learned import load_codec_module, psnr_db, structured_image
from helpers.worker import assert_good_agent_runs, request, result_of, run

from codecbench import errors, tensors, values
from codecbench.v1 import errors_pb2, worker_pb2

AGENT_DIR = Path(__file__).resolve().parents[1] / "agents" / "factorized_prior"
PACKAGE = "factorized_prior_agent_under_test"


fp = load_codec_module(AGENT_DIR, PACKAGE)


@pytest.fixture(scope="module")
def codecs() -> dict[int, object]:
    return {q: fp.Codec("cpu", quality=q) for q in fp.QUALITIES}


def test_round_trip_odd_size(codecs: dict[int, object]) -> None:
    image = structured_image(37, 53)
    bitstream = codecs[2].encode(image)
    decoded = codecs[2].decode(bitstream)
    assert isinstance(bitstream, bytes)
    assert decoded.dtype == torch.uint8
    assert decoded.shape == (3, 37, 53)
    assert psnr_db(image, decoded) > 20.0  # a broken decoder lands near 10 dB


def test_header_carries_everything_the_decoder_needs(codecs: dict[int, object]) -> None:
    bitstream = codecs[3].encode(structured_image(37, 53))
    magic, version, quality, height, width = struct.unpack_from(">2sBBHH", bitstream)
    assert (magic, version, quality, height, width) == (b"FP", 1, 3, 37, 53)
    # a decoder set up for another quality follows the bitstream's quality
    assert torch.equal(codecs[1].decode(bitstream), codecs[3].decode(bitstream))


def test_coding_is_deterministic(codecs: dict[int, object]) -> None:
    image = structured_image(37, 53)
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
    assert codec.decode(codec.encode(structured_image(16, 16))).shape == (3, 16, 16)
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
    bitstream = codecs[2].encode(structured_image(37, 53))
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
        psnr.append(psnr_db(image, codecs[quality].decode(bitstream)))
    assert all(a < b for a, b in zip(bpp, bpp[1:], strict=False)), bpp
    assert all(a < b for a, b in zip(psnr, psnr[1:], strict=False)), psnr
    assert psnr[0] > 26.0, psnr


def test_sandbox_layout_encodes_in_another_process(codecs: dict[int, object], tmp_path: Path) -> None:
    """The agent directory copied elsewhere, alone on sys.path, encodes; this process decodes."""
    agent = tmp_path / "agent"
    shutil.copytree(AGENT_DIR, agent, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    image = structured_image(40, 29)
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
    assert psnr_db(image, decoded) > 20.0  # a broken decoder lands near 10 dB


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
