"""The runtime inside a sandbox child: ``python -m sandbox.child --fd N [limits]``.

It serves one role (encoder or decoder) of one agent over framed protobuf on the inherited
socket ``N``, and never pickles anything. Agent failures become typed ``Error`` responses;
the worker decides what they mean for the experiment. Once started, it sends one empty
``SandboxResponse`` (ready) before it reads the first request.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - imported before the agent so its import time is not charged to the agent
import torch

from codecbench import bundles, datasets, devices, errors, framing, reconstructions, tensors, values
from codecbench.v1 import errors_pb2, sandbox_pb2, types_pb2
from sandbox import contracts, identity, init, namespaces, seccomp
from sandbox.tracebacks import exception_error, safe_str

ENCODE = types_pb2.PHASE_ENCODE
DECODE = types_pb2.PHASE_DECODE
LOAD = types_pb2.PHASE_LOAD
# /proc/PID/comm of every agent process.
PROCESS_NAME = "cb-agent"


class AgentRuntime:
    """One loaded agent serving one role. Methods raise :class:`errors.CodecbenchError`."""

    def __init__(self, load: sandbox_pb2.SandboxLoad, max_bitstream_bytes: int) -> None:
        # Under bwrap or the warm template, /tmp is this process's own tmpfs.
        self.bundle_dir = Path(tempfile.mkdtemp(prefix="agent-")).resolve()
        bundles.write(load.agent, self.bundle_dir)
        os.chdir(self.bundle_dir)
        self.role = load.role
        self.device = devices.short_name(load.device)
        self.max_bitstream_bytes = max_bitstream_bytes
        module = contracts.import_entry(self.bundle_dir, load.agent.entry_module)
        self.contract, self.form = contracts.detect_contract(module, load.agent.contract)
        self.module = module
        # Both sides know the shape: the decoder of an encoder without an image returns no reconstruction.
        self.takes_image = self.contract == contracts.CODEC or contracts.seed_takes_image(module.run_encoding_agent)
        self.call: contracts.BoundCall | None = None

    def set_params(self, params: dict[str, Any]) -> None:
        """Binds the contract's calls for one parameter point (instantiates ``Codec`` once).

        The encoder also checks, without calling anything, that the decoder's side binds to the
        same point: the worker's one decoder process starts only after every point is encoded
        (:mod:`worker_svc.executor`), and a point the decoder refuses must fail the run at load,
        before any image. The decoder process binds for real again when its turn comes.

        Raises:
            errors.SignatureMismatch: a call the agent's signature cannot take (before any data).
            errors.CodecbenchError: ``Codec(...)`` raised.
        """
        encoder = self.role == sandbox_pb2.SANDBOX_ROLE_ENCODER
        if encoder:
            self._bind(sandbox_pb2.SANDBOX_ROLE_DECODER, params, instantiate=False)
        self.call = self._bind(self.role, params, instantiate=True)

    def _bind(self, role: sandbox_pb2.SandboxRole.ValueType, params: dict[str, Any],
              instantiate: bool) -> contracts.BoundCall | None:
        """Binds ``role``'s call to ``params``; with ``instantiate`` False, only checks that it binds
        (``Codec(...)`` is bound, not run) and returns None.

        Raises:
            errors.SignatureMismatch: a call the agent's signature cannot take.
            errors.CodecbenchError: ``Codec(...)`` raised (``instantiate`` only).
        """
        encoder = role == sandbox_pb2.SANDBOX_ROLE_ENCODER
        notes = instantiate  # what binding converted is said once, by the process's own role
        device = contracts.Slot("device", self.device)
        data = contracts.Slot("image" if encoder else "bitstream", contracts.DATA, any_name=True)

        def bind(fn: Any, name: str, expected: str, slots: list[contracts.Slot], **options: Any) -> contracts.BoundCall:
            return contracts.bind_call(fn, name, expected, self.bundle_dir, LOAD, slots, **options)

        if self.form == "class":
            cls = self.module.Codec
            init = bind(cls, "Codec", "Codec(device, **params)", [device], params=params)
            if notes:
                self._note(init)
            method_name = "encode" if encoder else "decode"
            name, expected = f"Codec.{method_name}", f"Codec.{method_name}(self, {data.name})"
            contracts.check_method_on_class(cls, method_name, name, expected, data, self.bundle_dir, LOAD)
            if not instantiate:
                return None
            instance = _run_agent(init, LOAD, self.bundle_dir)
            return bind(getattr(instance, method_name), name, expected, [data])
        if self.form == "module":
            name = "encode" if encoder else "decode"
            call = bind(getattr(self.module, name), name, f"{name}({data.name}, device, **params)",
                        [data, device], params=params)
        elif encoder:
            call = bind(self.module.run_encoding_agent, "run_encoding_agent",
                        "run_encoding_agent(device[, image], **params)",
                        [device, contracts.Slot("image", contracts.DATA, optional=True)], params=params)
        else:
            call = bind(self.module.run_decoding_agent, "run_decoding_agent",
                        "run_decoding_agent(device, encoding_data)",
                        [device, contracts.Slot("encoding_data", contracts.DATA)], params=params,
                        params_where_declared=True)
        if notes:
            self._note(call)
        return call if instantiate else None

    def _note(self, call: contracts.BoundCall) -> None:
        """Prints what binding converted to stderr, which the worker puts in the experiment's log;
        the encoder's side only (the decoder converts alike: one note is enough)."""
        if self.role == sandbox_pb2.SANDBOX_ROLE_ENCODER:
            for note in call.notes:
                print(note, file=sys.stderr, flush=True)

    def encode(self, image: torch.Tensor | None) -> sandbox_pb2.SandboxEncoded:
        """Runs the agent's encoder on uint8 ``[3, H, W]`` (None for a seed encoder that takes no
        image); the bitstream (or seed dict) as a response.

        Raises:
            errors.CodecbenchError: the agent raised, or returned something the contract does not allow.
        """
        call = self.call
        assert call is not None
        if image is not None:
            image = image.to(self.device)
        output = _run_agent(lambda: call(image) if call.takes_data else call(), ENCODE, self.bundle_dir)
        _sync(self.device)
        if self.contract == contracts.SEED:
            if not isinstance(output, dict):
                raise errors.InvalidOutput(
                    f"run_encoding_agent must return a dict, got {type(output).__name__}",
                    phase=ENCODE, expected="dict", actual=type(output).__name__,
                )
            value = _to_value(output, "encoding_data", ENCODE)
            self._check_size(value.ByteSize())
            return sandbox_pb2.SandboxEncoded(encoding_data=value)
        if not isinstance(output, (bytes, bytearray, memoryview)):
            raise errors.InvalidOutput(
                f"encode must return bytes, got {type(output).__name__}",
                phase=ENCODE, expected="bytes", actual=type(output).__name__,
            )
        bitstream = bytes(output)
        self._check_size(len(bitstream))
        return sandbox_pb2.SandboxEncoded(bitstream=bitstream)

    def _check_size(self, size: int) -> None:
        if size > self.max_bitstream_bytes:
            raise errors.InvalidOutput(
                f"bitstream of {size} bytes exceeds the limit of {self.max_bitstream_bytes} bytes",
                phase=ENCODE, expected=f"at most {self.max_bitstream_bytes} bytes", actual=f"{size} bytes",
            )

    def decode(self, request: sandbox_pb2.SandboxDecode) -> sandbox_pb2.SandboxDecoded:
        """Runs the agent's decoder on the request's bitstream (or seed dict); the reconstruction
        as uint8 (:mod:`codecbench.reconstructions`), and a seed decoder's other entries.

        Raises:
            errors.CodecbenchError: the agent raised, reported a status other than ok, or returned
                something the contract does not allow.
        """
        call = self.call
        assert call is not None
        if self.contract != contracts.SEED:
            output = _run_agent(lambda: call(request.bitstream), DECODE, self.bundle_dir)
            _sync(self.device)
            return _reconstruction(output, sandbox_pb2.SandboxDecoded())
        if request.WhichOneof("payload") != "encoding_data":
            raise errors.InternalError("seed decoder got a bitstream instead of an encoding dict", phase=DECODE)
        data = values.from_value(request.encoding_data)
        output = _run_agent(lambda: call(data), DECODE, self.bundle_dir)
        _sync(self.device)
        key = contracts.RECONSTRUCTION_KEY
        if not isinstance(output, dict):
            raise errors.InvalidOutput(
                f"run_decoding_agent must return a dict, got {type(output).__name__}",
                phase=DECODE, expected=f"dict with a '{key}' tensor" if self.takes_image else "dict",
                actual=type(output).__name__,
            )
        _check_status(output)
        if not self.takes_image:  # the old runner's own shape: no image in, only the agent's numbers out
            return sandbox_pb2.SandboxDecoded(decoding_data=_report_value(output))
        rest = {k: v for k, v in output.items() if k != key}
        decoded = sandbox_pb2.SandboxDecoded(decoding_data=_report_value(rest))
        if key in output:
            return _reconstruction(output[key], decoded)
        raise errors.InvalidOutput(
            f"run_decoding_agent's dict has no '{key}' entry (keys: {', '.join(map(str, output)) or 'none'}); "
            "an encoder that takes an image needs its decoder to return the reconstruction",
            phase=DECODE, expected=f"'{key}': Tensor [3, H, W]", actual=f"keys {sorted(map(str, output))}",
        )


# A decoding dict's "status" other than this (case aside) is the agent's own report of a failure.
STATUS_OK = "ok"
_MAX_QUOTED_CHARS = 1000


def _check_status(output: dict[Any, Any]) -> None:
    """Refuses a decoding dict whose ``status`` is set and not "ok", quoting its status and message.

    Raises:
        errors.AgentException: naming the status and the dict's ``message`` (or ``error``) entry.
    """
    status = output.get("status")
    if status is None or (isinstance(status, str) and status.strip().lower() == STATUS_OK):
        return
    said = output.get("message", output.get("error"))
    quoted = f": {safe_str(said)[:_MAX_QUOTED_CHARS]}" if said is not None else " (no 'message' entry)"
    raise errors.AgentException(
        f"run_decoding_agent reported status {safe_str(status)[:_MAX_QUOTED_CHARS]!r}{quoted}",
        phase=DECODE, expected=f"status {STATUS_OK!r}", actual=f"status {safe_str(status)[:_MAX_QUOTED_CHARS]!r}",
    )


def _reconstruction(output: Any, decoded: sandbox_pb2.SandboxDecoded) -> sandbox_pb2.SandboxDecoded:
    """Fills ``decoded`` with the agent's tensor converted to uint8, and the count of clamped values.

    Raises:
        errors.InvalidOutput: not a tensor, a tensor that cannot be read, or values out of range.
    """
    if not isinstance(output, torch.Tensor):
        raise errors.InvalidOutput(
            f"decode must return a torch.Tensor [3, H, W], got {type(output).__name__}",
            phase=DECODE, expected="torch.Tensor [3, H, W], uint8 or float in [0, 1]", actual=type(output).__name__,
        )
    try:
        if output.numel() > datasets.MAX_RGB_BYTES:  # refused before a copy or a conversion is made
            raise errors.InvalidOutput(
                f"decode returned a tensor of {output.numel()} values, more than an RGB image at the pixel limit "
                f"of {datasets.MAX_PIXELS} pixels ({datasets.MAX_RGB_BYTES} values)",
                phase=DECODE, expected=f"torch.Tensor [3, H, W] with H * W <= {datasets.MAX_PIXELS}",
                actual=_safe_repr(output),
            )
        cpu = output.detach().cpu()
        converted = reconstructions.to_uint8(cpu)
        decoded.reconstruction.CopyFrom(tensors.from_torch(converted.pixels))
    except errors.CodecbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - sparse, meta-device or subclassed tensors fail in many ways
        raise errors.InvalidOutput(
            f"decode returned a tensor that cannot be read as a dense array ({type(exc).__name__}: {exc})",
            phase=DECODE, expected="a dense torch.Tensor, uint8 or float", actual=_safe_repr(output),
        ) from exc
    decoded.clamped_values = converted.clamped_values
    return decoded


def _safe_repr(obj: Any) -> str:
    try:
        return f"{type(obj).__name__} {getattr(obj, 'dtype', '')} {list(getattr(obj, 'shape', []))}"
    except Exception:  # noqa: BLE001 - an agent's object may raise from anything
        return type(obj).__name__


def _to_value(obj: Any, path: str, phase: types_pb2.Phase.ValueType) -> types_pb2.Value:
    try:
        return values.to_value(obj, path)
    except values.ValueConversionError as exc:
        raise errors.InvalidOutput(
            str(exc), phase=phase, expected="numbers, str, bytes, lists, dicts, numpy arrays, tensors", actual=str(exc)
        ) from exc


def _report_value(entries: dict[Any, Any]) -> types_pb2.Value:
    """A decoding dict's entries (besides the reconstruction) as one map Value, entry by entry.

    They are the agent's own figures, reported by name, never a payload: an entry that cannot be
    converted (a key that is not a str, an int beyond 64 bits, an unsupported type) travels as an
    empty list under its key's text, so the worker lists it as not reported (``ignored_keys``, as
    it does for nested dicts) instead of failing the experiment.
    """
    out = types_pb2.Value(map_value=types_pb2.ValueMap())
    for key, value in entries.items():
        unreported = types_pb2.Value(list_value=types_pb2.ValueList())
        if not isinstance(key, str):
            out.map_value.entries.add(key=safe_str(key)[:200], value=unreported)
            continue
        try:
            converted = values.to_value(value, f"decoding_data[{key!r}]")
        except values.ValueConversionError:
            converted = unreported
        out.map_value.entries.add(key=key, value=converted)
    return out


def _sync(device: str) -> None:
    # Make the call's wall time include the GPU work it queued.
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _run_agent(fn: Any, phase: types_pb2.Phase.ValueType, bundle_dir: Path) -> Any:
    """Calls agent code; anything it raises (SystemExit and KeyboardInterrupt included) becomes
    a typed error with the agent's frames.

    A process the agent forked that comes back here exits at once: only the original process
    talks to the worker (a fork bomb's copies must not write into the shared socket).
    """
    serving_pid = os.getpid()
    try:
        result = fn()
    except MemoryError as exc:
        if os.getpid() != serving_pid:
            os._exit(0)
        raise errors.from_proto(
            exception_error(exc, errors_pb2.ERROR_KIND_MEMORY_LIMIT, phase, bundle_dir,
                            f"the agent ran out of memory (MemoryError) in {errors.phase_name(phase)}")
        ) from exc
    except BaseException as exc:  # noqa: BLE001 - every agent failure must be reported, none may kill the runtime
        if os.getpid() != serving_pid:
            os._exit(0)
        kind = errors_pb2.ERROR_KIND_AGENT_EXCEPTION
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            kind = errors_pb2.ERROR_KIND_MEMORY_LIMIT
        raise errors.from_proto(exception_error(exc, kind, phase, bundle_dir)) from exc
    if os.getpid() != serving_pid:
        os._exit(0)
    return result


def handle(runtime: AgentRuntime | None, request: sandbox_pb2.SandboxRequest, max_bitstream_bytes: int
           ) -> tuple[AgentRuntime | None, sandbox_pb2.SandboxResponse]:
    """Serves one request; returns the (possibly new) runtime and the response."""
    kind = request.WhichOneof("request")
    try:
        if kind == "load":
            runtime = AgentRuntime(request.load, max_bitstream_bytes)
            loaded = sandbox_pb2.SandboxLoaded(contract=runtime.contract, takes_image=runtime.takes_image)
            return runtime, sandbox_pb2.SandboxResponse(loaded=loaded)
        if runtime is None:
            raise errors.InternalError(f"sandbox got {kind} before load")
        if kind == "set_params":
            runtime.set_params(values.params_to_python(request.set_params.params))
            return runtime, sandbox_pb2.SandboxResponse(params_set=True)
        if kind == "encode":
            image = tensors.to_torch(request.encode.image) if request.encode.HasField("image") else None
            if (image is None) == runtime.takes_image:
                takes = "takes" if runtime.takes_image else "takes no"
                raise errors.InternalError(f"encode request {'without' if image is None else 'with'} an image "
                                           f"for an encoder that {takes} image")
            return runtime, sandbox_pb2.SandboxResponse(encoded=runtime.encode(image))
        if kind == "decode":
            return runtime, sandbox_pb2.SandboxResponse(decoded=runtime.decode(request.decode))
        raise errors.InternalError(f"unknown sandbox request {kind!r}")
    except errors.CodecbenchError as exc:
        reported = exc.to_proto()
        if (reported.kind == errors_pb2.ERROR_KIND_INVALID_OUTPUT and not reported.location and runtime is not None
                and runtime.call is not None):
            # what was returned is checked after the agent's call has returned: blame the function
            # that returned it, where it is defined (the return statement is no longer on any stack)
            reported.location = contracts.definition_location(runtime.call.fn, runtime.bundle_dir)
        return runtime, sandbox_pb2.SandboxResponse(error=reported)
    except BaseException as exc:  # noqa: BLE001 - e.g. a bundle the agent's code made unwritable, a lying object
        message = f"the agent process could not serve {kind}: {type(exc).__name__}: {safe_str(exc)}"
        error = errors.AgentException(message, exception_type=type(exc).__name__)
        return runtime, sandbox_pb2.SandboxResponse(error=error.to_proto())


def apply_limits(memory_bytes: int, cpu_s: int, file_bytes: int, open_files: int) -> None:
    """Hard resource limits the agent cannot raise again (RLIMIT_* are per process, inherited).

    0 leaves a limit unset (RLIMIT_AS stays unset for CUDA runs: CUDA reserves large virtual ranges).
    """
    for res, value in (
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, file_bytes),
        (resource.RLIMIT_NOFILE, open_files),
    ):
        if value:
            resource.setrlimit(res, (value, value))


def serve(sock: socket.socket, max_frame_bytes: int, max_bitstream_bytes: int) -> int:
    """Serves framed requests on ``sock`` until the worker closes it; returns the exit status.

    The first frame sent is an empty ``SandboxResponse``: ready (the interpreter and torch are
    up, so the worker starts the agent's load limit only now).
    """
    namespaces.set_process_name(PROCESS_NAME)
    stream = sock.makefile("rwb")
    runtime: AgentRuntime | None = None
    try:
        framing.write_frame(stream, sandbox_pb2.SandboxResponse())
    except (BrokenPipeError, ConnectionResetError):
        return 0
    while True:
        try:
            request = framing.read_frame(stream, sandbox_pb2.SandboxRequest, max_frame_bytes)
        except framing.FrameError as exc:
            print(f"sandbox: bad request frame: {exc}", file=sys.stderr)
            return 2
        except (BrokenPipeError, ConnectionResetError):  # the worker closed the socket: end of stream
            return 0
        if request is None:
            return 0
        runtime, response = handle(runtime, request, max_bitstream_bytes)
        try:
            framing.write_frame(stream, response)
        except (BrokenPipeError, ConnectionResetError):
            return 0
        except ValueError as exc:  # protobuf refuses messages over 2 GiB
            err = errors.InvalidOutput(f"response does not fit in a frame: {exc}")
            framing.write_frame(stream, sandbox_pb2.SandboxResponse(error=err.to_proto()))


def receive_request_socket(fd: int) -> int:
    """Receives the request socket on the hand-over socket ``fd`` and closes ``fd``.

    Every descriptor bwrap is given stays open in bwrap's own process outside the sandbox as
    long as the sandbox runs, so a request socket inherited that way would never read as closed
    in the worker when the agent closes it. A socket received here exists only in this process.
    """
    with socket.socket(fileno=fd) as handover:
        _, fds, _, _ = socket.recv_fds(handover, 1, 1)
    if len(fds) != 1:
        raise OSError(f"expected the request socket on the hand-over socket, got {len(fds)} descriptors")
    return fds[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.child --fd N ...``: the sandbox runtime of one agent process; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.child")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket for framed requests")
    parser.add_argument("--receive-fd", action="store_true",
                        help="--fd is a socket that passes the request socket (SCM_RIGHTS), then closes")
    parser.add_argument("--max-frame-bytes", type=int, required=True)
    parser.add_argument("--max-bitstream-bytes", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, default=0, help="RLIMIT_AS; 0 = none (CUDA runs)")
    parser.add_argument("--cpu-s", type=int, default=0)
    parser.add_argument("--file-bytes", type=int, default=0)
    parser.add_argument("--open-files", type=int, default=0)
    parser.add_argument("--status-fd", type=int, default=-1,
                        help="write end of the status pipe; as PID 1 of a PID namespace this process becomes "
                        "the init (sandbox.init) and the agent runs in a child")
    parser.add_argument("--unprivileged", action="store_true", help="become --uid without capabilities first")
    parser.add_argument("--uid", type=int, default=identity.AGENT_UID, help="the uid/gid of --unprivileged")
    parser.add_argument("--seccomp-fd", type=int, default=-1,
                        help="a pipe holding the seccomp filter (BPF) to load before any agent code")
    args = parser.parse_args(argv)
    if args.receive_fd:
        args.fd = receive_request_socket(args.fd)
    if args.unprivileged:
        identity.become_agent_user(args.uid)
    if args.seccomp_fd >= 0:
        seccomp.install(seccomp.read_program(args.seccomp_fd))  # init and agent alike

    def agent() -> int:
        apply_limits(args.memory_bytes, args.cpu_s, args.file_bytes, args.open_files)
        return serve(socket.socket(fileno=args.fd), args.max_frame_bytes, args.max_bitstream_bytes)

    if os.getpid() == 1 and args.status_fd >= 0:
        # Init holds no request socket: an agent that closes its own is seen at once (end of stream).
        init.run_as_init(agent, args.status_fd, close_in_init=(args.fd,))
    if args.status_fd >= 0:
        os.close(args.status_fd)  # no PID namespace (process isolation): the worker waits on this process
    return agent()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: threads the agent left running must not keep the process alive.
    os._exit(status)
