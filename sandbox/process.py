"""The worker's handle on one agent process: start, framed requests with limits, kill.

A child serves one role (encoder or decoder) of one agent. Requests and responses are framed
protobuf over a socketpair (the child's stdout/stderr stay free for the agent's prints, which
stream back as log lines). Each call has a wall-clock limit; hitting it kills the child's whole
process tree and raises TIMEOUT with the phase, the limit and the elapsed time.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from codecbench import datasets, errors, framing
from codecbench.v1 import errors_pb2, experiment_pb2, sandbox_pb2, types_pb2
from sandbox import cgroups, identity
from sandbox.launchers import Launched, Launcher

MiB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Per-process limits of an agent child.

    Attributes:
        memory_bytes: RLIMIT_AS for CPU runs (CUDA reserves large virtual ranges, so CUDA runs
            rely on CUDA's out-of-memory error instead), and the memory cgroup's limit for all runs.
        cpu_s: RLIMIT_CPU in seconds of CPU time.
        file_bytes: RLIMIT_FSIZE, the largest file the agent may write.
        open_files: RLIMIT_NOFILE.
        max_bitstream_bytes: largest bitstream (or seed encoding dict) accepted.
        output_bytes: stdout+stderr kept per experiment; the rest is dropped after a marker line.
        startup_s: how long the sandbox runtime may take to start (interpreter, torch import)
            before it reports ready; not charged to the agent's load limit.
        max_processes: the pids cgroup's limit (threads count): stops fork bombs.
    """

    memory_bytes: int = 8 * 1024 * MiB
    cpu_s: int = 3600
    file_bytes: int = 256 * MiB
    open_files: int = 256
    max_bitstream_bytes: int = 48 * MiB
    output_bytes: int = 1 * MiB
    startup_s: float = 120.0
    max_processes: int = 256

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame read from the agent process (and by it), in bytes: one uint8 RGB image
        or reconstruction at the pixel limit (:data:`codecbench.datasets.MAX_RGB_BYTES`), or one
        bitstream, plus 1 MiB for the framing and a seed decoder's other entries."""
        # The sandbox converts float reconstructions to uint8 before they are framed
        # (codecbench.reconstructions), so uint8 is the largest form a reconstruction takes here.
        # The 64 MiB floor: an agent bundle (weights included) arrives in one load frame.
        return max(self.max_bitstream_bytes, datasets.MAX_RGB_BYTES, 64 * MiB) + MiB

    def rlimits(self, gpu: bool) -> sandbox_pb2.SandboxRlimits:
        """The limits the agent process applies to itself before any agent code runs."""
        return sandbox_pb2.SandboxRlimits(
            memory_bytes=0 if gpu else self.memory_bytes, cpu_s=self.cpu_s, file_bytes=self.file_bytes,
            open_files=self.open_files, max_frame_bytes=self.max_frame_bytes,
            max_bitstream_bytes=self.max_bitstream_bytes,
        )


OutputCallback = Callable[[experiment_pb2.LogStream.ValueType, str, bool], None]  # (stream, text, truncated)


class OutputBudget:
    """Caps the agent output kept for one experiment and emits one truncation marker."""

    def __init__(self, limit_bytes: int, emit: OutputCallback) -> None:
        self.remaining = limit_bytes
        self.limit_bytes = limit_bytes
        self._emit = emit
        self._marked = False

    def line(self, stream: experiment_pb2.LogStream.ValueType, text: str) -> None:
        """Passes one line on while the budget lasts; past it, one truncation marker, then nothing."""
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


async def _pump(
    reader: asyncio.StreamReader, stream: experiment_pb2.LogStream.ValueType, budget: OutputBudget
) -> None:
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


# The only error kinds an agent process may report. TIMEOUT, CANCELLED, WORKER_LOST, INTERNAL and
# SANDBOX_CRASH are the worker's findings: coming from the agent's process they would be forged
# (an agent can raise codecbench's exceptions, or write its own frames into its socket).
AGENT_KINDS = frozenset({
    errors_pb2.ERROR_KIND_AGENT_LOAD_ERROR, errors_pb2.ERROR_KIND_SIGNATURE_MISMATCH,
    errors_pb2.ERROR_KIND_AGENT_EXCEPTION, errors_pb2.ERROR_KIND_INVALID_OUTPUT, errors_pb2.ERROR_KIND_MEMORY_LIMIT,
})
_MAX_FRAMES = 20


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def error_from_agent(reported: errors_pb2.Error) -> errors_pb2.Error:
    """An error reported by an agent process, made safe to pass on: only agent kinds (anything
    else becomes AGENT_EXCEPTION saying what was claimed), never retryable, none of the fields
    the worker measures itself, and every text bounded so it fits a gRPC status."""
    error = errors_pb2.Error(
        kind=reported.kind, phase=reported.phase, message=_clip(reported.message, 4000),
        exception_type=_clip(reported.exception_type, 200), location=_clip(reported.location, 300),
        expected=_clip(reported.expected, 500), actual=_clip(reported.actual, 500),
    )
    if error.kind not in AGENT_KINDS:
        error.message = f"the agent process reported {errors.kind_name(reported.kind)} itself: {error.message}"
        error.kind = errors_pb2.ERROR_KIND_AGENT_EXCEPTION
    for frame in list(reported.frames)[-_MAX_FRAMES:]:
        error.frames.add(file=_clip(frame.file, 200), line=frame.line, function=_clip(frame.function, 100),
                         code=_clip(frame.code, 200))
    return error


class SandboxProcess:
    """One running agent process. Use :meth:`start`, then :meth:`call`; always :meth:`close`."""

    def __init__(self, launched: Launched, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 pumps: list[asyncio.Task[None]], limits: SandboxLimits, cgroup: cgroups.AgentCgroup | None) -> None:
        self._launched = launched
        self._reader = reader
        self._writer = writer
        self._pumps = pumps
        self._limits = limits
        self._cgroup = cgroup

    @property
    def pid(self) -> int:
        """The agent process's PID as the worker sees it."""
        return self._launched.pid

    @classmethod
    async def start(cls, launcher: Launcher, limits: SandboxLimits, budget: OutputBudget, gpu: bool = False,
                    uid: int = identity.AGENT_UID) -> SandboxProcess:
        """Starts an agent process, waits until its runtime is ready and puts it in its cgroup,
        all before any agent code can run (so the load limit does not pay for the start).
        ``uid``: whom it runs as (:func:`sandbox.identity.uid_for` its role).

        Raises:
            errors.InternalError: the process could not be started, or its runtime did not start.
        """
        # The cgroup is made in a thread while the process starts (mkdir and limit writes in cgroupfs
        # took ~5-13 ms, as long as the fork itself); the process joins it before it is sent any
        # request, so no agent code runs outside it either way.
        creating = asyncio.ensure_future(asyncio.to_thread(cgroups.create, limits.memory_bytes, limits.max_processes))
        try:
            launched = await launcher.launch(limits.rlimits(gpu), limits.startup_s, uid)
        except BaseException:
            created = await asyncio.shield(creating)
            if created is not None:
                await created.remove()
            raise
        cgroup = await asyncio.shield(creating)
        try:
            if cgroup is not None:
                # In a thread: a write to cgroup.procs waits for the kernel's cgroup migration (~10 ms
                # measured, in the file's close), which on the event loop held up every other slot.
                await asyncio.to_thread(cgroup.add, launched.pid)
            reader, writer = await asyncio.open_connection(sock=launched.sock, limit=limits.max_frame_bytes)
        except BaseException:
            launched.kill()
            launched.sock.close()
            if cgroup is not None:
                await cgroup.remove()
            raise
        pumps = [
            asyncio.create_task(_pump(launched.stdout, experiment_pb2.LOG_STREAM_STDOUT, budget)),
            asyncio.create_task(_pump(launched.stderr, experiment_pb2.LOG_STREAM_STDERR, budget)),
        ]
        return cls(launched, reader, writer, pumps, limits, cgroup)

    async def call(
        self, request: sandbox_pb2.SandboxRequest, expect: str, phase: types_pb2.Phase.ValueType, timeout_s: float
    ) -> tuple[sandbox_pb2.SandboxResponse, float]:
        """Sends one request and waits for its response, which must be ``expect`` or an error.

        Returns:
            The response and the call's wall time in ms, measured here in the worker (the agent
            cannot change it by patching its own clock).

        Raises:
            errors.Timeout: no response within ``timeout_s``; the process is killed.
            errors.MemoryLimit: the memory cgroup killed the process.
            errors.SandboxCrash: the process died (exit code or signal named).
            errors.InvalidOutput: the process sent an oversized or unparsable frame.
            errors.CodecbenchError: the error the process reported (agent exception, ...).
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
        kind = response.WhichOneof("response")
        if kind == "error":
            raise errors.from_proto(error_from_agent(response.error))
        if kind != expect:
            self.kill()
            raise errors.InvalidOutput(
                f"the agent process answered {kind or 'nothing'} to a {errors.phase_name(phase)} request",
                phase=phase, expected=expect, actual=str(kind),
            )
        return response, elapsed_ms

    async def _crash(self, phase: types_pb2.Phase.ValueType) -> errors.CodecbenchError:
        """The error for a process that closed its socket: how it ended, once it has ended."""
        try:
            async with asyncio.timeout(5):
                ended = await self._launched.wait()
        except TimeoutError:
            self.kill()
            ended = await self._launched.wait()
        where = errors.phase_name(phase)
        if self._cgroup is not None and self._cgroup.oom_killed():
            return errors.MemoryLimit(
                f"the agent process exceeded its memory limit of {self._limits.memory_bytes} bytes during {where} "
                "and was killed",
                phase=phase, signal=ended.signal or 0,
            )
        sig = ended.signal
        if sig:
            if sig == signal.SIGXCPU:
                return errors.Timeout(
                    f"the agent used up its CPU time limit of {self._limits.cpu_s} s in {where} (SIGXCPU)",
                    phase=phase, limit_s=float(self._limits.cpu_s), signal=sig,
                )
            try:
                name = signal.Signals(sig).name
            except ValueError:  # real-time signals have no name
                name = f"SIGRT {sig}"
            return errors.SandboxCrash(
                f"the agent process was killed by signal {sig} ({name}) during {where}", phase=phase, signal=sig
            )
        code = ended.exit_code if ended.exit_code is not None else -1
        return errors.SandboxCrash(
            f"the agent process exited with code {code} during {where}", phase=phase, exit_code=code
        )

    def kill(self) -> None:
        """SIGKILLs the agent process and everything it started."""
        self._launched.kill()

    async def end(self, timeout_s: float = 10.0) -> None:
        """Kills the process and returns once it and every process it started are gone.

        With a cgroup: once the cgroup's pids count is 0 (every process reaped, its memory and
        files released), polled every millisecond; that comes ~30 ms before the launcher's exit
        report on a loaded machine (the report waits on the init's own exit and the namespaces'
        teardown, which no agent code can use). Without a cgroup: at the exit report. The rest
        (the report, the output, the cgroup itself) is for :meth:`close`.

        Raises:
            errors.InternalError: the processes were still there after ``timeout_s``.
        """
        self.kill()
        if self._cgroup is None:
            await self._launched.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._cgroup.released():
            if loop.time() > deadline:
                raise errors.InternalError(
                    f"agent process {self.pid} and its children were still running {timeout_s:g} s after SIGKILL"
                )
            self._cgroup.kill_all()
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        """Kills the process, waits for its end, drains its output, frees its cgroup."""
        self.kill()
        self._writer.close()
        await self._launched.wait()
        # A process that escaped could hold the pipes open: stop reading after a while.
        _, pending = await asyncio.wait(self._pumps, timeout=2.0)
        for task in pending:
            task.cancel()
        for close in self._launched.closers:
            close()
        if self._cgroup is not None:
            await self._cgroup.remove()


__all__ = ["OutputBudget", "SandboxLimits", "SandboxProcess"]
