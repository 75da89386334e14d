"""An agent written exactly as the old runner expected it (its failure report, the seed of codecbench).

``run_encoding_agent(device='cpu') -> dict`` takes no image: it builds its own test data.
``run_decoding_agent(device='cpu', encoding_data=None) -> dict`` checks ``encoding_data.get('status')``
and returns only its own numbers, e.g. ``{"status": "ok", "lossless": True, "compression_ratio": 2.7}``.
codecbench calls the pair once per parameter point and shows those numbers as agent-reported
(NOT measured by codecbench): no image is coded, so there is no bpp, PSNR or BD-rate. It runs
unmodified; see docs/agents.md, "The old runner's own shape".
"""

import zlib

import numpy as np


def _test_data() -> np.ndarray:
    """The agent's own test data: a 64x64 gray gradient with a little deterministic noise."""
    rng = np.random.default_rng(7)
    gradient = np.add.outer(np.arange(64), np.arange(64)) * 2
    return np.clip(gradient + rng.integers(0, 2, size=gradient.shape), 0, 255).astype(np.uint8)


def run_encoding_agent(device: str = 'cpu') -> dict:
    """Compresses the agent's own test data; takes no image."""
    data = _test_data()
    return {
        "status": "ok",
        "compressed": zlib.compress(data.tobytes(), 9),
        "shape": list(data.shape),
    }


def run_decoding_agent(device: str = 'cpu', encoding_data: dict = None) -> dict:
    """Decompresses and reports the agent's own figures: status, lossless, compression ratio."""
    if encoding_data.get('status') != 'ok':
        return {"status": "error", "message": f"encoder reported {encoding_data.get('status')!r}"}
    raw = zlib.decompress(encoding_data["compressed"])
    decoded = np.frombuffer(raw, dtype=np.uint8).reshape(encoding_data["shape"])
    return {
        "status": "ok",
        "lossless": bool(np.array_equal(decoded, _test_data())),
        "compression_ratio": round(len(raw) / len(encoding_data["compressed"]), 2),
    }
