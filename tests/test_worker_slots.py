"""Slots mean slots: the worker's unary Encode and Decode take a slot like RunExperiment (issue 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import torch
from helpers import TEST_ADMIN_TOKEN, agent_bundle, eventually, worker_channel
from helpers.services import attach_worker, orchestrator

from codecbench import errors, tensors
from codecbench.client import Client
from codecbench.states import QUEUED, SUCCEEDED
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


async def test_a_worker_whose_slot_a_direct_call_holds_gets_no_dispatch_storm(tmp_path: Path) -> None:
    """The orchestrator used to count a worker's slots by its own dispatches only: with the one slot
    held by a direct Encode call, the experiment was refused (NO_FREE_SLOT), requeued and
    re-dispatched at once, about 340 events a second. Now the heartbeat's slots_in_use is a floor
    and a refusal marks the worker full until its next heartbeat."""
    async with orchestrator(tmp_path / "orch", heartbeat_interval_s=0.5) as orch, Client(orch.address) as client:
        attached = await attach_worker(orch, tmp_path / "w", use_bwrap=False, slots=1)
        channel = worker_channel(attached.handle.address)
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        try:
            await eventually(lambda: orch.registry.takeable_devices() != set(), what="the worker is READY")
            busy = asyncio.ensure_future(stub.Encode(_encode("timeout_encode")))  # holds the one slot
            await eventually(lambda: attached.handle.servicer.slots_in_use == 1, what="the direct encode holds it")
            exp = await client.submit(agent_bundle("jpeg"))
            entry = orch.registry.get(attached.handle.info.worker_id)
            assert entry is not None
            since = entry.last_heartbeat
            # Several heartbeats later (each one could clear a NO_FREE_SLOT mark) it still waits.
            await eventually(lambda: entry.last_heartbeat > since + 2.0, what="four more heartbeats")
            events = orch.store.events_after(exp.experiment_id, 0)
            assert (await client.get(exp.experiment_id)).state == QUEUED
            assert len(events) <= 5, f"{len(events)} events while waiting for the slot"
            assert entry.status().slots_in_use == 1  # the worker's own count, not only our dispatches
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)
            done = await client.wait(exp.experiment_id)
            assert done.state == SUCCEEDED
            refusals = [e for e in orch.store.events_after(exp.experiment_id, 0)
                        if e.HasField("state_change") and "no free slot" in e.state_change.reason]
            assert len(refusals) <= 2
        finally:
            await channel.close()
            await attached.stop()
