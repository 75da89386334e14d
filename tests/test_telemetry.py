"""Prometheus metrics (issue 16, point 2): real services with ``metrics_port=0``, scraped over HTTP
with urllib and parsed with prometheus-client's own parser, after an experiment ran."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import agent_bundle, eventually
from helpers.services import attach_worker, orchestrator, write_images
from prometheus_client.parser import text_string_to_metric_families

from codecbench import errors, rpc
from codecbench.client import Client
from codecbench.v1 import experiment_pb2
from orchestrator_svc.__main__ import parse_args as orchestrator_args
from worker_svc.__main__ import parse_args as worker_args

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    """Every sample of the endpoint at ``url``: (name, sorted labels) -> value.

    The HTTP call runs in a thread: the services read their live state on this event loop.
    """

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL
            assert response.status == 200
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when it is absent (a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_both_services_expose_their_metrics(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", [(32, 32)])
    async with orchestrator(tmp_path / "orch", metrics_port=0, metrics_refresh_s=0.05) as orch:
        assert orch.metrics is not None and orch.metrics.host == "127.0.0.1" and orch.metrics.port > 0
        worker = await attach_worker(orch, tmp_path / "w", metrics_port=0, slots=2)
        try:
            assert worker.handle.metrics is not None
            before = await scrape(orch.metrics.url)
            assert value(before, "codecbench_orchestrator_experiments", state="SUCCEEDED") == 0
            async with Client(orch.address) as client:
                await client.upload_dataset("one", images)
                exp = await client.submit(agent_bundle("zlib_lossless"), dataset="one")
                done = await client.wait(exp.experiment_id)
                assert done.state == experiment_pb2.EXPERIMENT_STATE_SUCCEEDED
                with pytest.raises(errors.InvalidArgument):
                    await client.submit(agent_bundle("zlib_lossless"), dataset="one", max_attempts=99)
                # One more, queued behind a drained worker: queue depth and age per owner.
                await client.drain(worker.handle.info.worker_id)
                queued = await client.submit(agent_bundle("zlib_lossless"), dataset="one", no_cache=True)
                assert (await client.get(queued.experiment_id)).state == experiment_pb2.EXPERIMENT_STATE_QUEUED

            o = "codecbench_orchestrator_"
            url = orch.metrics.url

            async def snapshot_current() -> bool:  # the live state is a snapshot refreshed every 0.05 s
                now = await scrape(url)
                return (value(now, o + "queue_depth") == 1
                        and value(now, o + "workers", state="DRAINING") == 1)

            await eventually(snapshot_current, what="a snapshot after the drain and the queued experiment")
            orch_samples = await scrape(orch.metrics.url)
            assert value(orch_samples, o + "leader") == 1
            assert value(orch_samples, o + "experiments", state="SUCCEEDED") == 1
            assert value(orch_samples, o + "experiments", state="QUEUED") == 1
            assert value(orch_samples, o + "experiments", state="FAILED") == 0
            assert value(orch_samples, o + "queue_depth") == 1
            assert value(orch_samples, o + "owner_queue_depth", owner="admin") == 1
            assert value(orch_samples, o + "oldest_queued_age_seconds") > 0
            assert value(orch_samples, o + "owner_oldest_queued_age_seconds", owner="admin") > 0
            assert value(orch_samples, o + "rpcs_total", method="CreateExperiment", code="OK") == 2
            assert value(orch_samples, o + "rpcs_total", method="CreateExperiment", code="INVALID_ARGUMENT") == 1
            assert value(orch_samples, o + "rpc_duration_seconds_count", method="CreateExperiment",
                         code="INVALID_ARGUMENT") == 1
            assert value(orch_samples, o + "rpcs_total", method="RegisterWorker", code="OK") == 1
            assert value(orch_samples, o + "dispatch_latency_seconds_count") == 1
            assert value(orch_samples, o + "experiment_duration_seconds_count", outcome="succeeded",
                         error_kind="none") == 1
            worker_id = worker.handle.info.worker_id
            assert value(orch_samples, o + "workers", state="DRAINING") == 1
            assert value(orch_samples, o + "worker_slots", worker_id=worker_id, state="DRAINING") == 2
            assert value(orch_samples, o + "worker_slots_in_use", worker_id=worker_id, state="DRAINING") == 0
            assert 0 <= value(orch_samples, o + "worker_heartbeat_age_seconds", worker_id=worker_id,
                              state="DRAINING") < 15

            worker_samples = await scrape(worker.handle.metrics.url)
            w = "codecbench_worker_"
            assert value(worker_samples, w + "experiments_total", outcome="succeeded", error_kind="none") == 1
            assert value(worker_samples, w + "rpcs_total", method="RunExperiment", code="OK") == 1
            # the experiment's sandboxes: an encoder, and decoders
            assert value(worker_samples, w + "sandbox_start_seconds_count", role="encoder") >= 1
            assert value(worker_samples, w + "sandbox_start_seconds_count", role="decoder") >= 1
            assert value(worker_samples, w + "sandbox_start_seconds_sum", role="encoder") > 0
            assert value(worker_samples, w + "slots") == 2
            assert value(worker_samples, w + "slots_in_use") == 0
            # Each service's own registry: no orchestrator metric on the worker's endpoint.
            assert not any(name.startswith(o) for name, _ in worker_samples)
        finally:
            await worker.stop()
    assert worker.handle.metrics is None  # stopped with the worker


def test_metrics_are_off_by_default_and_bind_loopback() -> None:
    base = ["--data-dir", "/nonexistent"]
    assert orchestrator_args(base).metrics_port is None
    assert worker_args(base + ["--isolation", "process"]).metrics_port is None
    given = orchestrator_args([*base, "--metrics-port", "0"])
    assert (given.metrics_port, given.metrics_host) == (0, "127.0.0.1")


class _SlowStore:
    """A store whose state_counts blocks until ``release`` is set (a GROUP BY over a million rows)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()

    def state_counts(self) -> dict[int, int]:
        self.entered.set()
        self.release.wait(timeout=60)
        return dict(self.store.state_counts())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_slow_store_blocks_neither_scrapes_nor_the_event_loop(tmp_path: Path) -> None:
    """Issue 16 fix 1: the store-derived gauges are read off the event loop into a snapshot; a scrape
    reads the snapshot, so scrapes and gRPC health answer while the store query hangs."""
    async with orchestrator(tmp_path / "orch", metrics_port=0, metrics_refresh_s=0.05) as orch:
        assert orch.metrics is not None and orch.telemetry.live is not None
        slow = _SlowStore(orch.store)
        orch.telemetry.live.store = slow  # type: ignore[assignment]
        try:
            await eventually(slow.entered.is_set, what="the refresh entered the slow store query")
            # Sixteen concurrent scrapes (more than the endpoint serves at once) and a health call.
            scrapes = await asyncio.gather(*(scrape(orch.metrics.url) for _ in range(16)))
            assert all(value(s, "codecbench_orchestrator_leader") == 1 for s in scrapes)
            async with rpc.channel(orch.address, "") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert not slow.release.is_set()  # all of it answered while the store query was still blocked
        finally:
            slow.release.set()

        async def counted() -> bool:
            return ("codecbench_orchestrator_experiments", (("state", "QUEUED"),)) in await scrape(orch.metrics.url)

        await eventually(counted, what="the store-derived gauges once the store answers")
