"""Content-addressed blobs (dataset images, agent files) cached on the worker's disk.

Blobs are fetched from the orchestrator once, verified against their sha256, and written
atomically, so a 10 MB weights file crosses the network once, not once per experiment.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

RemoteFetch = Callable[[str], Awaitable[bytes]]


class BlobMissing(LookupError):
    """A blob that is neither cached nor fetchable."""


class BlobCache:
    """A directory of blobs named by sha256, with an optional remote source."""

    def __init__(self, root: Path, remote: RemoteFetch | None = None) -> None:
        self.root = root
        self.remote = remote
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def get(self, sha256: str) -> bytes:
        """A cached blob.

        Raises:
            BlobMissing: not in the cache.
        """
        try:
            return self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {sha256} is not cached") from None

    def put(self, data: bytes) -> str:
        """Stores bytes under their sha256 (atomically) and returns the digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest

    async def ensure(self, digests: Iterable[str]) -> None:
        """Fetches every digest not yet cached from the remote source and verifies it.

        Raises:
            BlobMissing: no remote source, or the remote sent bytes with another digest.
        """
        for digest in dict.fromkeys(digests):
            if self.has(digest):
                continue
            if self.remote is None:
                raise BlobMissing(f"blob {digest} is not cached and this worker has no orchestrator to fetch it from")
            data = await self.remote(digest)
            if hashlib.sha256(data).hexdigest() != digest:
                raise BlobMissing(f"blob {digest}: the fetched bytes have another sha256")
            self.put(data)
