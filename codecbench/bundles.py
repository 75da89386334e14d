"""Agent bundles: building one from a folder, validating one, writing one to disk.

A bundle is a set of files (relative POSIX paths) plus the dotted name of its entry module.
Validation runs on the client, the orchestrator and the worker alike, so a bad bundle is refused
up front with the field named (``agent.files[2].name``) instead of failing inside a sandbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from codecbench import validation
from codecbench.errors import InvalidArgument, echo
from codecbench.v1 import types_pb2

MAX_BUNDLE_BYTES = 256 * 1024 * 1024
MAX_FILES = 10_000
# Folders that never belong in a bundle.
_SKIP_DIRS = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"}


def sha256_hex(data: bytes) -> str:
    """The lower-case hex sha256 of ``data``: the content address of a blob."""
    return hashlib.sha256(data).hexdigest()


def is_sha256(digest: str) -> bool:
    """64 lower-case hex digits."""
    return len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def bundle_from_dir(
    folder: Path,
    entry_module: str = "",
    name: str = "",
    contract: types_pb2.Contract.ValueType = types_pb2.CONTRACT_UNSPECIFIED,
) -> types_pb2.AgentBundle:
    """Reads every file under ``folder`` into a bundle (skipping caches and VCS folders).

    The entry module defaults to ``codec`` when ``codec.py`` exists, else the only top-level
    ``.py`` file.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no entry module can be chosen.
    """
    return _bundle(folder, entry_module, name, contract, None)


def bundles_from_dirs(folders: Iterable[Path]) -> tuple[list[types_pb2.AgentBundle], dict[str, bytes]]:
    """Bundles of many folders (as :func:`bundle_from_dir`), their files by digest only, and one
    copy of each distinct content: 30 candidates sharing a 20 MB weights file hold 20 MB, not 600.

    Each file is hashed as a stream first and read whole only when its digest is new.

    Returns:
        The bundles (every ``BlobRef`` without ``content``) and the contents by sha256 (hex).

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder has no identifiable entry module.
    """
    contents: dict[str, bytes] = {}
    return [_bundle(Path(f), "", "", types_pb2.CONTRACT_UNSPECIFIED, contents) for f in folders], contents


def _bundle(
    folder: Path,
    entry_module: str,
    name: str,
    contract: types_pb2.Contract.ValueType,
    contents: dict[str, bytes] | None,
) -> types_pb2.AgentBundle:
    """:func:`bundle_from_dir`; with ``contents``, files by digest only, new contents added there."""
    if not folder.is_dir():
        raise FileNotFoundError(f"agent folder {folder} does not exist")
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part in _SKIP_DIRS for part in rel.parts) or path.suffix == ".pyc":
            continue
        if contents is None:
            content = path.read_bytes()
            files.append(types_pb2.BlobRef(
                name=rel.as_posix(), content=content, sha256=sha256_hex(content), size_bytes=len(content)
            ))
            continue
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if digest not in contents:
            contents[digest] = path.read_bytes()
        files.append(types_pb2.BlobRef(name=rel.as_posix(), sha256=digest, size_bytes=len(contents[digest])))
    if not entry_module:
        top = sorted(f.name[:-3] for f in files if "/" not in f.name and f.name.endswith(".py"))
        if "codec" in top:
            entry_module = "codec"
        elif len(top) == 1:
            entry_module = top[0]
        elif not top:
            nested = any(f.name.endswith(".py") for f in files)
            where = "at its top level (only in subfolders: point at the agent's own folder)" if nested else ""
            raise ValueError(f"{folder} has no Python files{' ' + where if where else ''}: an agent is a folder "
                             "with an entry module such as codec.py (docs/agents.md)")
        else:
            raise ValueError(f"{folder}: cannot choose an entry module among {top}; "
                             "name one (codecbench run --entry-module NAME)")
    return types_pb2.AgentBundle(
        name=name or folder.resolve().name, files=files, entry_module=entry_module, contract=contract
    )


def entry_paths(entry_module: str) -> tuple[str, str]:
    """The two files that can hold a module: ``a/b.py`` or ``a/b/__init__.py``."""
    base = entry_module.replace(".", "/")
    return f"{base}.py", f"{base}/__init__.py"


def check_size(ref: types_pb2.BlobRef, field: str) -> None:
    """A file's declared ``size_bytes`` is not negative and, when it comes with its content, is the
    content's length (0 means not stated). A negative size would subtract from a size limit's sum.

    Raises:
        InvalidArgument: naming ``<field>.size_bytes``.
    """
    if ref.size_bytes < 0:
        raise InvalidArgument(f"{field}.size_bytes", f"{ref.size_bytes} is negative")
    if ref.content and ref.size_bytes and ref.size_bytes != len(ref.content):
        raise InvalidArgument(
            f"{field}.size_bytes", f"{ref.size_bytes} disagrees with the {len(ref.content)} bytes of content"
        )


def validate(bundle: types_pb2.AgentBundle, field: str = "agent", need_content: bool = False) -> None:
    """Checks a bundle: files, paths, digests, sizes (:func:`check_size`) and the entry module.

    Args:
        bundle: the bundle as a request carries it.
        field: the bundle's field path in the request, for the error.
        need_content: every file must carry its content (no fetch by digest possible).

    Raises:
        InvalidArgument: naming the first bad field, e.g. ``agent.files[2].name``.
    """
    validation.check_text(bundle.name, f"{field}.name", validation.MAX_NAME_CHARS)
    validation.check_text(bundle.entry_module, f"{field}.entry_module", validation.MAX_NAME_CHARS)
    if not bundle.files:
        raise InvalidArgument(f"{field}.files", "the bundle has no files")
    if len(bundle.files) > MAX_FILES:
        raise InvalidArgument(f"{field}.files", f"{len(bundle.files)} files exceed the limit of {MAX_FILES}")
    if not bundle.entry_module:
        raise InvalidArgument(f"{field}.entry_module", "missing (e.g. 'codec' for codec.py)")
    if not all(part.isidentifier() for part in bundle.entry_module.split(".")):
        raise InvalidArgument(
            f"{field}.entry_module", f"{echo(bundle.entry_module)} is not a dotted Python module name"
        )
    if bundle.contract not in types_pb2.Contract.values():
        raise InvalidArgument(f"{field}.contract", f"unknown value {bundle.contract}")
    total = 0
    seen: set[str] = set()
    seen_folders: set[str] = set()
    for i, f in enumerate(bundle.files):
        where = f"{field}.files[{i}]"
        validation.check_text(f.name, f"{where}.name", validation.MAX_PATH_CHARS)
        pure = PurePosixPath(f.name)
        if (not f.name or pure.is_absolute() or pure.as_posix() != f.name or ".." in pure.parts
                or "\\" in f.name or "\0" in f.name or f.name == "."):
            raise InvalidArgument(
                f"{where}.name", f"{echo(f.name)} must be a normalised relative path inside the bundle"
            )
        if f.name in seen:
            raise InvalidArgument(f"{where}.name", f"{echo(f.name)} appears twice")
        folders = [parent.as_posix() for parent in pure.parents if parent.as_posix() != "."]
        if f.name in seen_folders or any(folder in seen for folder in folders):
            raise InvalidArgument(f"{where}.name", f"{echo(f.name)} is both a file and a folder of the bundle")
        seen.add(f.name)
        seen_folders.update(folders)
        check_size(f, where)
        size = len(f.content) if f.content else f.size_bytes
        # A file without content and without a size is the empty file: its digest must say so too,
        # or a reference to someone else's blob would be stored for an empty file.
        if f.sha256 and (f.content or not f.size_bytes) and sha256_hex(f.content) != f.sha256:
            if sha256_hex(f.content) == f.sha256.lower():
                # Digests are content addresses (blob file names), so one spelling is kept: refused
                # with the fix named rather than accepted and stored under two names.
                raise InvalidArgument(f"{where}.sha256", "must be lower-case hex (it matches the content once "
                                      "lower-cased); or leave it out when the content is sent")
            raise InvalidArgument(f"{where}.sha256", "does not match the content")
        if not f.content and need_content and f.size_bytes:
            raise InvalidArgument(f"{where}.content", f"missing (size_bytes={f.size_bytes})")
        if not f.content and f.size_bytes and not is_sha256(f.sha256):
            raise InvalidArgument(
                f"{where}.sha256", f"{echo(f.sha256)}: 64 lower-case hex digits needed to fetch a file sent "
                "without content"
            )
        total += size
    if total > MAX_BUNDLE_BYTES:
        raise InvalidArgument(f"{field}.files", f"{total} bytes exceed the bundle limit of {MAX_BUNDLE_BYTES} bytes")
    if not any(p in seen for p in entry_paths(bundle.entry_module)):
        a, b = entry_paths(bundle.entry_module)
        raise InvalidArgument(f"{field}.entry_module", f"the bundle has neither {a} nor {b}")


def with_content(bundle: types_pb2.AgentBundle, fetch: Callable[[str], bytes] | None) -> types_pb2.AgentBundle:
    """A copy in which every file carries its content, fetched by sha256 where it was left out.

    Raises:
        ValueError: a file without content and no way to fetch it, or fetched bytes whose digest
            or length does not match.
    """
    full = types_pb2.AgentBundle()
    full.CopyFrom(bundle)
    for f in full.files:
        if not f.content and f.size_bytes:
            if fetch is None:
                raise ValueError(f"{f.name}: sent without content and no blob source to fetch it")
            f.content = fetch(f.sha256)
            if sha256_hex(f.content) != f.sha256:
                raise ValueError(f"{f.name}: fetched content does not match sha256 {f.sha256}")
            if len(f.content) != f.size_bytes:
                raise ValueError(f"{f.name}: fetched {len(f.content)} bytes, size_bytes says {f.size_bytes}")
    return full


def write(bundle: types_pb2.AgentBundle, dest: Path) -> None:
    """Writes the files of a validated bundle that carries its content under ``dest``."""
    for f in bundle.files:
        target = dest / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)


def without_content(bundle: types_pb2.AgentBundle) -> types_pb2.AgentBundle:
    """A copy that lists the files by path, digest and size only."""
    light = types_pb2.AgentBundle()
    light.CopyFrom(bundle)
    for f in light.files:
        if f.content:
            f.sha256 = f.sha256 or sha256_hex(f.content)
            f.size_bytes = len(f.content)
            f.content = b""
    return light
