"""Decoded dataset images, kept between experiments: each file is decoded once per worker.

A search loop runs many candidate codecs on one dataset; decoding its PNG/JPEG files into
uint8 [3, H, W] tensors for every experiment was the same work each time. Entries are keyed by
the sha256 of the file bytes (the content address), so a renamed file is still a hit and a
changed one never is; the least recently used are dropped past a total size.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from codecbench import datasets

# 1 GiB of uint8 pixels: the built-in photos are 8 MiB; a 24 MP image is 72 MiB.
DEFAULT_LIMIT_BYTES = 1 << 30


class DecodedImages:
    """A bounded LRU of decoded images by the sha256 of their file bytes (thread-safe)."""

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[str, datasets.DatasetImage] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, name: str, digest: str, load: Callable[[], bytes]) -> datasets.DatasetImage:
        """The image named ``name`` whose file has sha256 ``digest``, decoded now or taken from the cache.

        Args:
            name: the file's name in this dataset (a cached entry is returned under this name).
            digest: hex sha256 of the file's bytes (:func:`digest_of` for bytes sent inline; a
                blob's verified address).
            load: returns the file's bytes; called only on a miss.

        Raises:
            datasets.ImageDecodeError: as :func:`codecbench.datasets.decode_image`; failures are not cached.
        """
        with self._lock:
            cached = self._entries.get(digest)
            if cached is not None:
                self._entries.move_to_end(digest)
                self.hits += 1
                return cached if cached.name == name else replace(cached, name=name)
            self.misses += 1
        image = datasets.decode_image(name, load())
        size = image.pixels.numel()
        with self._lock:
            if size <= self.limit_bytes and digest not in self._entries:
                self._entries[digest] = image
                self.size_bytes += size
                while self.size_bytes > self.limit_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self.size_bytes -= dropped.pixels.numel()
        return image


def digest_of(data: bytes) -> str:
    """Hex sha256 of ``data``: the cache key of an image file."""
    return hashlib.sha256(data).hexdigest()


__all__ = ["DEFAULT_LIMIT_BYTES", "DecodedImages", "digest_of"]
