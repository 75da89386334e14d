"""An agent in the old runner's seed contract (compatibility).

``run_encoding_agent(device, image)`` returns a dict that carries the bitstream as ``bytes``
together with the shape and dtype; ``run_decoding_agent(device, encoding_data)`` returns the
reconstruction and a few numbers about itself, which codecbench reports as agent-reported
metrics (not measured by codecbench). The codec is lossless: zlib over the raw pixels, with a
sha256 in the dict so the decoder can prove the bytes arrived unchanged.
"""

import hashlib
import zlib
from typing import Any

import numpy as np
import torch


def run_encoding_agent(device: str = "cpu", image: torch.Tensor | None = None) -> dict[str, Any]:
    """Compresses the ``uint8 [3, H, W]`` image losslessly; returns the bitstream with what decoding needs."""
    assert image is not None, "the seed contract passes the image"  # the default only mirrors the old signature
    array = image.cpu().numpy()
    bitstream = zlib.compress(array.tobytes(), 6)
    return {
        "bitstream": bitstream,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "sha256": hashlib.sha256(bitstream).hexdigest(),
        "channel_means": array.reshape(3, -1).mean(axis=1),  # a numpy array travels typed, too
    }


def run_decoding_agent(device: str = "cpu", encoding_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rebuilds the image from :func:`run_encoding_agent`'s dict, with agent-reported numbers beside it.

    Raises:
        ValueError: the bitstream's sha256 does not match the one the encoder sent.
    """
    assert encoding_data is not None, "the seed contract passes the encoder's dict"
    bitstream = encoding_data["bitstream"]
    intact = hashlib.sha256(bitstream).hexdigest() == encoding_data["sha256"]
    if not intact:
        raise ValueError("bitstream digest mismatch: the bytes changed in transit")
    array = np.frombuffer(zlib.decompress(bitstream), dtype=encoding_data["dtype"])
    reconstruction = torch.from_numpy(array.reshape(encoding_data["shape"]).copy())
    means_match = np.allclose(reconstruction.numpy().reshape(3, -1).mean(axis=1), encoding_data["channel_means"])
    return {
        "reconstruction": reconstruction,
        "bitstream_intact": 1.0 if intact else 0.0,
        "channel_means_match": 1.0 if means_match else 0.0,
        "compressed_bytes": len(bitstream),
    }
