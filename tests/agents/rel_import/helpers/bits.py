"""Raw uint8 pixels behind a height/width header; a module of a folder without __init__.py."""
import struct

import torch

from ._header import HEADER  # relative inside the sub-package too


def pack(image: torch.Tensor) -> bytes:
    return HEADER.pack(image.shape[1], image.shape[2]) + image.cpu().numpy().tobytes()


def unpack(bitstream: bytes) -> torch.Tensor:
    height, width = HEADER.unpack_from(bitstream)
    return torch.frombuffer(bytearray(bitstream[HEADER.size:]), dtype=torch.uint8).reshape(3, height, width)


assert struct
