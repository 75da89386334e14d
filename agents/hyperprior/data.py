"""Training images of the hyperprior: real photographs from Debian's wallpaper packages.

None of them is, or resembles, an image of codecbench's evaluation set ``photos`` (astronaut,
chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, motorcycle_left, grace_hopper).
The files are used as shipped (no re-encoding); :func:`load_images` decodes them.

Collect them once, without network access at training time::

    apt-get install plasma-workspace-wallpapers mate-backgrounds   # or: apt-get download + dpkg -x DIR
    python -m agents.hyperprior.data OUT_DIR [--root /]             # copies the files listed below

Plus the factorized prior's colour and grayscale sources from scikit-image and matplotlib
(``agents.factorized_prior.train``), copied from the installed packages.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image


class Source(NamedTuple):
    """One training photograph: Debian package, path inside it, author and licence (as shipped)."""

    package: str
    path: str
    author: str
    licence: str


_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"

#: Photographs only (the packages' renders and illustrations are left out). Licences from each
#: wallpaper's metadata.json (plasma) and debian/copyright (mate-backgrounds).
SOURCES = (
    *(Source("plasma-workspace-wallpapers", _PLASMA.format(name), author, "LGPL-3")
      for name, author in (
          ("BytheWater", "Maciej Wiklo"), ("ColdRipple", "Risto Saukonpää"), ("ColorfulCups", "Dmitri Popov"),
          ("DarkestHour", "Risto Saukonpää"), ("EveningGlow", "Ian Hex"), ("FallenLeaf", "Martin Klapetek"),
          ("Grey", "Sigi Sagi"), ("Kite", "Risto Saukonpää"), ("OneStandsOut", "Risto Saukonpää"),
          ("Path", "Risto Saukonpää"), ("summer_1am", "Risto Saukonpää"),
      )),
    *(Source("mate-backgrounds", _MATE.format(name), author, "GPL-2+")
      for name, author in (
          ("Aqua", "Charles Barbin"), ("Blinds", "Lennart Poettering, Andrea Cimitan"),
          ("Dune", "Marco Cogoni, Hylke Bons"), ("FreshFlower", "Jens Ansorg"), ("Garden", "Charles Barbin"),
          ("GreenMeadow", "Timothy Schellhase, Lapo Calamandrei"), ("LadyBird", "Charles Barbin"),
          ("RainDrops", "blackcombwhistler07"), ("Storm", "Sergey Nazarov"),
          ("TwoWings", "Charles Barbin, Hylke Bons"), ("Wood", "Jean-François Fortin Tam"),
          ("YellowFlower", "Charles Barbin"),
      )),
)


def _target_name(source: Source) -> str:
    parts = Path(source.path).parts
    name = parts[-4] if source.package == "plasma-workspace-wallpapers" else Path(source.path).stem
    return f"{source.package.split('-')[0]}-{name}{Path(source.path).suffix}"


def collect(root: Path, dest: Path) -> list[Path]:
    """Copy every :data:`SOURCES` file under ``root`` (``/`` or where the .debs were unpacked) to ``dest``.

    Also copies the factorized prior's scikit-image / matplotlib sources (colour ones as they are,
    grayscale ones too: :func:`load_images` makes every image RGB).

    Raises:
        FileNotFoundError: a listed file is missing (names the package to install).
    """
    from agents.factorized_prior.train import COLOUR_SOURCES, GRAY_SOURCES  # imports skimage, matplotlib

    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in SOURCES:
        found = [p for p in (root / source.path, *root.glob(f"*/{source.path}")) if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"{source.path} not found under {root}: install the Debian package {source.package}"
            )
        copied.append(Path(shutil.copyfile(found[0], dest / _target_name(source))))
    for path in (*COLOUR_SOURCES, *GRAY_SOURCES):
        copied.append(Path(shutil.copyfile(path, dest / f"package-{path.name}")))
    return copied


def load_images(folder: Path, min_side: int) -> list[np.ndarray]:
    """Every PNG/JPEG in ``folder`` as uint8 ``[H, W, 3]`` RGB, at full size and at half size.

    Alpha is composited on white, grayscale replicated to three channels. The half-size copy
    (Pillow's box reduce) adds the detail statistics of smaller photos. Images whose shorter side
    is below ``min_side`` (in pixels) at a scale are skipped at that scale. Sorted by file name,
    so the list is the same on every machine.
    """
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        with Image.open(path) as img:
            img.load()
            rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
        for scaled in (rgb, rgb.reduce(2)):
            if min(scaled.size) >= min_side:
                out.append(np.asarray(scaled, dtype=np.uint8).copy())
    return out


def main() -> None:
    """Command line: ``python -m agents.hyperprior.data OUT_DIR [--root /]``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="where the Debian packages are installed or unpacked")
    args = parser.parse_args()
    files = collect(args.root, args.dest)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB in {args.dest}")


if __name__ == "__main__":
    main()
