"""Datasets of RGB images: the built-in ``photos`` set and folders of PNG/JPEG files.

``photos`` is made of the real photographs that ship inside scikit-image and matplotlib, so it
loads without any network: astronaut, chelsea, coffee, rocket, hubble_deep_field,
immunohistochemistry, motorcycle_left (scikit-image ``skimage.data``) and grace_hopper
(matplotlib ``sample_data``). Sizes vary and none is a multiple of 64.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

# numpy, Pillow and torch are imported where pixels are decoded or made: the CLI and the client
# read only this module's names and suffixes, and the orchestrator never needs torch.
if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image as PILImage

PHOTOS = "photos"
BUILTIN_DATASETS = (PHOTOS,)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Largest image accepted, in pixels: 32 MiP, so that common camera photos (6000x4000 = 24 MP)
# fit. Its uint8 RGB form (96 MiB) is over the 64 MiB gRPC message limit: images cross the
# network as files in chunks, and as pixels only between a worker and its sandbox children,
# whose frame limit derives from this one (sandbox.process.SandboxLimits.max_frame_bytes).
MAX_PIXELS = 32 * 1024 * 1024
# Bytes of an image at the pixel limit as uint8 RGB [3, H, W]: the largest image or reconstruction
# that travels as pixels.
MAX_RGB_BYTES = 3 * MAX_PIXELS
# Largest image file accepted: an uncompressed 8-bit RGBA image at the pixel limit (4 bytes a
# pixel), plus 1 MiB for headers and metadata, so no 8-bit PNG within the pixel limit is refused
# for its size; 16-bit PNGs of camera photos (24 MP: ~100 MB) fit too.
MAX_FILE_BYTES = 4 * MAX_PIXELS + 1024 * 1024


class ImageDecodeError(ValueError):
    """An image file that is not a readable PNG/JPEG, or is too large; the message names it."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of a dataset.

    Attributes:
        name: file name, e.g. ``"astronaut.png"``.
        pixels: uint8 tensor, shape [3, H, W], RGB, on the CPU.
        sha256: hex digest of the encoded file bytes (the content address).
        conversion: how the file became upright 8-bit RGB, in words (:func:`decode_rgb`), e.g.
            ``"8-bit RGBA PNG -> 8-bit RGB: alpha dropped (not composited on any background)"``;
            empty when it was upright 8-bit RGB without a colour profile already.
    """

    name: str
    pixels: torch.Tensor
    sha256: str
    conversion: str = ""

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[2])


# PNG colour types (PNG specification, 11.2.2 IHDR): the file's own statement of what it holds,
# which Pillow's mode does not always keep (16-bit RGB opens as "RGB", 16-bit gray+alpha as "RGBA").
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
# Pillow modes of the other formats (JPEG mostly), in words.
_MODE_WORDS = {
    "1": "1-bit black-and-white", "L": "8-bit grayscale", "LA": "8-bit grayscale+alpha", "P": "palette",
    "PA": "palette+alpha", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "CMYK": "CMYK", "YCbCr": "YCbCr",
    "I;16": "16-bit grayscale", "I": "32-bit integer grayscale", "F": "32-bit float grayscale",
}
# EXIF Orientation tag values (EXIF 2.32, tag 0x0112) and what ImageOps.exif_transpose does for each.
_ORIENTATIONS = {
    2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
    5: "mirrored left-right and rotated 90 degrees counter-clockwise", 6: "rotated 90 degrees clockwise",
    7: "mirrored left-right and rotated 90 degrees clockwise", 8: "rotated 90 degrees counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class _Source:
    """What an image file holds, from the PNG header when there is one, else from Pillow's mode.

    Attributes:
        words: the format in words, e.g. ``"16-bit grayscale+alpha PNG"``.
        bits: bits per sample (16 for a 16-bit PNG; 8 otherwise, below 8 for low-depth PNGs).
        kind: ``grayscale``, ``RGB``, ``palette``, ``grayscale+alpha``, ``RGBA`` or a Pillow mode.
    """

    words: str
    bits: int
    kind: str


def _source(data: bytes, mode: str, image_format: str | None, transparency: bool) -> _Source:
    """Describes the file's pixel format (see :class:`_Source`)."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 26:
        bits, colour = data[24], data[25]
        kind = _PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")
        words = f"{bits}-bit {kind} PNG" + (" with transparency" if transparency else "")
        return _Source(words, bits, kind)
    kind = {"1": "grayscale", "L": "grayscale", "LA": "grayscale+alpha", "RGB": "RGB", "RGBA": "RGBA",
            "P": "palette", "PA": "palette"}.get(mode, mode)
    bits = 1 if mode == "1" else 16 if mode == "I;16" else 8
    words = f"{_MODE_WORDS.get(mode, f'mode {mode}')} {image_format or 'image'}"
    return _Source(words + (" with transparency" if transparency else ""), bits, kind)


def _conversion_steps(source: _Source, mode: str, transparency: bool) -> list[str]:
    """What the conversion to 8-bit RGB did, step by step, in the order :func:`_pixels` does it."""
    steps = []
    if source.bits == 16:
        steps.append("16 bits per sample reduced to 8 by keeping the high byte (v >> 8)")
    elif source.bits < 8 and source.kind == "grayscale":
        steps.append("1-bit levels mapped to 0 (black) and 255 (white)" if source.bits == 1
                     else f"{source.bits}-bit levels scaled to 0..255")
    if source.kind == "palette":
        steps.append("palette colours looked up")
    if source.kind.startswith("grayscale") or mode in ("I", "F"):
        steps.append("gray copied to R, G and B")
    if mode == "I" and source.bits != 16:
        steps.append("values clipped to 0..255")
    if mode == "F":
        steps.append("values rounded and clipped to 0..255")
    if source.kind.endswith("alpha") or source.kind == "RGBA" or mode == "PA":
        steps.append("alpha dropped (not composited on any background)")
    if transparency:
        steps.append("transparency dropped (transparent pixels keep their colour)")
    if mode == "CMYK":
        steps.append("R = (255 - C)(255 - K) / 255, G and B likewise from M and Y (no colour management)")
    elif mode not in ("RGB", "RGBA", "L", "LA", "1", "P", "PA", "I", "I;16", "F") and source.kind != "RGB":
        steps.append(f"Pillow's {mode} -> RGB conversion")
    return steps


def _pixels(img: PILImage, source: _Source) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an (already oriented) Pillow image, as :func:`_conversion_steps` says."""
    import numpy as np

    if img.mode in ("I;16", "I;16B", "I;16L") or (img.mode == "I" and source.bits == 16):
        gray = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
    elif img.mode in ("I", "F"):
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
    else:
        # Pillow keeps the high byte of 16-bit RGB, RGBA and gray+alpha PNG samples when it opens them,
        # drops alpha without compositing, and converts CMYK with the formula stated above.
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


# The formats a dataset image may have (Pillow's names), and how many frames.
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a JPEG with extra (preview) images; its first is the photo


def _refuse_unsupported(name: str, img: PILImage) -> None:
    """Refuses an image that is not one still PNG/JPEG picture: another format (GIF, WebP, TIFF
    read by Pillow), or an animated PNG of several frames, which would otherwise be evaluated as
    its first frame without a word.

    Raises:
        ImageDecodeError: naming the file, its format and frame count, and what to do.
    """
    frames = int(getattr(img, "n_frames", 1))
    if img.format not in ACCEPTED_FORMATS:
        raise ImageDecodeError(f"{name}: a {img.format or 'unknown'} image ({frames} frame(s)); datasets take "
                               "PNG and JPEG images only: convert it (the first frame of an animation, if that "
                               "is the image meant) to PNG")
    if frames > 1 and img.format == "PNG":
        raise ImageDecodeError(f"{name}: an animated PNG of {frames} frames; codecbench evaluates still images "
                               "and does not pick a frame for you: save the frame you mean as its own PNG")


def decode_image(name: str, data: bytes) -> DatasetImage:
    """Decodes PNG/JPEG bytes to RGB uint8 pixels, stating any conversion.

    Raises:
        ImageDecodeError: not an image Pillow can read, or larger than ``MAX_PIXELS``.
    """
    import numpy as np
    import torch

    rgb, conversion = decode_rgb(name, data)
    pixels = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return DatasetImage(name=name, pixels=pixels, sha256=hashlib.sha256(data).hexdigest(), conversion=conversion)


def decode_rgb(name: str, data: bytes) -> tuple[np.ndarray, str]:
    """Decodes PNG/JPEG bytes to a uint8 array [H, W, 3], RGB, upright, and says how.

    The EXIF orientation is applied (the pixels as a viewer shows them); every conversion to 8-bit
    RGB (bit depth, gray, palette, alpha, transparency, CMYK) and an embedded ICC profile that is
    not applied are stated.

    Returns:
        The pixels and the conversion in words, e.g. ``"16-bit RGB PNG -> 8-bit RGB: 16 bits per
        sample reduced to 8 by keeping the high byte (v >> 8)"``; empty for an upright 8-bit RGB
        image without a colour profile.

    Raises:
        ImageDecodeError: not an image Pillow can read, or larger than ``MAX_PIXELS``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageDecodeError(f"{name}: {img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
            _refuse_unsupported(name, img)
            img.load()
            transparency = "transparency" in img.info
            source = _source(data, img.mode, img.format, transparency)
            steps = _conversion_steps(source, img.mode, transparency)
            notes = [f"{source.words} -> 8-bit RGB: {', '.join(steps)}"] if steps else []
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation in _ORIENTATIONS:
                notes.append(f"EXIF orientation {orientation} applied ({_ORIENTATIONS[orientation]})")
                oriented = ImageOps.exif_transpose(img)
            else:
                if orientation != 1:  # EXIF 2.32 defines 1..8 only
                    notes.append(f"EXIF orientation {str(orientation)[:40]} is not a valid value (1-8): "
                                 "ignored, the pixels are used as stored")
                oriented = img
            if img.info.get("icc_profile"):
                notes.append("embedded ICC colour profile not applied (values used as stored)")
            rgb = _pixels(oriented, source)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{name}: not a readable PNG/JPEG image ({exc})") from exc
    return rgb, "; ".join(notes)


# PNG (specification, 11.2.2 IHDR): samples per pixel by colour type.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_FILTER_TYPES = 5  # filter type bytes 0-4 (specification, 9.2)
_INFLATE_PIECE = 4 * 1024 * 1024  # bytes of image data inflated at a time: memory stays flat


def check_image(name: str, data: bytes) -> None:
    """Proves that bytes are one still PNG/JPEG image that :func:`decode_rgb` decodes, at a fraction
    of a decode's cost where the format allows it (dataset uploads run this on every image).

    Pillow reads the header first (format, size, frame count: the refusals of :func:`decode_rgb`).
    A non-interlaced PNG is then checked as a decoder would meet it, without unfiltering or
    converting pixels: the chunks up to IEND, and the image data inflated with zlib piece by
    piece, which must hold every row (height × (1 + row bytes), specification 7.2) with a filter
    type 0-4 in front of each (specification 9.2) and end the zlib stream, whose Adler-32 checksum
    (RFC 1950) zlib verifies; chunk CRC-32s are not checked, as Pillow's decoder does not check
    them either. Any other image (JPEG, interlaced PNG) is decoded with Pillow (``Image.load``).

    Args:
        name: the file name, for the messages.
        data: the encoded file.

    Raises:
        ImageDecodeError: naming the file: not a readable still PNG/JPEG image, or larger than
            ``MAX_PIXELS``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageDecodeError(f"{name}: {img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
            _refuse_unsupported(name, img)
            if img.format == "PNG" and data[28:29] == b"\x00":  # IHDR interlace method 0: none
                problem = _png_stream_problem(data)
                if problem:
                    raise ImageDecodeError(f"{name}: not a readable PNG/JPEG image ({problem})")
                return
            img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{name}: not a readable PNG/JPEG image ({exc})") from exc


def _png_stream_problem(data: bytes) -> str:
    """What keeps a non-interlaced PNG (header already read by Pillow) from decoding, in words;
    empty when nothing does (see :func:`check_image`)."""
    width, height, bits, colour = struct.unpack(">IIBB", data[16:26])
    stride = 1 + (width * _PNG_CHANNELS.get(colour, 1) * bits + 7) // 8  # filter byte + one row
    expected = stride * height
    inflater = zlib.decompressobj()
    done = 0  # image data bytes inflated so far
    view = memoryview(data)  # slices without copies
    offset = len(_PNG_SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        if offset + 12 + length > len(data):
            return f"truncated in its {kind.decode('latin-1')!r} chunk"
        body = view[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IEND":
            break
        if kind != b"IDAT":
            continue
        try:
            problem = _inflate_rows(inflater, body, stride, expected, done)
        except zlib.error as exc:  # a corrupt stream, or one whose Adler-32 does not match
            return f"its compressed image data: {exc}"
        if isinstance(problem, str):
            return problem
        done = problem
    else:
        return "truncated: no IEND chunk"
    if done < expected:
        return f"image data ends after {done} of {expected} bytes"
    if not inflater.eof:  # the end of the zlib stream carries the Adler-32 of all image data
        return "the compressed image data is not complete (no end of its zlib stream)"
    return ""


def _inflate_rows(inflater: zlib._Decompress, body: memoryview, stride: int, expected: int, done: int) -> int | str:
    """Inflates one IDAT chunk's data after ``done`` bytes of image data, checking each row's filter
    type; returns the new count of image data bytes, or the problem in words.

    Raises:
        zlib.error: the compressed data is corrupt.
    """
    piece = inflater.decompress(body, _INFLATE_PIECE)
    while True:
        if done < expected and piece:
            first = -done % stride  # the first filter byte inside this piece
            if max(piece[first : expected - done : stride], default=0) >= _PNG_FILTER_TYPES:
                return "a row with an invalid filter type"
        done += len(piece)
        if not inflater.unconsumed_tail:
            return done
        piece = inflater.decompress(inflater.unconsumed_tail, _INFLATE_PIECE)


def load_folder(folder: Path) -> list[DatasetImage]:
    """Loads every ``*.png``/``*.jpg``/``*.jpeg`` file of a folder (not recursive), sorted by name.

    Raises:
        FileNotFoundError: the folder does not exist.
        ImageDecodeError: a file is not a readable image, or the folder holds none.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageDecodeError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} files")
    return [decode_image(p.name, p.read_bytes()) for p in files]


def _photo_files() -> list[tuple[str, bytes]]:
    """The encoded files of ``photos``: the bytes as shipped by the packages, no re-encoding."""
    skimage_data = _package_dir("skimage") / "data"
    # (name in the dataset, file name in skimage/data)
    shipped = [
        ("astronaut.png", "astronaut.png"), ("chelsea.png", "chelsea.png"), ("coffee.png", "coffee.png"),
        ("rocket.jpg", "rocket.jpg"), ("hubble_deep_field.jpg", "hubble_deep_field.jpg"),
        ("immunohistochemistry.png", "ihc.png"), ("motorcycle_left.png", "motorcycle_left.png"),
    ]
    files = [(name, (skimage_data / file).read_bytes()) for name, file in shipped]
    # where matplotlib.cbook.get_sample_data looks: matplotlib.get_data_path() / "sample_data"
    files.append(("grace_hopper.jpg", (_package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg")
                  .read_bytes()))
    return files


def _package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it: the orchestrator reads the
    photos at start-up and should not load matplotlib and scikit-image (0.3 s) to find two folders.

    Raises:
        ModuleNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{name} is not installed; the built-in photos dataset needs it", name=name)
    return Path(spec.origin).parent


@cache
def photo_files() -> tuple[tuple[str, bytes], ...]:
    """(name, file bytes) of each image of ``photos``, in dataset order."""
    return tuple(_photo_files())


@cache
def load_photos() -> tuple[DatasetImage, ...]:
    """The built-in ``photos`` dataset, decoded (8 RGB images, 300x451 to 872x1000)."""
    return tuple(decode_image(name, data) for name, data in photo_files())


def dataset_digest(images: list[tuple[str, str]]) -> str:
    """sha256 over the sorted (name, image sha256) pairs: the identity of a dataset's content."""
    digest = hashlib.sha256()
    for name, sha in sorted(images):
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()
