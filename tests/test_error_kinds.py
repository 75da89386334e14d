"""Each error kind, produced by a tiny hostile agent (tests/agents/<name>) on a real worker.

Every failure must name where it happened (file and line, the parameters, the phase, the limit,
the exit code or signal), and the same worker must still run a good agent right after it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
import torch
from helpers import agent_bundle, eventually
from helpers.worker import (
    TINY_SIZES,
    agent_processes,
    alive,
    assert_good_agent_runs,
    error_of,
    line_of,
    request,
    run,
)

from codecbench import errors, tensors
from codecbench.v1 import errors_pb2, experiment_pb2, types_pb2, worker_pb2

K = errors_pb2
FIRST_SHAPE = [3, *TINY_SIZES[0]]  # what the decoder must return for the first image


@dataclass(frozen=True)
class Case:
    agent: str
    kind: int
    phase: int
    points: list[dict] = field(default_factory=lambda: [{"quality": 50}])
    timeouts: types_pb2.Timeouts | None = None
    location: Callable[[], str] | None = None  # the expected "file:line", computed from the agent's source
    contains: tuple[str, ...] = ()  # substrings of describe(error) (message, expected, actual, type)
    check: Callable[[errors_pb2.Error], None] | None = None
    stdout: str = ""  # a line the agent prints, which must arrive before the terminal event


def _frames_in_agent_files(error: errors_pb2.Error) -> None:
    assert error.frames, "no frames"
    assert all(f.file == "codec.py" for f in error.frames), [f.file for f in error.frames]


def _exception_frames(error: errors_pb2.Error) -> None:
    a = "exc_encode"
    got = [(f.file, f.line, f.function) for f in error.frames]
    assert got == [
        ("codec.py", line_of(a, "return bytes([int(_scale(image))])"), "encode"),
        ("codec.py", line_of(a, "return image.numel() / 0"), "_scale"),
    ]
    assert error.frames[-1].code == "return image.numel() / 0"
    assert (error.image_index, error.image_name) == (0, "tiny0.png")


def _timeout(limit: float, point_expected: bool) -> Callable[[errors_pb2.Error], None]:
    def check(error: errors_pb2.Error) -> None:
        assert error.limit_s == limit
        assert error.elapsed_s >= limit
        # In the load phase, a point index means the limit ran out in Codec(device, **params), the
        # agent's own code, not while the sandbox runtime was starting.
        assert error.HasField("point_index") == point_expected
    return check


def _exit_code(code: int) -> Callable[[errors_pb2.Error], None]:
    def check(error: errors_pb2.Error) -> None:
        assert error.HasField("exit_code") and error.exit_code == code
        assert not error.HasField("signal")
    return check


def _signal(sig: int) -> Callable[[errors_pb2.Error], None]:
    def check(error: errors_pb2.Error) -> None:
        assert error.HasField("signal") and error.signal == sig
        assert not error.HasField("exit_code")
    return check


CASES = [
    Case("load_syntax_error", K.ERROR_KIND_AGENT_LOAD_ERROR, types_pb2.PHASE_LOAD,
         location=lambda: f"codec.py:{line_of('load_syntax_error', 'return b')}",
         contains=("SyntaxError",), check=_frames_in_agent_files),
    Case("load_missing_module", K.ERROR_KIND_AGENT_LOAD_ERROR, types_pb2.PHASE_LOAD,
         location=lambda: f"codec.py:{line_of('load_missing_module', 'import codecbench_no_such_module_xyz')}",
         contains=("ModuleNotFoundError", "codecbench_no_such_module_xyz"), check=_frames_in_agent_files),
    Case("sig_init_no_quality", K.ERROR_KIND_SIGNATURE_MISMATCH, types_pb2.PHASE_LOAD,
         location=lambda: f"codec.py:{line_of('sig_init_no_quality', 'def __init__')}",
         contains=("quality", "Codec(device, **params)", "Codec(device)")),
    # The old runner's bug: the decoder names its parameters (data, device), not (device, encoding_data).
    Case("sig_seed_wrong_names", K.ERROR_KIND_SIGNATURE_MISMATCH, types_pb2.PHASE_LOAD, points=[],
         location=lambda: f"agent.py:{line_of('sig_seed_wrong_names', 'def run_decoding_agent', 'agent.py')}",
         contains=("run_decoding_agent(device, encoding_data)", "run_decoding_agent(data, device)")),
    Case("sig_no_contract", K.ERROR_KIND_SIGNATURE_MISMATCH, types_pb2.PHASE_LOAD,
         contains=("class Codec", "run_encoding_agent", "compress, decompress")),
    Case("exc_encode", K.ERROR_KIND_AGENT_EXCEPTION, types_pb2.PHASE_ENCODE,
         location=lambda: f"codec.py:{line_of('exc_encode', 'return image.numel() / 0')}",
         contains=("ZeroDivisionError", "division by zero"), check=_exception_frames),
    Case("exc_system_exit", K.ERROR_KIND_AGENT_EXCEPTION, types_pb2.PHASE_ENCODE,
         location=lambda: f"codec.py:{line_of('exc_system_exit', 'sys.exit(5)')}",
         contains=("SystemExit: 5",)),
    Case("exc_keyboard_interrupt", K.ERROR_KIND_AGENT_EXCEPTION, types_pb2.PHASE_ENCODE,
         location=lambda: f"codec.py:{line_of('exc_keyboard_interrupt', 'raise KeyboardInterrupt')}",
         contains=("KeyboardInterrupt: stop",)),
    # Prints from a thread until it is killed: every line must come before the terminal event.
    Case("exc_chatty", K.ERROR_KIND_AGENT_EXCEPTION, types_pb2.PHASE_ENCODE,
         location=lambda: f"codec.py:{line_of('exc_chatty', 'raise RuntimeError')}",
         contains=("RuntimeError", "chatty agent gives up"), stdout="tick 0"),
    Case("out_encode_str", K.ERROR_KIND_INVALID_OUTPUT, types_pb2.PHASE_ENCODE, contains=("bytes", "str")),
    Case("out_wrong_shape", K.ERROR_KIND_INVALID_OUTPUT, types_pb2.PHASE_DECODE,
         contains=("[3, 8, 8]", str(FIRST_SHAPE))),
    Case("out_nan", K.ERROR_KIND_INVALID_OUTPUT, types_pb2.PHASE_DECODE, contains=("NaN",)),
    Case("out_list", K.ERROR_KIND_INVALID_OUTPUT, types_pb2.PHASE_DECODE, contains=("torch.Tensor", "list")),
    # Agent-reported values are bounded (red-team H1): 257 entries are one too many.
    Case("hostile_big_report", K.ERROR_KIND_INVALID_OUTPUT, types_pb2.PHASE_DECODE, points=[{"count": 257}],
         contains=("257 entries", "at most 256 entries and 65536 bytes")),
    Case("timeout_encode", K.ERROR_KIND_TIMEOUT, types_pb2.PHASE_ENCODE, timeouts=types_pb2.Timeouts(encode_s=1),
         contains=("encode",), check=_timeout(1.0, point_expected=True)),
    Case("timeout_load", K.ERROR_KIND_TIMEOUT, types_pb2.PHASE_LOAD, timeouts=types_pb2.Timeouts(load_s=1),
         contains=("load",), check=_timeout(1.0, point_expected=True)),
    Case("crash_exit", K.ERROR_KIND_SANDBOX_CRASH, types_pb2.PHASE_ENCODE, contains=("code 3",), check=_exit_code(3),
         stdout="crash_exit: last words before os._exit(3)"),
    Case("crash_segfault", K.ERROR_KIND_SANDBOX_CRASH, types_pb2.PHASE_ENCODE,
         contains=("SIGSEGV",), check=_signal(signal.SIGSEGV)),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c.agent for c in CASES])
async def test_error_kind(worker_stub, case: Case) -> None:
    events, terminal = await run(
        worker_stub, request(case.agent, points=case.points, timeouts=case.timeouts)
    )
    error = error_of(terminal)
    text = errors.describe(error) + f" expected={error.expected!r} actual={error.actual!r}"
    assert errors.kind_name(error.kind) == errors.kind_name(case.kind), text
    assert errors.phase_name(error.phase) == errors.phase_name(case.phase), text
    assert not error.retryable
    if case.location is not None:
        assert error.location == case.location(), text
    for part in case.contains:
        assert part in text, f"{part!r} not in {text}"
    if case.phase in (types_pb2.PHASE_ENCODE, types_pb2.PHASE_DECODE):
        assert (error.point_index, error.image_index, error.image_name) == (0, 0, "tiny0.png")
    if case.check is not None:
        case.check(error)
    assert not any(e.HasField("image_result") for e in events)
    if case.stdout:  # run() has checked that nothing follows the terminal event
        logs = [(e.log.stream, e.log.text) for e in events if e.HasField("log")]
        assert (experiment_pb2.LOG_STREAM_STDOUT, case.stdout) in logs, logs[-20:]
    # The worker is unharmed: a good agent runs right after on the same worker.
    await assert_good_agent_runs(worker_stub)


@pytest.mark.timeout(120)
async def test_encode_call_failure_carries_the_typed_error(worker_stub) -> None:
    """A failing unary Encode returns FAILED_PRECONDITION (not ABORTED, which generic retry policies
    retry) whose details carry the same ``codecbench.v1.Error``."""
    pixels = torch.zeros(3, 16, 16, dtype=torch.uint8)
    call = worker_stub.Encode(worker_pb2.EncodeRequest(
        agent=agent_bundle("exc_encode"), image=tensors.from_torch(pixels), device=types_pb2.DEVICE_CPU
    ))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "AGENT_EXCEPTION" in info.value.details() and "division by zero" in info.value.details()
    error = errors.error_from_rpc(info.value)
    assert error is not None and error.kind == K.ERROR_KIND_AGENT_EXCEPTION
    assert error.location == f"codec.py:{line_of('exc_encode', 'return image.numel() / 0')}"
    assert error.exception_type == "ZeroDivisionError"


@pytest.mark.timeout(120)
async def test_decoder_cannot_read_what_the_encoder_left_in_memory(worker_stub) -> None:
    """The encoder keeps the image in a module global and a class attribute and sends 8 bytes; a
    decoder that found either would return the image (lossless at 8 bytes). It finds neither."""
    events, terminal = await run(worker_stub, request("cheat_memory"))
    assert terminal.HasField("result"), errors.describe(terminal.error)
    for item in terminal.result.points[0].images:
        m = item.metrics
        assert m.bytes == 8
        assert not m.lossless
        assert m.psnr_db < 20.0  # a flat grey image against a textured one
    assert not terminal.result.points[0].lossless


@pytest.mark.timeout(120)
async def test_cancelled_run_leaves_no_child_process(worker, worker_stub) -> None:
    """Cancel a RunExperiment whose encoder loops forever: every agent process is gone afterwards,
    and the worker's slot is free again."""
    before = agent_processes()
    call = worker_stub.RunExperiment(request("timeout_encode", experiment_id="cancel-me"))

    async def until_encoding() -> None:
        while True:
            response = await call.read()
            assert response is not grpc.aio.EOF, "the stream ended before the encode started"
            event = response.event
            assert not event.HasField("error"), errors.describe(event.error)
            if event.HasField("progress") and event.progress.phase == types_pb2.PHASE_ENCODE:
                return

    await asyncio.wait_for(until_encoding(), timeout=60)
    running = agent_processes() - before
    # Only the encoder runs while a point is encoded: its decoder starts once it has ended.
    assert len(running) >= 1, f"expected the encoder's process, found {running}"
    assert worker.servicer.slots_in_use >= 1

    assert call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
    await eventually(lambda: not any(alive(pid) for pid in running), timeout_s=20,
                     what=f"sandbox processes {sorted(running)} to end")
    await eventually(lambda: worker.servicer.slots_in_use == 0, timeout_s=20, what="the slot to be released")
    assert "cancel-me" not in worker.servicer.running
    await assert_good_agent_runs(worker_stub)


@pytest.mark.timeout(120)
async def test_describe_names_the_exception_type_once(worker_stub) -> None:
    """A new user's finding: "ModuleNotFoundError: importing codec: ModuleNotFoundError: No module named ..."."""
    _, terminal = await run(worker_stub, request("load_missing_module"))
    text = errors.describe(terminal.error)
    assert text.count("ModuleNotFoundError") == 1, text
    assert "importing codec: ModuleNotFoundError: No module named 'codecbench_no_such_module_xyz'" in text, text
    bare = errors_pb2.Error(kind=errors_pb2.ERROR_KIND_AGENT_EXCEPTION, exception_type="ValueError", message="bad")
    assert errors.describe(bare) == "AGENT_EXCEPTION: ValueError: bad"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("agent", "function"),
                         [("out_encode_str", "def encode"), ("out_list", "def decode"), ("out_nan", "def decode")])
async def test_invalid_output_is_located_at_the_function_that_returned_it(worker_stub, agent: str, function: str
                                                                          ) -> None:
    """A new user's finding: INVALID_OUTPUT had no location ("-" in `codecbench errors`)."""
    _, terminal = await run(worker_stub, request(agent))
    assert terminal.error.kind == errors_pb2.ERROR_KIND_INVALID_OUTPUT, errors.describe(terminal.error)
    assert terminal.error.location == f"codec.py:{line_of(agent, function)}"
