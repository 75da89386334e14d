"""The old contract with a positional-only image (issue 13, finding 4): the first shape (takes an image)."""
import zlib

import numpy as np
import torch


def run_encoding_agent(device, image, /):
    return {"b": zlib.compress(image.cpu().numpy().tobytes()), "s": list(image.shape)}


def run_decoding_agent(device, encoding_data, /):
    raw = zlib.decompress(encoding_data["b"])
    return {"reconstruction": torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(encoding_data["s"]).copy())}
