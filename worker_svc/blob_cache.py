"""The worker's blob cache: a :class:`~codecbench.blobs.BlobStore` that fills itself from the
orchestrator, verifying each blob's sha256 before it is used."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from codecbench.blobs import BlobMissing, BlobStore

RemoteFetch = Callable[[str], Awaitable[bytes]]

__all__ = ["BlobCache", "BlobMissing", "RemoteFetch"]


class BlobCache(BlobStore):
    """Blobs on the worker's disk, fetched from a remote source when missing."""

    def __init__(self, root: Path, remote: RemoteFetch | None = None) -> None:
        super().__init__(root)
        self.remote = remote

    async def ensure(self, digests: Iterable[str]) -> None:
        """Fetches every digest not yet cached from the remote source and verifies it.

        Raises:
            BlobMissing: no remote source, the remote failed, or it sent bytes with another digest.
        """
        for digest in dict.fromkeys(digests):
            if self.has(digest):
                continue
            if self.remote is None:
                raise BlobMissing(f"blob {digest} is not cached and this worker has no orchestrator to fetch it from")
            try:
                data = await self.remote(digest)
            except Exception as exc:  # noqa: BLE001 - any transport failure means the blob is missing here
                raise BlobMissing(f"blob {digest} could not be fetched: {exc}") from exc
            if hashlib.sha256(data).hexdigest() != digest:
                raise BlobMissing(f"blob {digest}: the fetched bytes have another sha256")
            self.put(data)
