"""JPEG (Pillow) whose bitstream carries ``pad_bytes`` extra zero bytes: a codec whose RD curve is
JPEG's moved right by a known rate, for ranking tests (more padding: worse BD-rate)."""

import io

import numpy as np
import torch
from PIL import Image


class Codec:
    def __init__(self, device: str, quality: int = 75, pad_bytes: int = 0) -> None:
        self.quality = int(quality)
        self.pad_bytes = int(pad_bytes)

    def encode(self, image: torch.Tensor) -> bytes:
        array = image.cpu().permute(1, 2, 0).numpy()
        out = io.BytesIO()
        Image.fromarray(array, "RGB").save(out, format="JPEG", quality=self.quality)
        return out.getvalue() + bytes(self.pad_bytes)

    def decode(self, bitstream: bytes) -> torch.Tensor:
        data = bitstream[: len(bitstream) - self.pad_bytes]
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)
