"""The runtime inside a sandbox child: ``python -m sandbox.child --fd N [limits]``.

It serves one role (encoder or decoder) of one agent over framed protobuf on the inherited
socket ``N``, and never pickles anything. Agent failures become typed ``Error`` responses;
the worker decides what they mean for the experiment. Once started, it sends one empty
``SandboxResponse`` (ready) before it reads the first request.
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - imported before the agent so its import time is not charged to the agent
import torch

from codecbench import bundles, devices, errors, framing, tensors, values
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
        self.call: contracts.BoundCall | None = None

    def set_params(self, params: dict[str, Any]) -> None:
        """Binds the contract's calls for one parameter point (instantiates ``Codec`` once)."""
        encoder = self.role == sandbox_pb2.SANDBOX_ROLE_ENCODER
        bind = contracts.bind_call
        if self.form == "class":
            cls = self.module.Codec
            init = bind(
                cls, "Codec", "Codec(device, **params)", self.bundle_dir, LOAD, {"device": self.device, **params}
            )
            method_name = "encode" if encoder else "decode"
            data = "image" if encoder else "bitstream"
            method = getattr(cls, method_name, None)
            if not callable(method):
                raise errors.SignatureMismatch(
                    f"class Codec has no method {method_name}()",
                    phase=LOAD, expected=f"Codec.{method_name}(self, {data})", actual="missing",
                )
            self._check_one_argument(method, f"Codec.{method_name}", data)
            instance = _run_agent(lambda: init(), LOAD, self.bundle_dir)
            bound_method = getattr(instance, method_name)
            self.call = contracts.BoundCall(
                fn=bound_method, name=f"Codec.{method_name}", data_param=_first_parameter(bound_method, data)
            )
        elif self.form == "module":
            name, data = ("encode", "image") if encoder else ("decode", "bitstream")
            fn = getattr(self.module, name)
            self.call = bind(
                fn, name, f"{name}({data}, device, **params)", self.bundle_dir, LOAD,
                {"device": self.device, **params}, data_param=_first_parameter(fn, data),
            )
        elif encoder:
            self.call = bind(
                self.module.run_encoding_agent, "run_encoding_agent", "run_encoding_agent(device[, image], **params)",
                self.bundle_dir, LOAD, {"device": self.device, **params}, data_param=None,
            )
            self._seed_takes_image = "image" in _parameter_names(self.module.run_encoding_agent)
        else:
            self.call = bind(
                self.module.run_decoding_agent, "run_decoding_agent", "run_decoding_agent(device, encoding_data)",
                self.bundle_dir, LOAD, {"device": self.device}, optional=params, data_param="encoding_data",
            )

    def _check_one_argument(self, method: Any, name: str, data: str) -> None:
        try:
            inspect.signature(method).bind(None, None)
        except TypeError as exc:
            actual = contracts._describe_signature(name, method)
            raise errors.SignatureMismatch(
                f"{name} must take one argument ({data}): {exc}; the agent declares {actual}",
                phase=LOAD, expected=f"{name}(self, {data})", actual=actual,
                location=contracts._location(method, self.bundle_dir),
            ) from exc

    def encode(self, image: torch.Tensor) -> sandbox_pb2.SandboxEncoded:
        """Runs the agent's encoder on uint8 ``[3, H, W]``; the bitstream (or seed dict) as a response.

        Raises:
            errors.CodecbenchError: the agent raised, or returned something the contract does not allow.
        """
        assert self.call is not None
        image = image.to(self.device)
        if self.contract == contracts.SEED:
            call = self.call
            output = _run_agent(lambda: call.fn(**call.kwargs, **({"image": image} if self._seed_takes_image else {})),
                                ENCODE, self.bundle_dir)
            _sync(self.device)
            if not isinstance(output, dict):
                raise errors.InvalidOutput(
                    f"run_encoding_agent must return a dict, got {type(output).__name__}",
                    phase=ENCODE, expected="dict", actual=type(output).__name__,
                )
            value = _to_value(output, "encoding_data", ENCODE)
            self._check_size(value.ByteSize())
            return sandbox_pb2.SandboxEncoded(encoding_data=value)
        output = _run_agent(lambda: self.call(image), ENCODE, self.bundle_dir)
        _sync(self.device)
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
        """Runs the agent's decoder on the request's bitstream (or seed dict); the reconstruction.

        Raises:
            errors.CodecbenchError: the agent raised, or returned something the contract does not allow.
        """
        assert self.call is not None
        if self.contract == contracts.SEED:
            if request.WhichOneof("payload") != "encoding_data":
                raise errors.InternalError("seed decoder got a bitstream instead of an encoding dict", phase=DECODE)
            data = values.from_value(request.encoding_data)
            output = _run_agent(lambda: self.call(data), DECODE, self.bundle_dir)
            _sync(self.device)
            if not isinstance(output, dict):
                raise errors.InvalidOutput(
                    f"run_decoding_agent must return a dict, got {type(output).__name__}",
                    phase=DECODE, expected=f"dict with a '{contracts.RECONSTRUCTION_KEY}' tensor",
                    actual=type(output).__name__,
                )
            rest = {k: v for k, v in output.items() if k != contracts.RECONSTRUCTION_KEY}
            decoded = sandbox_pb2.SandboxDecoded(decoding_data=_to_value(rest, "decoding_data", DECODE))
            if contracts.RECONSTRUCTION_KEY not in output:
                raise errors.InvalidOutput(
                    f"run_decoding_agent's dict has no '{contracts.RECONSTRUCTION_KEY}' entry "
                    f"(keys: {', '.join(map(str, output)) or 'none'})",
                    phase=DECODE, expected=f"'{contracts.RECONSTRUCTION_KEY}': Tensor [3, H, W]",
                    actual=f"keys {sorted(map(str, output))}",
                )
            decoded.reconstruction.CopyFrom(_reconstruction(output[contracts.RECONSTRUCTION_KEY]))
            return decoded
        output = _run_agent(lambda: self.call(request.bitstream), DECODE, self.bundle_dir)
        _sync(self.device)
        return sandbox_pb2.SandboxDecoded(reconstruction=_reconstruction(output))


def _parameter_names(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _first_parameter(fn: Any, fallback: str) -> str:
    """The name of the first parameter, which receives the image/bitstream in the module form."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fallback
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
        return params[0].name
    return fallback


def _reconstruction(output: Any) -> types_pb2.Tensor:
    if not isinstance(output, torch.Tensor):
        raise errors.InvalidOutput(
            f"decode must return a torch.Tensor [3, H, W], got {type(output).__name__}",
            phase=DECODE, expected="torch.Tensor [3, H, W], uint8 or float in [0, 1]", actual=type(output).__name__,
        )
    try:
        return tensors.from_torch(output)
    except Exception as exc:  # noqa: BLE001 - sparse, meta-device or subclassed tensors fail in many ways
        raise errors.InvalidOutput(
            f"decode returned a tensor that cannot be read as a dense array ({type(exc).__name__}: {exc})",
            phase=DECODE, expected="a dense torch.Tensor, uint8 or float", actual=_safe_repr(output),
        ) from exc


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
            return runtime, sandbox_pb2.SandboxResponse(loaded=sandbox_pb2.SandboxLoaded(contract=runtime.contract))
        if runtime is None:
            raise errors.InternalError(f"sandbox got {kind} before load")
        if kind == "set_params":
            runtime.set_params(values.params_to_python(request.set_params.params))
            return runtime, sandbox_pb2.SandboxResponse(params_set=True)
        if kind == "encode":
            image = tensors.to_torch(request.encode.image)
            return runtime, sandbox_pb2.SandboxResponse(encoded=runtime.encode(image))
        if kind == "decode":
            return runtime, sandbox_pb2.SandboxResponse(decoded=runtime.decode(request.decode))
        raise errors.InternalError(f"unknown sandbox request {kind!r}")
    except errors.CodecbenchError as exc:
        return runtime, sandbox_pb2.SandboxResponse(error=exc.to_proto())
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
