"""Hostile: the decoder tries to recover the original image without the bitstream carrying it.

The encoder leaves the image in files (its temp dir, /dev/shm, its cwd) and sends only the image size
and its number (encoders and decoders run one after the other, so each image gets its own file). The
decoder looks for it in those files, through /proc of every process it can see (the encoder's
root and cwd), in the worker's data directory (the dataset cache) and in the folders of the
built-in photos. Any success gives a lossless result; an honest sandbox gives a black image.
"""

import glob
import io
import os
import struct
import tempfile

import numpy as np
import torch

NAME = "codecbench-original-{}.npy"


def _save(image: torch.Tensor, path: str) -> None:
    try:
        np.save(path, image.cpu().numpy())
    except OSError:
        pass


def _candidates(data_dir: str, name: str) -> list[str]:
    paths = [os.path.join(d, name) for d in (tempfile.gettempdir(), "/tmp", "/dev/shm", os.getcwd())]
    for proc in glob.glob("/proc/[0-9]*"):
        paths += [os.path.join(proc, "root/tmp", name), os.path.join(proc, "cwd", name)]
    if data_dir:
        paths += glob.glob(os.path.join(data_dir, "**", "*"), recursive=True)
    import matplotlib
    import skimage

    paths += glob.glob(os.path.join(os.path.dirname(skimage.__file__), "data", "*"))
    paths += glob.glob(os.path.join(matplotlib.get_data_path(), "sample_data", "*"))
    return paths


def _load(path: str):
    try:
        if path.endswith(".npy"):
            return np.load(path)
        from PIL import Image

        with open(path, "rb") as f:
            data = f.read()
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
    except Exception:  # noqa: BLE001 - any unreadable candidate is skipped
        return None


class Codec:
    def __init__(self, device: str, data_dir: str = "") -> None:
        self.data_dir = data_dir
        self.count = 0

    def encode(self, image: torch.Tensor) -> bytes:
        name = NAME.format(self.count)
        _save(image, os.path.join(tempfile.gettempdir(), name))
        _save(image, os.path.join("/dev/shm", name))
        _save(image, os.path.join(os.getcwd(), name))
        self.count += 1
        return struct.pack(">III", image.shape[1], image.shape[2], self.count - 1)

    def decode(self, bitstream: bytes) -> torch.Tensor:
        height, width, number = struct.unpack(">III", bitstream)
        for path in _candidates(self.data_dir, NAME.format(number)):
            found = _load(path)
            if found is not None and tuple(found.shape) == (3, height, width):
                return torch.from_numpy(np.ascontiguousarray(found)).to(torch.uint8)
        return torch.zeros(3, height, width, dtype=torch.uint8)
