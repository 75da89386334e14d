"""Chaos (b): a property-based fuzz (hypothesis) of every RPC of both services.

Requests are drawn from the protocol's own descriptors (:func:`message_strategy`): every field
of every message, nested, with random, empty, oversized, negative, extreme, NaN and infinite values
and unknown enum numbers; one call in eight sends bytes that are no protobuf message at all. Each is
sent with the admin token to a real orchestrator and a real worker (child processes, the worker
registered with the orchestrator), through a raw channel (the bytes go as drawn; the Python client's
own checks are bypassed).

Every call must end within :data:`HANG_S` with a status other than UNKNOWN or INTERNAL (those
mean an exception escaped a handler); neither service may exit. Afterwards every experiment the
fuzz managed to create must finish: each becomes terminal, or waits with a stated reason (no
worker can run it) and is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chaos.cluster import Cluster, database_args
from chaos.kills import TRIVIAL_AGENT, tiny_png
from codecbench import auth, bundles, datasets, rpc, states, tensors
from codecbench.client import Client
from codecbench.v1 import orchestrator_pb2, types_pb2, worker_pb2

HANG_S = 10.0  # a call that takes longer is a hang
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
OVERSIZED_BYTES = 2 * 1024 * 1024  # beyond every field's limit, within gRPC's message limit
OVERSIZED_COUNT = 2000  # beyond every repeated field's limit
MAX_DEPTH = 4
MAX_STREAM_RESPONSES = 2000
SERVICES: tuple[ServiceDescriptor, ...] = (
    orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"],
)

_T = FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT32: (-(2**31), 2**31 - 1), _T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SFIXED32: (-(2**31), 2**31 - 1), _T.TYPE_INT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: (-(2**63), 2**63 - 1), _T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1), _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1), _T.TYPE_FIXED64: (0, 2**64 - 1),
}
_ODD_TEXT = ["", " ", "../../etc/passwd", "a" * 300, "\x00", "é\u202e\U0001f600", "photos", "cpu", "SELECT 1;--"]


def _oversized_text() -> str:
    # built on demand (st.builds): a constant would put megabytes into hypothesis's strategy reprs
    return "x" * OVERSIZED_BYTES


def _oversized_bytes() -> bytes:
    return b"\xff" * OVERSIZED_BYTES


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, -1, 1, low, high]).filter(lambda v: low <= v <= high),
                     st.integers(low, high), st.integers(max(low, -1000), min(high, 1000)))


def _scalar(fd: FieldDescriptor, depth: int, big: bool) -> st.SearchStrategy[Any]:
    """Values of one field; ``big`` adds oversized strings and bytes (top-level fields only, so a
    request stays within memory: one oversized value, not thousands)."""
    if fd.type in _INT_RANGES:
        return _integers(*_INT_RANGES[fd.type])
    if fd.type == _T.TYPE_DOUBLE:
        return st.floats()  # NaN and the infinities included
    if fd.type == _T.TYPE_FLOAT:
        return st.floats(width=32)
    if fd.type == _T.TYPE_BOOL:
        return st.booleans()
    if fd.type == _T.TYPE_STRING:
        text = st.one_of(st.sampled_from(_ODD_TEXT), st.text(max_size=40))
        return st.one_of(text, st.builds(_oversized_text)) if big else text
    if fd.type == _T.TYPE_BYTES:
        binary = st.binary(max_size=64)
        return st.one_of(binary, st.builds(_oversized_bytes)) if big else binary
    if fd.enum_type is not None:
        return st.integers(-3, max(v.number for v in fd.enum_type.values) + 3)  # unknown numbers too
    assert fd.message_type is not None  # the one kind of field left
    return message_strategy(fd.message_type, depth + 1)


def _setter(fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Callable[[Message], None]]:
    """A strategy of functions that set field ``fd`` of a message (or leave it unset)."""
    name = fd.name
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key, value = (_scalar(fd.message_type.fields_by_name[n], depth, big=False) for n in ("key", "value"))
        is_message = fd.message_type.fields_by_name["value"].message_type is not None

        def set_map(entries: dict[Any, Any]) -> Callable[[Message], None]:
            def apply(msg: Message) -> None:
                target = getattr(msg, name)
                for k, v in entries.items():
                    if is_message:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            return apply

        small = st.dictionaries(key, value, max_size=3)
        if depth > 0 or fd.message_type.fields_by_name["key"].type != _T.TYPE_STRING:
            return small.map(set_map)
        crowded = value.map(lambda v: {f"k{i}": v for i in range(OVERSIZED_COUNT)})
        return st.one_of(small, crowded).map(set_map)
    element = _scalar(fd, depth, big=depth == 0 and not fd.is_repeated)
    if fd.is_repeated:
        # oversized lists at the top level only: nested, they would multiply
        many = st.lists(element, max_size=3) if depth > 0 else st.one_of(
            st.lists(element, max_size=4), element.map(lambda v: [v] * OVERSIZED_COUNT))
        return many.map(lambda values: lambda msg: getattr(msg, name).extend(values))
    if fd.message_type is not None:
        return st.one_of(st.none(), element).map(
            lambda v: (lambda msg: getattr(msg, name).CopyFrom(v)) if v is not None else (lambda msg: None))
    return st.one_of(st.none(), element).map(
        lambda v: (lambda msg: setattr(msg, name, v)) if v is not None else (lambda msg: None))


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type ``descriptor`` with any subset of their fields set to hostile values
    (nested messages down to :data:`MAX_DEPTH`)."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    setters = [_setter(fd, depth) for fd in descriptor.fields]

    def build(applied: list[Callable[[Message], None]]) -> Message:
        msg = cls()
        for apply in applied:
            apply(msg)
        return msg

    return st.deferred(lambda: st.tuples(*setters).map(lambda fs: build(list(fs))))


def valid_requests(finished_id: str) -> dict[str, Message]:
    """Well-formed requests that get past validation, by method name: the fuzz also sends these
    with one field replaced by a hostile value, so it reaches the code behind the checks (an
    experiment is created, an agent runs, a finished experiment ``finished_id`` is watched from
    any sequence number)."""
    agent = bundles.bundle_from_dir(TRIVIAL_AGENT)
    cpu = types_pb2.DEVICE_CPU
    image = tensors.from_torch(torch.zeros((3, 8, 8), dtype=torch.uint8))
    dataset = types_pb2.DatasetRef(name="tiny", images=[types_pb2.BlobRef(name="a.png", content=tiny_png())])
    return {
        "GetExperiment": orchestrator_pb2.GetExperimentRequest(experiment_id=finished_id),
        "WatchExperiment": orchestrator_pb2.WatchExperimentRequest(experiment_id=finished_id),
        "CancelExperiment": orchestrator_pb2.CancelExperimentRequest(experiment_id=finished_id),
        "CreateExperiment": orchestrator_pb2.CreateExperimentRequest(agent=agent, dataset=datasets.PHOTOS,
                                                                     device=cpu, max_attempts=1),
        "RunExperiment": worker_pb2.RunExperimentRequest(experiment_id="fuzz", attempt=1, agent=agent,
                                                         dataset=dataset, device=cpu),
        "Encode": worker_pb2.EncodeRequest(agent=agent, image=image, device=cpu),
        "Decode": worker_pb2.DecodeRequest(agent=agent, bitstream=b"\x00\x08\x00\x08", device=cpu),
    }


def _mutated(template: Message) -> st.SearchStrategy[Message]:
    """``template`` with one of its fields set to a hostile value."""
    descriptor = template.DESCRIPTOR

    def apply(setter: Callable[[Message], None]) -> Message:
        msg = type(template)()
        msg.CopyFrom(template)
        setter(msg)
        return msg

    fields: st.SearchStrategy[FieldDescriptor] = st.sampled_from(list(descriptor.fields))
    return fields.flatmap(lambda fd: _setter(fd, 0)).map(apply)


def payload_strategy(method: MethodDescriptor, template: Message | None = None) -> st.SearchStrategy[list[bytes]]:
    """The request messages of one call, serialized (a list: a client stream may send several);
    one in eight is bytes that do not decode as the request type. With a ``template`` (a valid
    request), half are the template with one field replaced."""
    messages = message_strategy(method.input_type)
    if template is not None:
        messages = st.one_of(messages, _mutated(template))
    encoded = messages.map(lambda m: m.SerializeToString())
    undecodable = st.sampled_from([b"\xff\xff\xff", b"\x0a\xff\xff\xff\x0f", b"\x08" * 11, b"\x12\x05abc"])
    one = st.one_of(encoded, encoded, encoded, encoded, encoded, encoded, encoded, undecodable)
    if method.client_streaming:
        return st.lists(one, max_size=3)
    return one.map(lambda b: [b])


@dataclass
class FuzzOutcome:
    """The counts of chaos (b).

    Attributes:
        calls: calls made, by ``Service/Method``.
        codes: status codes seen, by name.
        bad: calls that ended UNKNOWN, INTERNAL or past :data:`HANG_S` (``method: code: details``).
        crashed: services whose process exited during the fuzz.
        experiments: experiments the fuzz created.
        finished: of those, terminal without help.
        waiting_cancelled: of those, waiting with a stated reason, then cancelled (and CANCELLED).
        unfinishable: of those, neither (ids).
        wall_s: duration.
    """

    calls: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    experiments: int = 0
    finished: int = 0
    waiting_cancelled: int = 0
    unfinishable: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """No bad status, no crash, no experiment that cannot finish."""
        return not (self.bad or self.crashed or self.unfinishable)


async def _call(channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor,
                payload: list[bytes]) -> tuple[grpc.StatusCode, str]:
    """One raw call (the bytes as drawn), its responses read to the end; its status and details."""
    path = f"/{service.full_name}/{method.name}"
    raw: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
    try:
        async with asyncio.timeout(HANG_S + 5.0):  # a client-side guard should gRPC's deadline not fire
            if method.client_streaming:
                async def requests() -> AsyncIterator[bytes]:
                    for item in payload:
                        yield item
                if method.server_streaming:
                    call: Any = channel.stream_stream(path, **raw)(requests(), timeout=HANG_S)
                else:
                    await channel.stream_unary(path, **raw)(requests(), timeout=HANG_S)
                    return grpc.StatusCode.OK, ""
            elif method.server_streaming:
                call = channel.unary_stream(path, **raw)(payload[0], timeout=HANG_S)
            else:
                await channel.unary_unary(path, **raw)(payload[0], timeout=HANG_S)
                return grpc.StatusCode.OK, ""
            count = 0
            async for _ in call:
                count += 1
                if count >= MAX_STREAM_RESPONSES:
                    call.cancel()
                    break
            return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), (exc.details() or "")[:300]
    except TimeoutError:
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {HANG_S + 5.0:g} s"


def _fuzz_method(loop: asyncio.AbstractEventLoop, channel: grpc.aio.Channel, service: ServiceDescriptor,
                 method: MethodDescriptor, examples: int, outcome: FuzzOutcome, seed: int,
                 template: Message | None) -> None:
    """Runs hypothesis on one method (in a thread; each call runs on ``loop``)."""
    name = f"{service.name}/{method.name}"

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed == 0,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(payload_strategy(method, template))
    def check(payload: list[bytes]) -> None:
        code, details = asyncio.run_coroutine_threadsafe(_call(channel, service, method, payload), loop).result()
        outcome.calls[name] += 1
        outcome.codes[code.name] += 1
        if code in BAD_CODES:
            outcome.bad.append(f"{name}: {code.name}: {details}")

    check()


async def run_fuzz(root: Path, examples: int = 40, seed: int = 0, finish_s: float = 120.0,
                   database_url: str = "") -> FuzzOutcome:
    """Runs chaos (b) against a fresh orchestrator and worker under ``root``; returns its counts.

    Args:
        root: a fresh directory for the services.
        examples: hypothesis examples per RPC.
        seed: 0 for hypothesis's derandomized (repeatable) run, else a random one.
        finish_s: how long the experiments the fuzz created may take to finish.
        database_url: the orchestrator's store (``--database-url``); "": its SQLite file.
    """
    started = time.monotonic()
    outcome = FuzzOutcome()
    loop = asyncio.get_running_loop()
    async with Cluster(root, slots=2, orchestrator_args=database_args(database_url)) as cluster:
        await cluster.start(workers=1)
        token = auth.read_secret_file(cluster.token_file)
        worker = cluster.workers[0]
        targets = {SERVICES[0].name: cluster.address, SERVICES[1].name: worker.address}
        async with Client(cluster.address, token_file=cluster.token_file) as client:
            finished = await client.submit(bundles.bundle_from_dir(TRIVIAL_AGENT), dataset=datasets.PHOTOS)
            async for _ in client.watch(finished.experiment_id):
                pass  # to its terminal event
        templates = valid_requests(finished.experiment_id)
        for service in SERVICES:
            async with rpc.channel(targets[service.name], token) as channel:
                for method in service.methods:
                    await asyncio.to_thread(_fuzz_method, loop, channel, service, method, examples, outcome, seed,
                                            templates.get(method.name))
        outcome.crashed = [s.name for s in (cluster.orchestrator, worker)
                           if s is not None and s.process.returncode is not None]
        if cluster.orchestrator is not None and cluster.orchestrator.process.returncode is None:
            async with Client(cluster.address, token_file=cluster.token_file) as client:
                await _check_finishable(client, outcome, finish_s)
    outcome.wall_s = time.monotonic() - started
    return outcome


async def _check_finishable(client: Client, outcome: FuzzOutcome, finish_s: float) -> None:
    """Every experiment the fuzz created ends: on its own, or (waiting with a reason) by cancelling."""
    stored = await client.list(limit=100_000)
    outcome.experiments = len(stored)
    deadline = time.monotonic() + finish_s
    pending = {e.experiment_id for e in stored}
    while pending:
        current = [await client.get(i) for i in sorted(pending)]
        waiting = [e for e in current if e.state == states.QUEUED and e.waiting_reason]
        for exp in current:
            if exp.state in states.TERMINAL_STATES:
                outcome.finished += 1
                pending.discard(exp.experiment_id)
        if pending and (time.monotonic() > deadline or len(waiting) == len(pending)):
            for exp in waiting:
                if (await client.cancel(exp.experiment_id)).state == states.CANCELLED:
                    outcome.waiting_cancelled += 1
                    pending.discard(exp.experiment_id)
            outcome.unfinishable = sorted(pending)
            return
        await asyncio.sleep(0.5)
