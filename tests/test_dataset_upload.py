"""A dataset upload goes to disk as it arrives, under a total limit (issue 14, red team).

CreateDataset used to hold the whole upload in memory with no total limit (300 MiB of junk raised
the orchestrator's memory to 522 MB) and decoded nothing before the stream ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers.services import orchestrator
from helpers.worker import png_bytes

from codecbench import errors
from codecbench.client import Client
from codecbench.status import from_rpc_error
from codecbench.v1 import orchestrator_pb2

pytestmark = pytest.mark.timeout(120)


def _header(name: str) -> orchestrator_pb2.CreateDatasetRequest:
    return orchestrator_pb2.CreateDatasetRequest(header=orchestrator_pb2.CreateDatasetHeader(name=name))


def _chunk(image_name: str, data: bytes, last: bool = True) -> orchestrator_pb2.CreateDatasetRequest:
    return orchestrator_pb2.CreateDatasetRequest(
        chunk=orchestrator_pb2.ImageChunk(image_name=image_name, data=data, last=last))


def _left_in(blobs: Path) -> list[Path]:
    return [p for p in blobs.rglob("*") if p.is_file()]


async def test_an_upload_over_the_total_limit_is_refused_naming_it(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, 40_000, dtype=np.uint8).tobytes()

    async def messages() -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
        yield _header("big")
        for i in range(5):  # 200 KB of chunks in all, over the 100 KB limit
            yield _chunk(f"img{i}.png", noise, last=False)

    async with orchestrator(tmp_path / "orch", max_dataset_bytes=100_000) as orch, Client(orch.address) as client:
        before = _left_in(tmp_path / "orch" / "blobs")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreateDataset(messages())
        refusal = from_rpc_error(info.value)
        assert isinstance(refusal, errors.InvalidArgument) and refusal.field == "chunk.data"
        assert "100000 bytes" in str(refusal) and "MAX_DATASET_BYTES" in str(refusal)
        assert _left_in(tmp_path / "orch" / "blobs") == before  # no temporary file stays behind
        # Within the limit it works.
        await client.stub.CreateDataset(_stream(_header("small"), _chunk("a.png", png_bytes(16, 16, seed=1))))


async def test_an_undecodable_image_is_refused_when_it_closes_before_the_stream_ends(tmp_path: Path) -> None:
    rest_requested = asyncio.Event()
    never = asyncio.Event()

    async def messages() -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
        yield _header("junk")
        yield _chunk("junk.png", b"not an image at all" * 100)
        rest_requested.set()
        await never.wait()  # the rest of the upload never comes
        yield _chunk("b.png", png_bytes(16, 16, seed=2))

    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreateDataset(messages(), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        refusal = from_rpc_error(info.value)
        assert refusal.reason == errors.REASON_IMAGE_UNDECODABLE
        assert rest_requested.is_set() and not never.is_set()


def _stream(*messages: orchestrator_pb2.CreateDatasetRequest) -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
    async def each() -> AsyncIterator[orchestrator_pb2.CreateDatasetRequest]:
        for message in messages:
            yield message

    return each()
