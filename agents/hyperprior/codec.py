"""Mean-scale hyperprior learned image codec: codecbench agent entry module (codec contract).

The hyperprior codec of Ballé et al. (ICLR 2018) in its mean-scale form (Minnen, Ballé & Toderici,
NeurIPS 2018, without the autoregressive context), one network for all qualities through gain
units (Cui et al., CVPR 2021). See README.md and ``model.py``.

Bitstream layout (all header integers big-endian), 12 header bytes then the payload:

====== ======================================================================================
bytes  content
====== ======================================================================================
0-1    magic ``b"HP"``
2      format version (1)
3      quality (1..Q): selects the gain vectors
4-5    image height H (uint16)
6-7    image width W (uint16)
8-11   CRC-32 (zlib) of bytes 0-7 followed by the payload
12-    payload: the range coder's 32-bit words, little-endian
====== ======================================================================================

Payload order: the hyper-latent ẑ ``[N, ⌈H/64⌉, ⌈W/64⌉]`` channel by channel under the factorized
density's tables; then the latent symbols ``s = round(y_q − μ)`` ``[M, 4⌈H/64⌉, 4⌈W/64⌉]`` grouped
by scale index (ascending), each group in raster order of (channel, row, column). Escapes follow
their group (``entropy.py``). Every table is integer and the means and scale indexes come from
the integer hyper-synthesis, so the decoder reproduces the encoder's models exactly on any
machine; the reconstruction's pixels may differ by float rounding between devices.

Only torch, numpy, constriction and the standard library are imported, plus the sibling modules.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import constriction
import numpy as np
import torch

try:  # imported as part of a package (agents.hyperprior, tests)
    from .entropy import (
        IntegerTables,
        decode_channels,
        decode_group,
        decoder_for,
        encode_channels,
        encode_group,
        words_to_bytes,
    )
    from .factorized import AnalysisTransform, SynthesisTransform, pad_to_stride, unpad
    from .model import STRIDE, HyperAnalysis, IntegerHyperSynthesis
except ImportError:  # the sandbox imports this file as a top-level module next to its siblings
    from entropy import (  # type: ignore[import-not-found, no-redef]
        IntegerTables,
        decode_channels,
        decode_group,
        decoder_for,
        encode_channels,
        encode_group,
        words_to_bytes,
    )
    from factorized import (  # type: ignore[import-not-found, no-redef]
        AnalysisTransform,
        SynthesisTransform,
        pad_to_stride,
        unpad,
    )
    from model import STRIDE, HyperAnalysis, IntegerHyperSynthesis  # type: ignore[import-not-found, no-redef]

MAGIC = b"HP"
VERSION = 1
WEIGHTS = Path(__file__).resolve().parent / "weights" / "hyperprior.pt"

_HEADER = struct.Struct(">2sBBHH")  # magic, version, quality, height, width
_CRC = struct.Struct(">I")
HEADER_BYTES = _HEADER.size + _CRC.size

#: The hyper-latent is clamped to the range its tables and the integer h_s are built for.
Z_LIMIT = 255


class Codec:
    """Learned image codec, codecbench codec contract.

    ``quality`` 1..Q (Q = 9 in the shipped weights) picks a rate point; higher = more bits, higher
    PSNR. Transforms run on ``device`` ("cpu" or "cuda[:k]"); the hyper-synthesis and entropy
    coding run on CPU from integers.

    Raises:
        ValueError: unknown quality, or CUDA requested but not available.
        FileNotFoundError: the weights file is missing.
    """

    def __init__(self, device: str, quality: int = 4) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if not WEIGHTS.is_file():
            raise FileNotFoundError(f"weights not found at {WEIGHTS}")
        state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
        self.qualities = len(state["lambdas"])
        if not isinstance(quality, int) or not 1 <= quality <= self.qualities:
            raise ValueError(f"quality must be an integer 1..{self.qualities}, got {quality!r}")
        self.quality = quality
        n, m = state["n"], state["m"]
        self.g_a, self.g_s, self.h_a = AnalysisTransform(n, m), SynthesisTransform(n, m), HyperAnalysis(n, m)
        for name in ("g_a", "g_s", "h_a"):
            module = getattr(self, name)
            module.load_state_dict({k: v.float() for k, v in state[name].items()})
            module.to(self.device).eval()
        self.gain = torch.exp(state["gain"]).to(self.device)
        self.inv_gain = torch.exp(state["inv_gain"]).to(self.device)
        self.h_s = IntegerHyperSynthesis(state["h_s_int"])
        self.n, self.m = n, m
        self.z_tables = IntegerTables(state["z_tables"]["pmf"].numpy(), state["z_tables"]["offset"].tolist(),
                                      state["z_tables"]["length"].tolist())
        self.y_tables = IntegerTables(state["y_tables"]["pmf"].numpy(), state["y_tables"]["offset"].tolist(),
                                      state["y_tables"]["length"].tolist())

    def encode(self, image: torch.Tensor) -> bytes:
        """Compress ``image`` (uint8 ``[3, H, W]`` RGB, 1 <= H, W <= 65535, any device) to bytes.

        Raises:
            ValueError: wrong type, dtype, shape or size.
        """
        if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 torch.Tensor, got {type(image).__name__} {getattr(image, 'dtype', '')}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected shape [3, H, W], got {list(image.shape)}")
        height, width = image.shape[1:]
        if not (1 <= height <= 0xFFFF and 1 <= width <= 0xFFFF):
            raise ValueError(f"image size {height}x{width} outside 1..65535")
        q = self.quality - 1
        with torch.inference_mode():
            x = image.to(self.device, torch.float32).unsqueeze(0) / 255.0
            y = self.g_a(pad_to_stride(x, STRIDE)) * self.gain[q].view(1, -1, 1, 1)
            z = self.h_a(y)
            z_hat = torch.round(z).clamp_(-Z_LIMIT, Z_LIMIT)[0].to("cpu", torch.int32).numpy()
            y64 = y[0].to("cpu", torch.float64).numpy()
        means, indexes = self.h_s(z_hat)
        symbols = np.round(y64 - means).astype(np.int64)
        encoder = constriction.stream.queue.RangeEncoder()
        encode_channels(encoder, self.z_tables, z_hat)
        flat_symbols, flat_indexes = symbols.ravel(), indexes.ravel()
        for row in np.unique(flat_indexes):
            encode_group(encoder, self.y_tables, int(row), flat_symbols[flat_indexes == row])
        payload = words_to_bytes(encoder)
        header = _HEADER.pack(MAGIC, VERSION, self.quality, height, width)
        return header + _CRC.pack(zlib.crc32(header + payload)) + payload

    def decode(self, bitstream: bytes) -> torch.Tensor:
        """Decompress to a uint8 ``[3, H, W]`` tensor on this codec's device.

        Raises:
            ValueError: the bitstream is not one of ours, is truncated or corrupted (the CRC-32
                covers header and payload), naming the problem.
        """
        data = bytes(bitstream)
        if len(data) < HEADER_BYTES:
            raise ValueError(f"bitstream too short: {len(data)} bytes, the header alone is {HEADER_BYTES}")
        magic, version, quality, height, width = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"not a hyperprior bitstream: magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise ValueError(f"unsupported bitstream version {version}, this decoder reads {VERSION}")
        if not 1 <= quality <= self.qualities:
            raise ValueError(f"bitstream names quality {quality}, valid are 1..{self.qualities}")
        if height == 0 or width == 0:
            raise ValueError(f"bitstream names an empty image ({height}x{width})")
        payload = data[HEADER_BYTES:]
        (crc,) = _CRC.unpack_from(data, _HEADER.size)
        if len(payload) % 4 or zlib.crc32(data[: _HEADER.size] + payload) != crc:
            raise ValueError(f"bitstream corrupted or truncated: CRC-32 mismatch ({len(data)} bytes for a "
                             f"{height}x{width} image)")
        h, w = -(-height // STRIDE), -(-width // STRIDE)
        decoder = decoder_for(payload)
        z_hat = decode_channels(decoder, self.z_tables, (self.n, h, w))
        means, indexes = self.h_s(z_hat)
        flat_indexes = indexes.ravel()
        symbols = np.empty(flat_indexes.shape, dtype=np.float64)
        for row in np.unique(flat_indexes):
            where = flat_indexes == row
            symbols[where] = decode_group(decoder, self.y_tables, int(row), int(where.sum()))
        y_hat = symbols.reshape(means.shape) + means
        with torch.inference_mode():
            y = torch.from_numpy(y_hat).to(self.device, torch.float32).unsqueeze(0)
            x_hat = self.g_s(y * self.inv_gain[quality - 1].view(1, -1, 1, 1))
            return torch.round(unpad(x_hat, height, width)[0].clamp(0.0, 1.0) * 255.0).to(torch.uint8)
