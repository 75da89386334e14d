"""The worker's handle on one sandbox child: start, framed requests with limits, kill.

A child serves one role (encoder or decoder) of one agent. Requests and responses are framed
protobuf over a socketpair (the child's stdout/stderr stay free for the agent's prints, which
stream back as log lines). Each call has a wall-clock limit; hitting it kills the child's whole
process tree and raises TIMEOUT with the phase, the limit and the elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from codecbench import errors, framing
from codecbench.v1 import errors_pb2, experiment_pb2, sandbox_pb2, worker_pb2
from sandbox import isolation

MiB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Per-process limits of an agent child.

    Attributes:
        memory_bytes: RLIMIT_AS for CPU runs (CUDA reserves large virtual ranges, so CUDA runs
            rely on CUDA's out-of-memory error instead).
        cpu_s: RLIMIT_CPU in seconds of CPU time.
        file_bytes: RLIMIT_FSIZE, the largest file the agent may write.
        open_files: RLIMIT_NOFILE.
        max_bitstream_bytes: largest bitstream (or seed encoding dict) accepted.
        output_bytes: stdout+stderr kept per experiment; the rest is dropped after a marker line.
        startup_s: how long the sandbox runtime may take to start (interpreter, torch import)
            before it reports ready; not charged to the agent's load limit.
    """

    memory_bytes: int = 8 * 1024 * MiB
    cpu_s: int = 3600
    file_bytes: int = 256 * MiB
    open_files: int = 256
    max_bitstream_bytes: int = 48 * MiB
    output_bytes: int = 1 * MiB
    startup_s: float = 120.0

    @property
    def max_frame_bytes(self) -> int:
        # A frame carries one image or one bitstream plus a little framing.
        return max(self.max_bitstream_bytes, 64 * MiB) + MiB


OutputCallback = Callable[[int, str, bool], None]  # (LogStream, text, truncated)


class OutputBudget:
    """Caps the agent output kept for one experiment and emits one truncation marker."""

    def __init__(self, limit_bytes: int, emit: OutputCallback) -> None:
        self.remaining = limit_bytes
        self.limit_bytes = limit_bytes
        self._emit = emit
        self._marked = False

    def line(self, stream: int, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        if size <= self.remaining:
            self.remaining -= size
            self._emit(stream, text, False)
        elif not self._marked:
            self._marked = True
            self.remaining = 0
            self._emit(
                experiment_pb2.LOG_STREAM_SYSTEM,
                f"[output truncated: more than {self.limit_bytes} bytes of agent output; the rest is dropped]",
                True,
            )


_MAX_LINE = 16 * 1024


async def _pump(reader: asyncio.StreamReader, stream: int, budget: OutputBudget) -> None:
    """Reads a child's stdout/stderr to the end, as lines, through the budget."""
    pending = b""
    while chunk := await reader.read(64 * 1024):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            budget.line(stream, line[:_MAX_LINE].decode("utf-8", "replace"))
        if len(pending) > _MAX_LINE:
            budget.line(stream, pending[:_MAX_LINE].decode("utf-8", "replace"))
            pending = b""
    if pending:
        budget.line(stream, pending[:_MAX_LINE].decode("utf-8", "replace"))


class SandboxProcess:
    """One running agent child. Use :meth:`start`, then :meth:`call`; always :meth:`kill`."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, pumps: list[asyncio.Task[None]], limits: SandboxLimits,
                 wrapped: bool = False) -> None:
        self._proc = proc
        self._reader = reader
        self._writer = writer
        self._pumps = pumps
        self._limits = limits
        self._timed_out = False
        # Under bwrap the process we wait for is bwrap, which exits with 128 + N when the agent's
        # process is killed by signal N.
        self._wrapped = wrapped

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(
        cls,
        workdir: Path,
        limits: SandboxLimits,
        budget: OutputBudget,
        isolation_mode: int,
        hidden: Sequence[Path] = (),
        gpu: bool = False,
    ) -> SandboxProcess:
        """Starts ``python -m sandbox.child`` under the given isolation and waits until its
        runtime reports ready (so the agent's load limit does not pay for the interpreter start).

        Raises:
            errors.InternalError: the process could not be started, or its runtime did not start.
        """
        parent_sock, child_sock = socket.socketpair()
        command = [
            # -P: the cwd (the agent's bundle) must not come first on sys.path, or a bundle file
            # named like a module of the runtime (sandbox/, numpy.py, torch/) would replace it.
            sys.executable, "-P", "-m", "sandbox.child",
            "--fd", str(child_sock.fileno()),
            "--max-frame-bytes", str(limits.max_frame_bytes),
            "--max-bitstream-bytes", str(limits.max_bitstream_bytes),
            "--memory-bytes", str(0 if gpu else limits.memory_bytes),
            "--cpu-s", str(limits.cpu_s),
            "--file-bytes", str(limits.file_bytes),
            "--open-files", str(limits.open_files),
        ]
        env = isolation.child_environment(workdir)
        argv = isolation.wrap_command(command, isolation_mode, workdir, hidden, gpu, env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_sock.fileno(),),
                start_new_session=True,  # its own process group, killed as a whole
                cwd=str(workdir),
                env=env,
            )
        except OSError as exc:
            parent_sock.close()
            raise errors.InternalError(f"could not start sandbox process: {exc}") from exc
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_connection(sock=parent_sock, limit=limits.max_frame_bytes)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(_pump(proc.stdout, experiment_pb2.LOG_STREAM_STDOUT, budget)),
            asyncio.create_task(_pump(proc.stderr, experiment_pb2.LOG_STREAM_STDERR, budget)),
        ]
        process = cls(proc, reader, writer, pumps, limits, wrapped=isolation_mode == worker_pb2.ISOLATION_BWRAP)
        try:
            await process._wait_ready()
        except BaseException:
            await process.close()
            raise
        return process

    async def _wait_ready(self) -> None:
        """Waits for the runtime's ready frame (an empty ``SandboxResponse``)."""
        try:
            async with asyncio.timeout(self._limits.startup_s):
                ready = await framing.read_frame_async(
                    self._reader, sandbox_pb2.SandboxResponse, self._limits.max_frame_bytes
                )
        except TimeoutError:
            raise errors.InternalError(
                f"the sandbox runtime did not start within {self._limits.startup_s:g} s", phase=errors_pb2.PHASE_LOAD
            ) from None
        except (framing.FrameError, ConnectionResetError):
            ready = None
        if ready is None:
            ended = await self._crash(errors_pb2.PHASE_LOAD)
            raise errors.InternalError(f"the sandbox runtime failed to start: {ended}", phase=errors_pb2.PHASE_LOAD)
        if ready.WhichOneof("response") is not None:
            raise errors.InternalError(
                f"the sandbox runtime sent {ready.WhichOneof('response')} instead of its ready frame",
                phase=errors_pb2.PHASE_LOAD,
            )

    async def call(
        self, request: sandbox_pb2.SandboxRequest, phase: int, timeout_s: float
    ) -> tuple[sandbox_pb2.SandboxResponse, float]:
        """Sends one request and waits for its response.

        Returns:
            The response and the call's wall time in ms, measured here in the worker (the agent
            cannot change it by patching its own clock).

        Raises:
            errors.Timeout: no response within ``timeout_s``; the child is killed.
            errors.SandboxCrash: the child died (exit code or signal named).
            errors.InvalidOutput: the child sent an oversized or unparsable frame.
            errors.CodecbenchError: the error the child reported (agent exception, ...).
        """
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                self._writer.write(framing.encode_frame(request))
                await self._writer.drain()
                response = await framing.read_frame_async(
                    self._reader, sandbox_pb2.SandboxResponse, self._limits.max_frame_bytes
                )
        except TimeoutError:
            elapsed = time.perf_counter() - start
            self.kill()
            raise errors.Timeout(
                f"{errors.phase_name(phase)} did not finish within {timeout_s:g} s (killed after {elapsed:.2f} s)",
                phase=phase, limit_s=timeout_s, elapsed_s=elapsed,
            ) from None
        except framing.FrameError as exc:
            self.kill()
            raise errors.InvalidOutput(
                f"the agent process sent a malformed response: {exc}", phase=phase,
                expected="a framed SandboxResponse", actual=str(exc),
            ) from exc
        except (ConnectionResetError, BrokenPipeError):
            response = None
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if response is None:
            raise await self._crash(phase)
        if response.WhichOneof("response") == "error":
            raise errors.from_proto(response.error)
        return response, elapsed_ms

    async def _crash(self, phase: int) -> errors.CodecbenchError:
        """The error for a child that closed its socket: how it ended, once it has ended."""
        try:
            async with asyncio.timeout(5):
                code = await self._proc.wait()
        except TimeoutError:
            self.kill()
            code = await self._proc.wait()
        where = errors.phase_name(phase)
        sig = -code if code < 0 else 0
        if self._wrapped and code - 128 in signal.valid_signals():
            sig = code - 128  # bwrap's report of a signal death (there is no other way to tell)
        if sig:
            if sig == signal.SIGXCPU:
                return errors.Timeout(
                    f"the agent used up its CPU time limit in {where} (SIGXCPU)",
                    phase=phase, limit_s=float(self._limits.cpu_s), signal=sig,
                )
            try:
                name = signal.Signals(sig).name
            except ValueError:  # real-time signals have no name
                name = f"SIGRT {sig}"
            return errors.SandboxCrash(
                f"the agent process was killed by signal {sig} ({name}) during {where}",
                phase=phase, signal=sig,
            )
        return errors.SandboxCrash(
            f"the agent process exited with code {code} during {where}", phase=phase, exit_code=code
        )

    def kill(self) -> None:
        """SIGKILLs the child's whole process group (under bwrap, its PID namespace dies with it)."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Kills the child, reaps it and drains its output."""
        self.kill()
        self._writer.close()
        await self._proc.wait()
        # A grandchild that escaped the group could hold the pipes open: stop reading after a while.
        _, pending = await asyncio.wait(self._pumps, timeout=2.0)
        for task in pending:
            task.cancel()


__all__ = ["OutputBudget", "SandboxLimits", "SandboxProcess"]
