"""Hostile: the decoder gets only the image size and a pixel hash, and searches every path it can
list for the original: image files, and image members of zip/wheel/egg archives.

The bitstream is 16 bytes: height, width (uint32 each) and the first 8 bytes of the sha256 of the
uint8 [3, H, W] pixels. The decoder walks ``roots`` (comma-separated, in order; "/" by default),
skipping /proc, /sys and /dev, and decodes every candidate of the right size until one has the
same pixel hash. Found: the original (lossless at 128 bits per image). Not found: a blind guess,
mid-grey. It prints what it searched, so a test can tell a search that found nothing from a
search that never ran.
"""

import hashlib
import io
import os
import struct
import zipfile

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".zip", ".whl", ".egg", ".jar")
SKIPPED = ("/proc", "/sys", "/dev")


def pixel_hash(pixels: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).digest()[:8]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Codec:
    def __init__(self, device: str, roots: str = "/") -> None:
        self.roots = [r for r in roots.split(",") if r]
        self.found: dict[tuple[int, int, bytes], np.ndarray] = {}
        self.stats = {"dirs": 0, "files": 0, "image_files": 0, "archives": 0, "members": 0, "decoded": 0}
        self.search = self._candidates()

    def encode(self, image: torch.Tensor) -> bytes:
        pixels = image.cpu().numpy()
        return struct.pack(">II", pixels.shape[1], pixels.shape[2]) + pixel_hash(pixels)

    def decode(self, bitstream: bytes) -> torch.Tensor:
        height, width = struct.unpack(">II", bitstream[:8])
        key = (height, width, bitstream[8:16])
        for _ in self._search_until(key):
            pass
        print("searched " + " ".join(f"{k}={v}" for k, v in self.stats.items()) + f" found={key in self.found}",
              flush=True)
        if key in self.found:
            return torch.from_numpy(self.found[key].copy())
        return torch.full((3, height, width), 128, dtype=torch.uint8)

    def _search_until(self, key):
        while key not in self.found:
            try:
                yield next(self.search)
            except StopIteration:
                return

    def _candidates(self):
        """Yields after every decoded candidate; ``self.found`` grows as it goes."""
        seen = set()
        for root in self.roots:
            for folder, dirs, files in os.walk(root, onerror=lambda _: None):
                if folder.startswith(SKIPPED) or folder in seen:
                    dirs[:] = []
                    continue
                seen.add(folder)
                self.stats["dirs"] += 1
                for name in files:
                    self.stats["files"] += 1
                    path = os.path.join(folder, name)
                    lower = name.lower()
                    if lower.endswith(IMAGE_SUFFIXES):
                        self.stats["image_files"] += 1
                        yield from self._try(lambda p=path: _read(p))
                    elif lower.endswith(ARCHIVE_SUFFIXES):
                        yield from self._archive(path)

    def _archive(self, path: str):
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, ValueError):
            return
        self.stats["archives"] += 1
        with archive:
            for member in archive.namelist():
                if member.lower().endswith(IMAGE_SUFFIXES):
                    self.stats["members"] += 1
                    yield from self._try(lambda m=member: archive.read(m))

    def _try(self, read):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(read())) as img:
                width, height = img.size
                pixels = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
        except Exception:  # noqa: BLE001 - unreadable, masked (empty) or not an image: skip it
            return
        self.stats["decoded"] += 1
        self.found[(height, width, pixel_hash(pixels))] = np.ascontiguousarray(pixels)
        yield
