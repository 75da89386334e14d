"""A seed agent that takes an image, whose decoder reports typed figures beside the reconstruction:
a bool, an int, a float, a str and a bytes entry (kept typed, the bytes named as not scalar)."""
import zlib

import torch


def run_encoding_agent(device="cpu", image=None):
    return {"shape": list(image.shape), "data": zlib.compress(image.cpu().numpy().tobytes(), 1)}


def run_decoding_agent(device="cpu", encoding_data=None):
    raw = bytearray(zlib.decompress(encoding_data["data"]))
    pixels = torch.frombuffer(raw, dtype=torch.uint8).reshape(encoding_data["shape"])
    return {"reconstruction": pixels, "lossless": True, "blocks": 12, "ratio": 2.5, "note": "fast path",
            "raw": b"\x00\x01"}
