"""Slots mean slots: the worker's unary Encode and Decode take a slot like RunExperiment (issue 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import torch
from helpers import TEST_ADMIN_TOKEN, agent_bundle, eventually, worker_channel

from codecbench import errors, tensors
from codecbench.status import from_rpc_error
from codecbench.v1 import types_pb2, worker_pb2, worker_pb2_grpc
from worker_svc.server import WorkerConfig, start_worker

pytestmark = pytest.mark.timeout(120)


def _encode(agent: str) -> worker_pb2.EncodeRequest:
    pixels = tensors.from_torch(torch.zeros(3, 16, 16, dtype=torch.uint8))
    return worker_pb2.EncodeRequest(agent=agent_bundle(agent), image=pixels, device=types_pb2.DEVICE_CPU,
                                    timeouts=types_pb2.Timeouts(encode_s=60))


async def test_unary_calls_are_refused_when_every_slot_is_taken(tmp_path: Path) -> None:
    """8 concurrent Encode calls on a 1-slot worker used to run all at once."""
    handle = await start_worker(WorkerConfig(admin_token=TEST_ADMIN_TOKEN, data_dir=tmp_path, slots=1))
    channel = worker_channel(handle.address)
    stub = worker_pb2_grpc.WorkerServiceStub(channel)
    try:
        busy = asyncio.ensure_future(stub.Encode(_encode("timeout_encode")))  # holds the one slot
        await eventually(lambda: handle.servicer.slots_in_use == 1, what="the slow encode holds the slot")
        for call in (stub.Encode(_encode("jpeg")),
                     stub.Decode(worker_pb2.DecodeRequest(agent=agent_bundle("jpeg"), bitstream=b"x"))):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            refusal = from_rpc_error(info.value)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert isinstance(refusal, errors.ResourceExhausted) and refusal.reason == errors.REASON_NO_FREE_SLOT
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        await eventually(lambda: handle.servicer.slots_in_use == 0, what="the cancelled encode frees its slot")
        assert (await stub.Encode(_encode("jpeg"))).bitstream
    finally:
        await channel.close()
        await handle.stop(0)
