"""worker_svc.image_cache: each dataset file is decoded once per worker, within a size limit."""

from __future__ import annotations

import pytest
from helpers.worker import png_bytes

from codecbench import datasets
from worker_svc.image_cache import DecodedImages, digest_of


def test_a_file_is_decoded_once_and_served_under_each_name() -> None:
    cache = DecodedImages()
    data = png_bytes(20, 30, seed=1)
    loads = []

    def load() -> bytes:
        loads.append(1)
        return data

    first = cache.get("a.png", digest_of(data), load)
    again = cache.get("b.png", digest_of(data), load)
    assert len(loads) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert again.pixels is first.pixels  # the same tensor, not a second decode
    assert (first.name, again.name) == ("a.png", "b.png")
    assert again.sha256 == first.sha256 == digest_of(data)


def test_the_least_recently_used_go_past_the_limit() -> None:
    files = [png_bytes(10, 10, seed=i) for i in range(3)]  # 300 bytes of pixels each
    cache = DecodedImages(limit_bytes=700)
    for i, data in enumerate(files):
        cache.get(f"{i}.png", digest_of(data), lambda data=data: data)
    assert cache.size_bytes == 600 and cache.misses == 3
    cache.get("0.png", digest_of(files[0]), lambda: files[0])  # evicted first: decoded again
    assert cache.misses == 4 and cache.size_bytes <= 700


def test_a_file_that_does_not_decode_is_not_cached() -> None:
    cache = DecodedImages()
    with pytest.raises(datasets.ImageDecodeError):
        cache.get("bad.png", digest_of(b"not an image"), lambda: b"not an image")
    assert cache.size_bytes == 0
