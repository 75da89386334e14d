"""One side (encoder or decoder) of an agent, loaded in its own sandbox process.

The encoder and the decoder of an experiment are two of these: two processes, each with its own
private copy of the bundle, namespaces and tmp, and (as root) its own uid: encoders and decoders
never share per-uid kernel state. The decoder never receives the image, and no memory or file
the encoder leaves behind is visible to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from codecbench import bundles, devices, errors, tensors
from codecbench.v1 import sandbox_pb2, types_pb2
from sandbox import identity
from sandbox.launchers import Launcher
from sandbox.process import OutputBudget, SandboxLimits, SandboxProcess


@dataclass(frozen=True)
class SandboxSettings:
    """How the worker starts agent processes: the launcher (warm template or fresh) and limits.

    Attributes:
        started: told the role and the seconds each sandbox process took to start (before the
            agent is imported): the worker's ``sandbox_start_seconds`` metric; None: nobody.
    """

    launcher: Launcher
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    started: Callable[[sandbox_pb2.SandboxRole.ValueType, float], None] | None = None


class SandboxedAgent:
    """An agent side ready for calls. Create with :meth:`open`; always :meth:`close`."""

    def __init__(
        self,
        process: SandboxProcess,
        role: sandbox_pb2.SandboxRole.ValueType,
        contract: types_pb2.Contract.ValueType,
        takes_image: bool = True,
    ) -> None:
        self.process = process
        self.role = role
        self.contract = contract
        # False for a seed agent whose run_encoding_agent takes no image (called once per point).
        self.takes_image = takes_image

    @classmethod
    async def open(
        cls,
        settings: SandboxSettings,
        bundle: types_pb2.AgentBundle,
        role: sandbox_pb2.SandboxRole.ValueType,
        device: devices.Device.ValueType,
        budget: OutputBudget,
        load_timeout_s: float,
        blob: Callable[[str], bytes] | None = None,
    ) -> SandboxedAgent:
        """Starts an agent process, sends it the bundle and imports the agent.

        Args:
            settings: the launcher and limits of agent processes.
            bundle: the agent's files (those sent without content are taken from ``blob``).
            role: encoder or decoder.
            device: CPU or CUDA (unspecified reads as CPU).
            budget: the experiment's output budget, shared by both sides.
            load_timeout_s: limit for importing the agent and binding its contract.
            blob: returns a cached blob by sha256, for bundle files sent without content.

        Raises:
            errors.CodecbenchError: AGENT_LOAD_ERROR, SIGNATURE_MISMATCH, TIMEOUT (phase load), ...
        """
        try:
            agent = bundles.with_content(bundle, blob)
        except ValueError as exc:
            raise errors.InternalError(f"agent bundle: {exc}", phase=types_pb2.PHASE_SETUP) from exc
        device = devices.resolve(device)
        begun = time.perf_counter()
        process = await SandboxProcess.start(settings.launcher, settings.limits, budget, gpu=device == devices.CUDA,
                                             uid=identity.uid_for(role))
        if settings.started is not None:
            settings.started(role, time.perf_counter() - begun)
        try:
            load = sandbox_pb2.SandboxLoad(agent=agent, role=role, device=device)
            request = sandbox_pb2.SandboxRequest(load=load)
            response, _ = await process.call(request, "loaded", types_pb2.PHASE_LOAD, load_timeout_s)
            return cls(process, role, response.loaded.contract, response.loaded.takes_image)
        except BaseException:
            await process.close()
            raise

    async def set_params(self, params: types_pb2.ParameterPoint, timeout_s: float) -> None:
        """Binds the contract's calls to one parameter point (``Codec(device, **params)``)."""
        request = sandbox_pb2.SandboxRequest(set_params=sandbox_pb2.SandboxSetParams(params=params))
        await self.process.call(request, "params_set", types_pb2.PHASE_LOAD, timeout_s)

    async def encode(self, image: torch.Tensor | None, timeout_s: float) -> tuple[sandbox_pb2.SandboxEncoded, float]:
        """Encodes uint8 [3, H, W] (None for an encoder that takes no image, :attr:`takes_image`);
        returns the payload and the worker-measured wall time in ms."""
        request = sandbox_pb2.SandboxRequest()
        request.encode.SetInParent()  # an encode request with no image is still an encode request
        if image is not None:
            request.encode.image.CopyFrom(tensors.from_torch(image))
        response, ms = await self.process.call(request, "encoded", types_pb2.PHASE_ENCODE, timeout_s)
        return response.encoded, ms

    async def decode(self, encoded: sandbox_pb2.SandboxEncoded, timeout_s: float
                     ) -> tuple[sandbox_pb2.SandboxDecoded, float]:
        """Decodes a payload from :meth:`encode`; returns the output and the wall time in ms."""
        if encoded.WhichOneof("payload") == "encoding_data":
            decode = sandbox_pb2.SandboxDecode(encoding_data=encoded.encoding_data)
        else:
            decode = sandbox_pb2.SandboxDecode(bitstream=encoded.bitstream)
        response, ms = await self.process.call(
            sandbox_pb2.SandboxRequest(decode=decode), "decoded", types_pb2.PHASE_DECODE, timeout_s
        )
        return response.decoded, ms

    async def close(self) -> None:
        """Kills the process (and everything it started) and frees its resources."""
        await self.process.close()


def payload_bytes(encoded: sandbox_pb2.SandboxEncoded) -> bytes:
    """Every byte the decoder receives: the bitstream, or the seed encoding dict as serialized."""
    if encoded.WhichOneof("payload") == "encoding_data":
        return encoded.encoding_data.SerializeToString(deterministic=True)
    return encoded.bitstream


__all__ = ["SandboxSettings", "SandboxedAgent", "payload_bytes"]
