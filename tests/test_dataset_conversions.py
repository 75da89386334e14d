"""codecbench.datasets: every input becomes upright 8-bit RGB, and the words say exactly how.

Issue 13, "Inputs": EXIF orientation was ignored without a note, 16-bit RGB conversion was stated
as an empty string, and 16-bit gray+alpha was described as "RGBA -> RGB". Each file here is made
fresh; the 16-bit PNGs are written by hand (Pillow cannot save them) per the PNG specification.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from codecbench import datasets


def _png(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG of ``samples`` (uint16 [H, W, C]); no filtering, one IDAT chunk."""
    height, width, _ = samples.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _saved(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _decoded(data: bytes) -> tuple[np.ndarray, str]:
    image = datasets.decode_image("x", data)
    return image.pixels.permute(1, 2, 0).numpy(), image.conversion


HIGH_BYTE = "16 bits per sample reduced to 8 by keeping the high byte (v >> 8)"


def test_upright_8_bit_rgb_needs_no_words() -> None:
    pixels, conversion = _decoded(_saved(Image.new("RGB", (5, 4), (1, 2, 3))))
    assert conversion == "" and pixels[0, 0].tolist() == [1, 2, 3]


def test_16_bit_rgb_is_stated() -> None:
    samples = np.zeros((3, 5, 3), np.uint16)
    samples[..., 0], samples[..., 1], samples[..., 2] = 0x1234, 0xABFF, 0x00FF
    pixels, conversion = _decoded(_png(samples, colour_type=2))
    assert pixels[0, 0].tolist() == [0x12, 0xAB, 0x00]
    assert conversion == f"16-bit RGB PNG -> 8-bit RGB: {HIGH_BYTE}"


def test_16_bit_gray_plus_alpha_is_not_called_rgba() -> None:
    samples = np.zeros((3, 5, 2), np.uint16)
    samples[..., 0], samples[..., 1] = 0x8081, 0x0102  # gray, a nearly transparent alpha
    pixels, conversion = _decoded(_png(samples, colour_type=4))
    assert pixels[2, 4].tolist() == [0x80] * 3  # the gray's high byte, alpha not composited
    assert conversion == (f"16-bit grayscale+alpha PNG -> 8-bit RGB: {HIGH_BYTE}, gray copied to R, G and B, "
                          "alpha dropped (not composited on any background)")
    assert "RGBA" not in conversion


def test_16_bit_gray_plus_alpha_keeps_the_high_byte_of_every_sample() -> None:
    # A finding said the low byte was kept: its file had been written little-endian by mistake
    # (np.stack of '>u2' arrays gives native order). Written big-endian, as PNG requires, with high
    # and low bytes unrelated per pixel, the pixels are the high bytes.
    rng = np.random.default_rng(7)
    samples = rng.integers(0, 1 << 16, size=(6, 7, 2), dtype=np.uint16)
    pixels, conversion = _decoded(_png(samples, colour_type=4))
    assert (pixels[..., 0] == samples[..., 0] >> 8).all() and (pixels[..., 0] != (samples[..., 0] & 255)).any()
    assert (pixels[..., 1] == pixels[..., 0]).all() and (pixels[..., 2] == pixels[..., 0]).all()
    assert HIGH_BYTE in conversion


def test_16_bit_gray_keeps_the_high_byte() -> None:
    pixels, conversion = _decoded(_png(np.full((2, 3, 1), 0xFE01, np.uint16), colour_type=0))
    assert pixels[1, 2].tolist() == [0xFE] * 3
    assert conversion == f"16-bit grayscale PNG -> 8-bit RGB: {HIGH_BYTE}, gray copied to R, G and B"


def test_8_bit_gray_plus_alpha() -> None:
    pixels, conversion = _decoded(_saved(Image.new("LA", (3, 2), (77, 0))))
    assert pixels[0, 0].tolist() == [77] * 3
    assert conversion == ("8-bit grayscale+alpha PNG -> 8-bit RGB: gray copied to R, G and B, alpha dropped "
                          "(not composited on any background)")


def test_1_bit() -> None:
    image = Image.new("1", (4, 2), 0)
    image.putpixel((1, 0), 1)
    pixels, conversion = _decoded(_saved(image))
    assert pixels[0, :2].tolist() == [[0, 0, 0], [255, 255, 255]]
    assert conversion == ("1-bit grayscale PNG -> 8-bit RGB: 1-bit levels mapped to 0 (black) and 255 (white), "
                          "gray copied to R, G and B")


def test_palette_with_transparency() -> None:
    image = Image.new("P", (3, 2), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pixels, conversion = _decoded(_saved(image, transparency=1))
    assert pixels[0, 0].tolist() == [10, 20, 30]  # the transparent index keeps its palette colour
    assert conversion == ("8-bit palette PNG with transparency -> 8-bit RGB: palette colours looked up, "
                          "transparency dropped (transparent pixels keep their colour)")


def test_cmyk_jpeg_states_the_formula() -> None:
    pixels, conversion = _decoded(_saved(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG", quality=100))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert conversion == ("CMYK JPEG -> 8-bit RGB: R = (255 - C)(255 - K) / 255, G and B likewise from M and Y "
                          "(no colour management)")


@pytest.mark.parametrize(("orientation", "words"), [(3, "rotated 180 degrees"), (6, "rotated 90 degrees clockwise"),
                                                      (8, "rotated 90 degrees counter-clockwise")])
def test_exif_orientation_is_applied_and_stated(orientation: int, words: str) -> None:
    stored = np.zeros((2, 3, 3), np.uint8)  # 3 wide, 2 high; one white pixel at the top left
    stored[0, 0] = 255
    image = Image.fromarray(stored, "RGB")
    exif = image.getexif()
    exif[0x0112] = orientation
    pixels, conversion = _decoded(_saved(image, exif=exif.tobytes()))
    upright = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    assert pixels.tolist() == upright.tolist()
    assert conversion == f"EXIF orientation {orientation} applied ({words})"


def test_an_embedded_colour_profile_is_said_not_to_be_applied() -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _, conversion = _decoded(_saved(Image.new("RGB", (2, 2)), icc_profile=profile))
    assert conversion == "embedded ICC colour profile not applied (values used as stored)"


def test_an_animated_png_is_refused_naming_the_file_and_its_frames() -> None:
    # Old: accepted silently as its first frame, with no conversion note.
    frames = [Image.new("RGB", (8, 6), (i * 60, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(datasets.ImageDecodeError, match=r"anim\.png: an animated PNG of 3 frames.*still images"):
        datasets.decode_image("anim.png", out.getvalue())


def test_a_gif_is_refused_naming_its_format_even_under_a_png_name() -> None:
    with pytest.raises(datasets.ImageDecodeError, match=r"x\.png: a GIF image.*PNG and JPEG images only"):
        datasets.decode_image("x.png", _saved(Image.new("P", (4, 4)), "GIF"))


def test_an_invalid_exif_orientation_is_said() -> None:
    # Old: orientation 9 was ignored without a word.
    image = Image.new("RGB", (5, 4), (1, 2, 3))
    exif = image.getexif()
    exif[0x0112] = 9
    pixels, conversion = _decoded(_saved(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert conversion == "EXIF orientation 9 is not a valid value (1-8): ignored, the pixels are used as stored"
    assert pixels.shape == (4, 5, 3)
