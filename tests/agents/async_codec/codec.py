"""``async def`` encode and decode (issue 13): awaited by the sandbox, not reported as "got coroutine"."""
import asyncio
import struct

import torch

_HEADER = struct.Struct(">II")


class Codec:
    def __init__(self, device, **params):
        self.device = device

    async def encode(self, image):
        await asyncio.sleep(0)
        return _HEADER.pack(image.shape[1], image.shape[2]) + image.cpu().numpy().tobytes()

    async def decode(self, bitstream):
        await asyncio.sleep(0)
        height, width = _HEADER.unpack_from(bitstream)
        return torch.frombuffer(bytearray(bitstream[_HEADER.size:]), dtype=torch.uint8).reshape(3, height, width)
