"""A directory of content-addressed blobs, named by their sha256 and written atomically.

The orchestrator keeps uploaded dataset images and agent files here; a worker keeps the blobs
it fetched, so a file crosses the network once, not once per experiment.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class BlobMissing(LookupError):
    """A blob that is not in the store (and, for a worker's cache, cannot be fetched)."""


# Temporary files of writes in progress (or interrupted ones, which garbage collection removes).
TEMP_PREFIX = ".tmp-"


class BlobStore:
    """Blobs under ``root/ab/abcdef...`` (first two hex digits as a fan-out folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Blobs are other users' agent code and images: folders 0700, files 0600 (mkstemp's mode).
        os.chmod(root, 0o700)

    def path(self, sha256: str) -> Path:
        """Where a blob lives. Raises ValueError for a digest that is not 64 hex digits."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"{sha256!r} is not a lower-case hex sha256")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the blob is stored.

        Raises:
            ValueError: ``sha256`` is not a lower-case hex digest.
        """
        return self.path(sha256).exists()

    def get(self, sha256: str) -> bytes:
        """The blob's bytes.

        Raises:
            BlobMissing: not stored.
        """
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {sha256} is not stored") from None

    def put(self, data: bytes) -> str:
        """Stores bytes under their sha256 (atomically, once) and returns the digest.

        Raises:
            OSError: the write failed (e.g. ``ENOSPC``); no partial or temporary file is left.
        """
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                # A failed write (a full disk) leaves no partial file taking the space.
                os.unlink(tmp)
                raise
        return digest

    @staticmethod
    def is_temp_name(name: str) -> bool:
        """Whether a file name in the store is a temporary file of a write, not a blob."""
        return name.startswith(TEMP_PREFIX)

    def remove(self, sha256: str) -> None:
        """Deletes a blob (nothing when it is not stored).

        Raises:
            ValueError: ``sha256`` is not a lower-case hex digest.
        """
        self.path(sha256).unlink(missing_ok=True)
