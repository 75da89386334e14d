"""codecbench.datasets.check_image: the upload check agrees with a full decode (issue 15, point 4).

Dataset uploads no longer decode every PNG's pixels: the check reads the header with Pillow and
inflates the image data without unfiltering it. Each case here is a file that ``decode_rgb``
either accepts or refuses; the check must say the same, naming the file.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from codecbench import datasets


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(rows: bytes, width: int, height: int, colour_type: int = 2, bits: int = 8, idat_parts: int = 1,
         interlace: int = 0) -> bytes:
    """A PNG of raw image data ``rows`` (filter bytes included), compressed in one zlib stream split
    over ``idat_parts`` IDAT chunks."""
    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, interlace)
    stream = zlib.compress(rows)
    cut = [len(stream) * i // idat_parts for i in range(idat_parts + 1)]
    idats = b"".join(_chunk(b"IDAT", stream[a:b]) for a, b in zip(cut, cut[1:], strict=False))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idats + _chunk(b"IEND", b"")


def _rows(width: int, height: int, filters: list[int] | None = None, channels: int = 3) -> bytes:
    rng = np.random.default_rng(7)
    filters = filters or [y % 5 for y in range(height)]  # every filter type
    return b"".join(bytes([filters[y]]) + rng.integers(0, 256, width * channels, dtype=np.uint8).tobytes()
                    for y in range(height))


def _saved(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()


def _decodes(data: bytes) -> bool:
    try:
        datasets.decode_rgb("x.png", data)
    except datasets.ImageDecodeError:
        return False
    return True


GOOD = {
    "rgb, every filter type, 3 IDAT chunks": _png(_rows(37, 23), 37, 23, idat_parts=3),
    "16-bit gray": _png(_rows(5, 4, channels=2), 5, 4, colour_type=0, bits=16),
    "1-bit gray (row bytes rounded up)": _png(_rows(1, 9, channels=2), 13, 9, colour_type=0, bits=1),
    "palette": _saved(Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L").convert("P")),
    "RGBA": _saved(Image.new("RGBA", (17, 3), (1, 2, 3, 4))),
    "interlaced (decoded by Pillow)": _saved(Image.new("RGB", (16, 16), (9, 9, 9)), optimize=False),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_images_a_decoder_reads_pass_the_check(name: str) -> None:
    assert _decodes(GOOD[name])
    datasets.check_image(f"{name}.png", GOOD[name])


def test_the_builtin_photos_pass_the_check() -> None:
    for name, data in datasets.photo_files():
        datasets.check_image(name, data)


def _bad_filter() -> bytes:
    return _png(_rows(8, 6, filters=[0, 1, 2, 7, 0, 0]), 8, 6)


def _flipped_image_byte() -> bytes:
    data = bytearray(_png(_rows(64, 64), 64, 64))
    data[len(data) // 2] ^= 0x10  # inside the IDAT chunk's compressed stream
    return bytes(data)


BAD = {
    "a row with filter type 7": (_bad_filter(), "invalid filter type"),
    "one row short": (_png(_rows(8, 5), 8, 6), "image data ends after"),
    "cut in its IDAT chunk": (_png(_rows(64, 64), 64, 64)[:400], "truncated"),
    "no IEND chunk": (_png(_rows(8, 6), 8, 6)[:-12], "no IEND"),
    "a flipped byte in the image data": (_flipped_image_byte(), "compressed image data"),
    "not an image": (b"not an image at all" * 10, "not a readable PNG/JPEG"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_damaged_png_is_refused_naming_the_file_and_the_damage(case: str) -> None:
    data, words = BAD[case]
    with pytest.raises(datasets.ImageDecodeError, match=rf"^bad\.png: .*{words}"):
        datasets.check_image("bad.png", data)


def test_the_check_refuses_what_the_decoder_refuses() -> None:
    # A full decode fails on these too. The check is stricter in one way, on purpose: Pillow decodes
    # an image whose data ends a row early (the missing rows come out black); the check refuses it.
    for case in ("a row with filter type 7", "cut in its IDAT chunk", "not an image"):
        assert not _decodes(BAD[case][0]), case
    assert _decodes(BAD["one row short"][0])


def test_the_header_refusals_of_a_decode_stay() -> None:
    frames = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(3)]
    animated = _saved(frames[0], save_all=True, append_images=frames[1:])
    with pytest.raises(datasets.ImageDecodeError, match=r"anim\.png: an animated PNG of 3 frames"):
        datasets.check_image("anim.png", animated)
    huge = _png(b"", 8192, 8192)  # 64 MiP: refused from the header, before any image data is read
    with pytest.raises(datasets.ImageDecodeError, match=rf"huge\.png: 8192x8192 exceeds {datasets.MAX_PIXELS}"):
        datasets.check_image("huge.png", huge)
