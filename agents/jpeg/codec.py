"""Baseline agent: JPEG (ITU-T T.81) through Pillow's libjpeg, 4:2:0 chroma subsampling.

Parameter ``quality`` (1..95) is libjpeg's quality scale. The JPEG file carries its own size,
so the bitstream is the whole file: headers and Huffman tables count in the rate.
"""

import io

import numpy as np
import torch
from PIL import Image


class Codec:
    """The JPEG codec at one quality.

    Args:
        device: unused (Pillow runs on the CPU).
        quality: libjpeg quality, 1..95.

    Raises:
        ValueError: ``quality`` outside 1..95.
    """

    def __init__(self, device: str, quality: int = 75) -> None:
        if not 1 <= int(quality) <= 95:
            raise ValueError(f"quality must be in 1..95, got {quality}")
        self.quality = int(quality)

    def encode(self, image: torch.Tensor) -> bytes:
        """uint8 [3, H, W] -> JPEG file bytes."""
        array = image.cpu().permute(1, 2, 0).numpy()
        out = io.BytesIO()
        Image.fromarray(array, "RGB").save(out, format="JPEG", quality=self.quality, subsampling="4:2:0")
        return out.getvalue()

    def decode(self, bitstream: bytes) -> torch.Tensor:
        """JPEG file bytes -> uint8 [3, H, W]."""
        with Image.open(io.BytesIO(bitstream)) as img:
            array = np.asarray(img.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)
