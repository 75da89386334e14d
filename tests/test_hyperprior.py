"""Tests of the mean-scale hyperprior agent (agents/hyperprior): coding, exactness, training, a real worker."""

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
from PIL import Image

from agents.hyperprior import model as hp_model
from agents.hyperprior import train as hp_train
from codecbench import errors, tensors, values
from codecbench.v1 import errors_pb2, worker_pb2

AGENT_DIR = Path(__file__).resolve().parents[1] / "agents" / "hyperprior"
PACKAGE = "hyperprior_agent_under_test"


hp = load_codec_module(AGENT_DIR, PACKAGE)


@pytest.fixture(scope="module")
def codec() -> object:
    return hp.Codec("cpu", quality=4)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 9), (7, 1), (65, 3), (64, 64), (67, 130)])
def test_round_trip_any_size_down_to_one_pixel(codec: object, height: int, width: int) -> None:
    image = structured_image(height, width)
    bitstream = codec.encode(image)
    decoded = codec.decode(bitstream)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, height, width)
    assert struct.unpack_from(">2sBBHH", bitstream) == (b"HP", 1, 4, height, width)


def test_reconstruction_is_close_and_quality_is_read_from_the_bitstream(codec: object) -> None:
    image = torch.from_numpy(np.ascontiguousarray(skimage.data.chelsea().transpose(2, 0, 1)))
    bitstream = codec.encode(image)
    assert psnr_db(image, codec.decode(bitstream)) > 26.0  # a broken decoder lands near 10 dB
    # a decoder set up for another quality follows the bitstream's quality
    assert torch.equal(hp.Codec("cpu", quality=1).decode(bitstream), codec.decode(bitstream))


def test_rate_and_psnr_rise_with_quality() -> None:
    image = torch.from_numpy(np.ascontiguousarray(skimage.data.chelsea().transpose(2, 0, 1)))
    bpp, psnr = [], []
    for quality in range(1, hp.Codec("cpu").qualities + 1):
        codec = hp.Codec("cpu", quality=quality)
        bitstream = codec.encode(image)
        bpp.append(8 * len(bitstream) / (image.shape[1] * image.shape[2]))
        psnr.append(psnr_db(image, codec.decode(bitstream)))
    assert all(a < b for a, b in zip(bpp, bpp[1:], strict=False)), bpp
    assert all(a < b for a, b in zip(psnr, psnr[1:], strict=False)), psnr


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:-4], "CRC-32 mismatch"),
        (lambda b: b[:20] + bytes([b[20] ^ 0x40]) + b[21:], "CRC-32 mismatch"),
        (lambda b: b[:7], "too short"),
        (lambda b: b"FP" + b[2:], "magic"),
        (lambda b: b[:2] + bytes([9]) + b[3:], "version"),
        (lambda b: b[:3] + bytes([0]) + b[4:], "quality"),
    ],
)
def test_bad_bitstream_raises_value_error(codec: object, mangle, message: str) -> None:
    bitstream = codec.encode(structured_image(37, 53))
    with pytest.raises(ValueError, match=message):
        codec.decode(mangle(bitstream))


def test_bad_input_and_quality_raise_value_error(codec: object) -> None:
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        codec.encode(torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="quality"):
        hp.Codec("cpu", quality=0)


def test_decode_is_bit_exact_across_processes_and_thread_counts(codec: object, tmp_path: Path) -> None:
    """The agent directory copied elsewhere (links resolved, as in a bundle), alone on sys.path, decodes
    this process's bitstream in two processes with different thread counts: identical pixels."""
    agent = tmp_path / "agent"
    shutil.copytree(AGENT_DIR, agent, ignore=shutil.ignore_patterns("__pycache__", "__init__.py", "train.py",
                                                                    "data.py", "export.py"))
    image = structured_image(150, 97, seed=3)
    (tmp_path / "bits").write_bytes(codec.encode(image))
    script = (
        "import sys; import numpy as np, torch; torch.set_num_threads(int(sys.argv[3])); "
        "sys.path.insert(0, sys.argv[1]); "
        "import codec; out = codec.Codec('cpu').decode(open(sys.argv[2], 'rb').read()); "
        "np.save(sys.argv[4], out.numpy())"
    )
    for threads in (1, 2):
        subprocess.run([sys.executable, "-I", "-c", script, str(agent), str(tmp_path / "bits"), str(threads),
                        str(tmp_path / f"out{threads}.npy")], check=True, timeout=120, cwd=tmp_path)
    one, two = np.load(tmp_path / "out1.npy"), np.load(tmp_path / "out2.npy")
    assert np.array_equal(one, two)
    assert np.array_equal(one, codec.decode((tmp_path / "bits").read_bytes()).numpy())


def test_integer_hyper_synthesis_is_exact_whatever_the_summation_order(codec: object) -> None:
    """Splitting the input channels into two convolutions (another summation order) changes nothing:
    every operand and partial sum is an integer, exact in float64."""
    h_s = codec.h_s
    z_hat = np.random.default_rng(0).integers(-20, 21, size=(codec.n, 3, 2)).astype(np.int32)
    means, indexes = h_s(z_hat)
    assert np.all(means * 2.0 ** (hp_model.WEIGHT_BITS + hp_model.ACTIVATION_BITS) % 1 == 0)  # dyadic
    half = codec.n // 2
    w0, b0 = h_s.layers[0]
    a = torch.from_numpy(z_hat.astype(np.float64)).unsqueeze(0) * float(1 << hp_model.ACTIVATION_BITS)
    whole = torch.nn.functional.conv_transpose2d(a, w0, b0, stride=2, padding=2, output_padding=1)
    split = (torch.nn.functional.conv_transpose2d(a[:, :half], w0[:half], b0, stride=2, padding=2, output_padding=1)
             + torch.nn.functional.conv_transpose2d(a[:, half:], w0[half:], None, stride=2, padding=2,
                                                    output_padding=1))
    assert torch.equal(whole, split)
    assert indexes.dtype == np.int64 and indexes.min() >= 0 and indexes.max() < hp_model.SCALE_LEVELS


def test_gaussian_tables_are_integer_and_sum_to_the_precision() -> None:
    tables = hp_model.gaussian_pmf_tables()
    pmf, length = tables["pmf"].numpy(), tables["length"].numpy()
    for row, n in zip(pmf, length, strict=True):
        assert row[:n].min() >= 1 and row[n:].sum() == 0
        assert int(row[:n].sum()) == 1 << 16
    # wider scales code wider ranges
    assert np.all(np.diff(length) >= 0)
    assert np.array_equal(tables["offset"].numpy(), -((length - 2) // 2))  # symmetric: -R..R, then the escape


def _training_folder(folder: Path) -> Path:
    folder.mkdir()
    for k in range(3):
        Image.fromarray(structured_image(96, 128, seed=k).permute(1, 2, 0).numpy()).save(folder / f"{k}.png")
    return folder


def test_training_resumed_in_sittings_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    data = _training_folder(tmp_path / "data")
    common = ["--data", str(data), "--steps", "4", "--batch", "2", "--crop", "64", "--n", "8", "--m", "8",
              "--threads", "1", "--log-every", "1"]
    whole = hp_train.train(hp_train.parse_args([*common, "--checkpoint", str(tmp_path / "whole.pt")]))
    first = hp_train.parse_args([*common, "--checkpoint", str(tmp_path / "cut.pt"), "--max-minutes", "1e-9"])
    hp_train.train(first)  # stops after its first step: the time limit has passed
    assert torch.load(tmp_path / "cut.pt", weights_only=False)["step"] == 1
    resumed = hp_train.train(hp_train.parse_args([*common, "--checkpoint", str(tmp_path / "cut.pt"), "--resume"]))
    assert torch.load(tmp_path / "cut.pt", weights_only=False)["step"] == 4
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ---- through a real worker (sandboxed encoder and decoder processes) ----


async def test_runs_through_the_worker_and_rate_and_quality_rise_together(worker_stub) -> None:
    _, terminal = await run(worker_stub, request("hyperprior", points=[{"quality": 2}, {"quality": 7}]))
    low, high = result_of(terminal).points
    assert low.bpp < high.bpp and low.psnr_db < high.psnr_db


async def test_corrupted_bitstream_is_an_agent_error_with_file_and_line(worker_stub) -> None:
    bundle, params = agent_bundle("hyperprior"), values.params_from_python({"quality": 3})
    image = tensors.from_torch(structured_image(37, 53))
    encoded = await worker_stub.Encode(worker_pb2.EncodeRequest(agent=bundle, params=params, image=image))
    corrupted = bytearray(encoded.bitstream)
    corrupted[-1] ^= 0xFF
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker_stub.Decode(worker_pb2.DecodeRequest(agent=bundle, params=params, bitstream=bytes(corrupted)))
    error = errors.error_from_rpc(info.value)
    assert error is not None and error.kind == errors_pb2.ERROR_KIND_AGENT_EXCEPTION
    assert error.exception_type == "ValueError" and error.location.startswith("codec.py:")
    await assert_good_agent_runs(worker_stub)

