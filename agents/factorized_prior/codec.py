"""Factorized-prior learned image codec: codecbench agent entry module (codec contract).

A learned transform codec in the style of J. Ballé, V. Laparra, E. P. Simoncelli, "End-to-end
optimized image compression", ICLR 2017, with the architecture of the factorized-prior baseline of
J. Ballé et al., "Variational image compression with a scale hyperprior", ICLR 2018: analysis
transform -> rounding -> per-channel entropy coding -> synthesis transform. See README.md.

Entropy coding uses ``constriction``'s range coder with categorical models built from integer
frequency tables that were computed once after training and ship with the weights, so the decoded
symbols never depend on floating-point results (CPU vs GPU, library versions).

Bitstream layout (all integers big-endian), 12 header bytes then the payload:

====== ======================================================================================
bytes  content
====== ======================================================================================
0-1    magic ``b"FP"``
2      format version (1)
3      quality (1..4): selects the weights and tables
4-5    image height H (uint16)
6-7    image width W (uint16)
8-11   CRC-32 (zlib) of bytes 0-7 followed by the payload
12-    payload: the range coder's 32-bit words, little-endian
====== ======================================================================================

The latent shape is not stored: it is ``(M, ceil(H/16), ceil(W/16))`` with M fixed by the quality's
weights. Payload order: for each latent channel c, its ``h*w`` symbols in raster order, then the
escaped values of that channel (see ``entropy.py``).

Only torch, numpy, constriction and the standard library are imported, plus the sibling module
``model``: in the codecbench sandbox only this directory is on ``sys.path``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import constriction
import torch

try:  # imported as part of a package (agents.factorized_prior, tests)
    from .entropy import IntegerTables, decode_channels, decoder_for, encode_channels, words_to_bytes
    from .model import STRIDE, AnalysisTransform, SynthesisTransform, pad_to_stride, unpad
except ImportError:  # the sandbox imports this file as a top-level module next to model.py
    from entropy import (  # type: ignore[import-not-found, no-redef]
        IntegerTables,
        decode_channels,
        decoder_for,
        encode_channels,
        words_to_bytes,
    )
    from model import (  # type: ignore[import-not-found, no-redef]
        STRIDE,
        AnalysisTransform,
        SynthesisTransform,
        pad_to_stride,
        unpad,
    )

MAGIC = b"FP"
VERSION = 1
QUALITIES = (1, 2, 3, 4)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_HEADER = struct.Struct(">2sBBHH")  # magic, version, quality, height, width
_CRC = struct.Struct(">I")
HEADER_BYTES = _HEADER.size + _CRC.size


class _QualityModel:
    """Weights and entropy models of one quality, on ``device`` (entropy models on CPU)."""

    def __init__(self, quality: int, device: torch.device) -> None:
        path = WEIGHTS_DIR / f"q{quality}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"weights for quality {quality} not found at {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.analysis = AnalysisTransform(state["n"], state["m"])
        self.synthesis = SynthesisTransform(state["n"], state["m"])
        # weights ship in float16 to halve their size; compute in float32
        self.analysis.load_state_dict({k: v.float() for k, v in state["analysis"].items()})
        self.synthesis.load_state_dict({k: v.float() for k, v in state["synthesis"].items()})
        self.analysis.to(device).eval()
        self.synthesis.to(device).eval()
        self.channels: int = state["m"]
        self.tables = IntegerTables(state["pmf"].numpy(), state["offset"].tolist(), state["length"].tolist())


class Codec:
    """Learned image codec, codecbench codec contract.

    ``quality`` 1..4 picks one of four trained rate points (higher = more bits, higher PSNR).
    Transforms run on ``device`` ("cpu" or "cuda[:k]"); entropy coding always runs on CPU from
    integer tables.
    """

    def __init__(self, device: str, quality: int = 2) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        self.quality = quality
        self._models = {quality: _QualityModel(quality, self.device)}

    def _model(self, quality: int) -> _QualityModel:
        # A bitstream names its own quality; load those weights if they are not this instance's.
        if quality not in self._models:
            self._models[quality] = _QualityModel(quality, self.device)
        return self._models[quality]

    def encode(self, image: torch.Tensor) -> bytes:
        """Compress ``image`` (uint8 ``[3, H, W]`` RGB, 1 <= H, W <= 65535, any device) to bytes."""
        if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 torch.Tensor, got {type(image).__name__} "
                             f"{getattr(image, 'dtype', '')}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected shape [3, H, W], got {list(image.shape)}")
        height, width = image.shape[1:]
        if not (1 <= height <= 0xFFFF and 1 <= width <= 0xFFFF):
            raise ValueError(f"image size {height}x{width} outside 1..65535")
        qm = self._models[self.quality]
        with torch.inference_mode():
            x = image.to(self.device, torch.float32).unsqueeze(0) / 255.0
            y = qm.analysis(pad_to_stride(x))
            symbols = torch.round(y)[0].to("cpu", torch.int64).numpy()
        encoder = constriction.stream.queue.RangeEncoder()
        encode_channels(encoder, qm.tables, symbols)
        payload = words_to_bytes(encoder)
        header = _HEADER.pack(MAGIC, VERSION, self.quality, height, width)
        return header + _CRC.pack(zlib.crc32(header + payload)) + payload

    def decode(self, bitstream: bytes) -> torch.Tensor:
        """Decompress to a uint8 ``[3, H, W]`` tensor on this codec's device.

        Raises ValueError naming the problem when the bitstream is not one of ours, is truncated or
        corrupted (the CRC-32 covers header and payload).
        """
        data = bytes(bitstream)
        if len(data) < HEADER_BYTES:
            raise ValueError(f"bitstream too short: {len(data)} bytes, the header alone is {HEADER_BYTES}")
        magic, version, quality, height, width = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"not a factorized_prior bitstream: magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise ValueError(f"unsupported bitstream version {version}, this decoder reads {VERSION}")
        if quality not in QUALITIES:
            raise ValueError(f"bitstream names quality {quality}, valid are {QUALITIES}")
        if height == 0 or width == 0:
            raise ValueError(f"bitstream names an empty image ({height}x{width})")
        payload = data[HEADER_BYTES:]
        (crc,) = _CRC.unpack_from(data, _HEADER.size)
        if len(payload) % 4 or zlib.crc32(data[: _HEADER.size] + payload) != crc:
            raise ValueError("bitstream corrupted or truncated: CRC-32 mismatch "
                             f"({len(data)} bytes for a {height}x{width} image)")
        qm = self._model(quality)
        latent_shape = (qm.channels, -(-height // STRIDE), -(-width // STRIDE))
        symbols = decode_channels(decoder_for(payload), qm.tables, latent_shape)
        with torch.inference_mode():
            y = torch.from_numpy(symbols).to(self.device, torch.float32).unsqueeze(0)
            x_hat = unpad(qm.synthesis(y), height, width)[0]
            return torch.round(x_hat.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
