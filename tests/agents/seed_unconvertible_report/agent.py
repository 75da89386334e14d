"""The old contract without an image, whose decoding dict has entries that cannot be converted: a key
that is not a str and an int beyond 64 bits (issue 13, finding 8). They are listed as not reported."""
import zlib


def run_encoding_agent(device="cpu"):
    return {"status": "ok", "compressed": zlib.compress(b"x" * 1000)}


def run_decoding_agent(device="cpu", encoding_data=None):
    return {"status": "ok", 1: 2, "big": 2**70, "ratio": 2.5}
