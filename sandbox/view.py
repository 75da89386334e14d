"""What an agent process can see of the filesystem: an allow-list, the Flatpak way.

The sandbox root is an empty tmpfs. Only these host paths are bound into it, read-only, each at
its own path (see docs/agents.md, "What an agent can see"):

- the Python runtime: the interpreter binary, ``libpython``, the standard library, and the
  virtualenv (its ``pyvenv.cfg`` and site-packages) when there is one; other ``site-packages``
  folders inside those trees that are not on ``sys.path`` (a pyenv's global packages) are hidden;
- the two codecbench packages the sandbox runtime imports (``codecbench/``, ``sandbox/``), not
  the checkout around them (no ``agents/``, ``tests/``, data or dot-folders);
- the system's shared libraries: the folder(s) holding the dynamic loader and the C library
  (``/usr/lib/x86_64-linux-gnu`` on Debian), the loader's symlink chain (``/lib64`` ...),
  ``/etc/ld.so.cache`` (library lookup) and ``/usr/lib/locale/C.utf8`` (the locale the
  runtime sets); ``/sys/devices/system/cpu`` (CPU topology, read by OpenMP and torch to size
  thread pools), and for CUDA agents the NVIDIA device nodes.

Plus, mounted by the sandbox itself: a private size-limited tmpfs ``/tmp`` and ``/dev/shm``, a
minimal ``/dev`` (null, zero, full, random, urandom, tty) and ``/proc`` of the agent's own PID
namespace. Nothing else: no home directories, ``/root``, ``/opt``, ``/srv``, ``/mnt``,
``/media``, ``/var``, checkouts or data directories.

Image files inside the bound trees are hidden too: the built-in dataset folders (scikit-image
``data``, matplotlib ``sample_data``) as whole folders, and every other file with an image
suffix (``.png``, ``.jpg``, ...) individually, replaced by an empty file. The worker cannot know
where a user uploaded a dataset from (the client may run on another host and sends only image
bytes), so it hides every image a bound tree holds: a dataset folder inside the runtime or the
codecbench packages is covered without knowing it is one.
"""

from __future__ import annotations

import os
import struct
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

# Raster formats a copy of an original could be stored in (codecbench reads .png/.jpg/.jpeg;
# the rest are formats PIL or imageio open). Vector formats cannot hold a photograph's pixels.
IMAGE_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
    ".pbm", ".pnm", ".pam", ".tga", ".jp2", ".j2k", ".jpx", ".avif", ".heic", ".heif", ".qoi", ".exr", ".dng",
    ".ico", ".icns", ".pcx", ".sgi", ".ras", ".xpm", ".dds", ".psd",
})
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")
LD_SO_CACHE = Path("/etc/ld.so.cache")
C_LOCALE = Path("/usr/lib/locale/C.utf8")


@dataclass(frozen=True)
class FilesystemView:
    """The read-only host paths an agent process sees and what is hidden inside them.

    Attributes:
        binds: host paths (files or folders) bound read-only at the same path, parents first.
        symlinks: ``(link, target)`` pairs recreated in the sandbox root (``/lib64 -> usr/lib64``).
        masked_dirs: folders inside ``binds`` replaced by an empty read-only tmpfs.
        masked_files: files inside ``binds`` replaced by an empty file (``/dev/null``).
        gpu: bind the NVIDIA device nodes (CUDA experiments).
    """

    binds: tuple[Path, ...]
    symlinks: tuple[tuple[Path, str], ...] = ()
    masked_dirs: tuple[Path, ...] = ()
    masked_files: tuple[Path, ...] = ()
    gpu: bool = False

    def bwrap_args(self, private_mounts: Sequence[str]) -> list[str]:
        """The bwrap arguments that build this view on an empty root.

        Args:
            private_mounts: the sandbox's own mounts (``--tmpfs /tmp``, ``--dev /dev``, ``--proc
                /proc`` ...): placed after the binds, so that a widened view binding ``/`` does
                not cover them, and before the bound paths under /tmp, which go on top of the
                private /tmp.
        """
        args: list[str] = []
        # bwrap would give the folders it creates on the way to a mount point the host folder's
        # mode (/root: 0700), which uid 65534 could not cross: create them 0755 first.
        parents = self._parent_dirs()
        for folder in parents:
            if not folder.is_relative_to("/tmp"):
                args += ["--perms", "0755", "--dir", str(folder)]
        for link, target in self.symlinks:
            args += ["--symlink", target, str(link)]
        under_tmp = self.binds_under_tmp()
        for path in self.binds:
            if not _under(path, under_tmp):
                args += ["--ro-bind", str(path), str(path)]
        args += private_mounts
        for folder in parents:
            if folder.is_relative_to("/tmp") and folder != Path("/tmp"):
                args += ["--perms", "0755", "--dir", str(folder)]
        for path in under_tmp:
            args += ["--ro-bind", str(path), str(path)]
        for path in self.masked_dirs:
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        for path in self.masked_files:
            args += ["--ro-bind", "/dev/null", str(path)]
        if self.gpu:
            for node in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(node), str(node)]
        return args

    def _parent_dirs(self) -> list[Path]:
        """Folders on the way to every bind and symlink, outside any bind, parents first."""
        targets = [*self.binds, *(link for link, _ in self.symlinks)]
        parents = {parent for path in targets for parent in path.parents if parent != Path("/")}
        return sorted(p for p in parents if not _under(p, self.binds))

    def binds_under_tmp(self) -> list[Path]:
        """The outermost bound paths under /tmp: a new tmpfs on /tmp (each forked agent process
        mounts its own) hides them, so they are bound back on top of it."""
        under = [p for p in self.binds if p.is_relative_to("/tmp") and p != Path("/tmp")]
        return [p for p in under if not any(p != q and p.is_relative_to(q) for q in under)]

    def widened(self, *paths: Path) -> FilesystemView:
        """This view with more host paths bound (tests use it for controls: ``widened(Path("/"))``
        shows what an agent would find without the allow-list)."""
        binds = _outermost((*paths, *self.binds))
        return replace(self, binds=binds, symlinks=tuple((k, t) for k, t in self.symlinks if not _under(k, binds)))


def _outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Existing paths, deduplicated, without those inside another, sorted."""
    unique = sorted({p for p in paths if p.exists()})
    return tuple(p for p in unique if not any(p != q and p.is_relative_to(q) for q in unique))


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def code_packages() -> list[Path]:
    """The folders of the codecbench packages the sandbox runtime imports (``codecbench``,
    ``sandbox``): never the checkout or site-packages folder around them."""
    import codecbench
    import sandbox

    return [Path(codecbench.__file__).resolve().parent, Path(sandbox.__file__).resolve().parent]


def code_roots() -> list[Path]:
    """The folders to put on the sandbox child's ``PYTHONPATH``, so that it imports the very code
    the worker runs (not another copy an editable install or a .pth file points at)."""
    return sorted({p.parent for p in code_packages()})


def _interpreter_files() -> list[Path]:
    """The interpreter binary (through the venv's symlink) and libpython when it is shared."""
    files = [Path(sys.executable).resolve()]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
        if libdir and name and (Path(libdir) / name).exists():
            files.append((Path(libdir) / name).resolve())
    return files


def python_runtime() -> tuple[list[Path], list[Path]]:
    """The runtime's trees and the unused package folders inside them.

    Returns:
        (binds, hidden): the venv root (``sys.prefix`` when it differs from the base prefix:
        ``pyvenv.cfg``, ``bin/python`` and site-packages), the standard library folders, the
        entries of ``sys.path`` that lie in those prefixes, the interpreter and libpython;
        and the ``site-packages``/``dist-packages`` folders inside them that are not on
        ``sys.path`` (a pyenv's global packages when a venv is active).
    """
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    paths = sysconfig.get_paths()
    binds: set[Path] = {Path(paths[key]).resolve() for key in ("stdlib", "platstdlib")}
    if sys.prefix != sys.base_prefix:
        binds.add(Path(sys.prefix).resolve())
    on_path = {Path(p).resolve() for p in sys.path if p and Path(p).is_dir()}
    binds |= {p for p in on_path if _under(p, prefixes)}
    binds |= set(_interpreter_files())
    hidden = []
    for root in binds:
        if root.is_dir():
            for pattern in ("site-packages", "dist-packages"):
                hidden += [p for p in root.glob(pattern) if p.resolve() not in on_path]
    return sorted(binds), sorted(hidden)


def _mapped_files() -> list[Path]:
    files = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                files.append(Path(parts[5].strip()))
    return files


def _elf_interpreter(executable: Path) -> Path | None:
    """The PT_INTERP path of a 64-bit little-endian ELF executable (``/lib64/ld-linux-x86-64.so.2``)."""
    try:
        with open(executable, "rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                kind, _, offset, _, _, size = struct.unpack("<IIQQQQ", f.read(40))
                if kind == 3:  # PT_INTERP
                    f.seek(offset)
                    return Path(f.read(size).rstrip(b"\0").decode())
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _symlink_chain(path: Path) -> list[tuple[Path, str]]:
    """Every symlink met while resolving ``path`` (``/lib64 -> usr/lib64``, ``/usr/lib64/ld... ->
    /lib/x86_64-linux-gnu/ld...``, ``/lib -> usr/lib``), to recreate them in the sandbox."""
    links: list[tuple[Path, str]] = []
    pending = [path]
    while pending:
        parts = pending.pop().parts[1:]
        prefix = Path("/")
        for i, part in enumerate(parts):
            prefix = prefix / part
            if prefix.is_symlink():
                target = os.readlink(prefix)
                if (prefix, target) not in links:
                    links.append((prefix, target))
                    pending.append(Path(os.path.normpath(prefix.parent / target)).joinpath(*parts[i + 1:]))
                break
    return links


def system_libraries() -> tuple[list[Path], list[Path]]:
    """The shared-library folders the interpreter needs, and the paths through which it reaches them.

    Returns:
        (binds, entry_paths): the real folders of the dynamic loader and the C library (from this
        process's memory map), ``/etc/ld.so.cache`` and the C.UTF-8 locale; and the paths whose
        symlinks must exist in the sandbox too: the executable's PT_INTERP path
        (``/lib64/ld-linux-x86-64.so.2``) and the usual library folder names (``/lib/<multiarch>``).
    """
    binds: set[Path] = set()
    for mapped in _mapped_files():
        name = mapped.name
        if name.startswith(("ld-linux", "ld64.so", "libc.so", "libc-")) and mapped.exists():
            binds.add(mapped.resolve().parent)
    for extra in (LD_SO_CACHE, C_LOCALE):
        if extra.exists():
            binds.add(extra)
    interpreter = _elf_interpreter(Path(sys.executable).resolve())
    entry_paths = [interpreter] if interpreter else []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        entry_paths += [Path("/lib") / multiarch, Path("/usr/lib") / multiarch]
    return sorted(binds), entry_paths


def _symlinks_outside(entry_paths: Iterable[Path], binds: Sequence[Path]) -> list[tuple[Path, str]]:
    """The symlinks on the way to ``entry_paths`` that lie outside every bound path (those inside
    are there already), in the order they are met."""
    links: list[tuple[Path, str]] = []
    for start in entry_paths:
        for link, target in _symlink_chain(start):
            if (link, target) not in links and not _under(link, binds):
                links.append((link, target))
    return links


def builtin_dataset_dirs() -> list[Path]:
    """Folders whose files are the originals of the built-in ``photos`` dataset."""
    import matplotlib
    import skimage

    return [Path(skimage.__file__).parent / "data", Path(matplotlib.get_data_path()) / "sample_data"]


@cache
def _image_files(roots: tuple[Path, ...], skipped: tuple[Path, ...]) -> tuple[Path, ...]:
    """Files with an image suffix under ``roots``, outside the ``skipped`` folders (a walk of the
    runtime's ~40 000 files takes ~0.3 s, once per worker process)."""
    found: list[Path] = []
    skip = {str(p) for p in skipped}
    for root in roots:
        if root.is_file():
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
            found += [Path(folder, f) for f in files if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return tuple(sorted(found))


def agent_view(hidden: Sequence[Path], gpu: bool) -> FilesystemView:
    """The filesystem view of every agent process (see the module docstring).

    Args:
        hidden: more folders to hide when they lie inside a bound path (the worker's data
            directory); folders outside the view need nothing, they are not there.
        gpu: bind the NVIDIA device nodes and the sysfs tree CUDA reads.
    """
    runtime, unused_packages = python_runtime()
    libraries, entry_paths = system_libraries()
    binds = [*runtime, *code_packages(), *libraries, CPU_TOPOLOGY]
    if gpu:
        binds.append(Path("/sys"))  # the CUDA driver reads PCI and NUMA topology from sysfs
    outer = _outermost(binds)
    # sys.executable is reached through the venv's symlinks (bin/python -> python3 -> /root/...).
    symlinks = _symlinks_outside([Path(sys.executable), *entry_paths], outer)
    masked = _outermost(p.resolve() for p in (*hidden, *builtin_dataset_dirs(), *unused_packages)
                        if p.exists() and _under(p.resolve(), outer) and p.resolve() not in outer)
    images = _image_files(tuple(p for p in outer if p.is_dir() and not p.is_relative_to("/sys")), masked)
    return FilesystemView(
        binds=outer, symlinks=tuple(symlinks), masked_dirs=masked,
        masked_files=tuple(f for f in images if not _under(f, masked)), gpu=gpu,
    )


__all__ = [
    "FilesystemView", "IMAGE_SUFFIXES", "agent_view", "builtin_dataset_dirs", "code_packages", "code_roots",
    "python_runtime", "system_libraries",
]
