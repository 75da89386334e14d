"""Every stream ends and every call has a deadline (issue 14, "Every stream ends")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from helpers import agent_bundle
from helpers.services import orchestrator

from codecbench import errors, rpc
from codecbench.client import Client
from codecbench.states import CANCELLED
from codecbench.v1 import orchestrator_pb2

pytestmark = pytest.mark.timeout(60)


async def test_watch_past_the_last_event_is_out_of_range_and_ends(tmp_path: Path) -> None:
    """It used to wait for an event that never comes, even after the experiment finished."""
    async with orchestrator(tmp_path) as orch, Client(orch.address) as client:
        exp = await client.submit(agent_bundle("jpeg"))  # no worker: it stays QUEUED
        beyond = orchestrator_pb2.WatchExperimentRequest(experiment_id=exp.experiment_id,
                                                         after_sequence=exp.last_sequence + 5)
        watch = client.stub.WatchExperiment(beyond, timeout=20)
        cancelling = asyncio.create_task(client.cancel(exp.experiment_id))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in watch:
                pass
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE, info.value
        assert info.value.details().startswith("after_sequence")
        assert (await cancelling).state == CANCELLED

        done = await client.get(exp.experiment_id)
        at_end = orchestrator_pb2.WatchExperimentRequest(experiment_id=exp.experiment_id,
                                                         after_sequence=done.last_sequence)
        assert [r async for r in client.stub.WatchExperiment(at_end, timeout=20)] == []
        with pytest.raises(errors.OutOfRange):
            async for _ in client.watch(exp.experiment_id, after_sequence=done.last_sequence + 1):
                pass


async def test_unary_calls_have_a_deadline() -> None:
    """A service that accepts calls and never answers fails them with Unavailable, not a hang."""
    never = asyncio.Event()

    async def hang(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await never.wait()
        return b""

    handler = grpc.method_handlers_generic_handler(
        "codecbench.v1.OrchestratorService", {"GetExperiment": grpc.unary_unary_rpc_method_handler(hang)})
    server = grpc.aio.server(options=rpc.server_options())
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Client(f"127.0.0.1:{port}", call_timeout_s=0.5) as client:
            with pytest.raises(errors.Unavailable):
                await asyncio.wait_for(client.get("exp-1"), timeout=20)
    finally:
        await server.stop(0)


def test_channels_send_keepalive_pings_and_servers_accept_them() -> None:
    client = dict(rpc.channel_options())
    server = dict(rpc.server_options())
    assert client["grpc.keepalive_time_ms"] > 0 and client["grpc.keepalive_timeout_ms"] > 0
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
