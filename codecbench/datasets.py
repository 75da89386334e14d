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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

# numpy, Pillow and torch are imported where pixels are decoded or made: the CLI and the client
# read only this module's names and suffixes, and the orchestrator never needs torch.
if TYPE_CHECKING:
    import numpy as np
    import torch

PHOTOS = "photos"
BUILTIN_DATASETS = (PHOTOS,)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Largest image accepted: 64 MiB of uint8 RGB fits a gRPC message with the limits we set.
MAX_PIXELS = 16 * 1024 * 1024


class ImageDecodeError(ValueError):
    """An image file that is not a readable PNG/JPEG, or is too large; the message names it."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of a dataset.

    Attributes:
        name: file name, e.g. ``"astronaut.png"``.
        pixels: uint8 tensor, shape [3, H, W], RGB, on the CPU.
        sha256: hex digest of the encoded file bytes (the content address).
        conversion: how the file was converted to RGB (e.g. ``"RGBA -> RGB (alpha dropped)"``),
            empty when it was RGB already.
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


_CONVERSIONS = {
    "L": "grayscale (L) -> RGB (channel replicated)",
    "LA": "grayscale+alpha (LA) -> RGB (alpha dropped, channel replicated)",
    "RGBA": "RGBA -> RGB (alpha dropped)",
    "P": "palette (P) -> RGB",
    "CMYK": "CMYK -> RGB",
    "I;16": "16-bit grayscale -> 8-bit RGB (values scaled by 1/256)",
    "I": "32-bit integer grayscale -> RGB (clipped to 0..255)",
}


def decode_image(name: str, data: bytes) -> DatasetImage:
    """Decodes PNG/JPEG bytes to RGB uint8 pixels, stating any conversion.

    Raises:
        ImageDecodeError: not an image Pillow can read, or larger than ``MAX_PIXELS``.
    """
    import numpy as np
    import torch

    rgb, mode = decode_rgb(name, data)
    conversion = "" if mode == "RGB" else _CONVERSIONS.get(mode, f"{mode} -> RGB")
    pixels = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return DatasetImage(name=name, pixels=pixels, sha256=hashlib.sha256(data).hexdigest(), conversion=conversion)


def decode_rgb(name: str, data: bytes) -> tuple[np.ndarray, str]:
    """Decodes PNG/JPEG bytes to a uint8 array [H, W, 3] and the file's original mode.

    Raises:
        ImageDecodeError: not an image Pillow can read, or larger than ``MAX_PIXELS``.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageDecodeError(f"{name}: {img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
            img.load()
            mode = img.mode
            if mode == "I;16":
                arr = (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
                rgb = np.repeat(arr[:, :, None], 3, axis=2)
            elif mode == "I":
                arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
                rgb = np.repeat(arr[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{name}: not a readable PNG/JPEG image ({exc})") from exc
    return rgb, mode


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
