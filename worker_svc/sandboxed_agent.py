"""One side (encoder or decoder) of an agent, loaded in its own sandbox process.

The encoder and the decoder of an experiment are two of these, with two private copies of the
bundle: the decoder never receives the image, and no memory or file the encoder leaves behind
is visible to it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codecbench import bundles, tensors
from codecbench.v1 import errors_pb2, sandbox_pb2, types_pb2
from sandbox.process import OutputBudget, SandboxLimits, SandboxProcess


@dataclass(frozen=True)
class SandboxSettings:
    """How the worker runs agent processes.

    Attributes:
        scratch_dir: parent of the per-process private directories (bundle copy + cwd).
        isolation: ``ISOLATION_BWRAP`` or ``ISOLATION_PROCESS``.
        hidden: directories hidden from agents (data dir, built-in dataset files).
        limits: per-process resource limits.
    """

    scratch_dir: Path
    isolation: int
    hidden: tuple[Path, ...] = ()
    limits: SandboxLimits = field(default_factory=SandboxLimits)


class SandboxedAgent:
    """An agent side ready for calls. Create with :meth:`open`; always :meth:`close`."""

    def __init__(self, process: SandboxProcess, workdir: Path, role: int, contract: int) -> None:
        self.process = process
        self.workdir = workdir
        self.role = role
        self.contract = contract

    @classmethod
    async def open(
        cls,
        settings: SandboxSettings,
        bundle: types_pb2.AgentBundle,
        role: int,
        device: str,
        budget: OutputBudget,
        load_timeout_s: float,
        blob: Callable[[str], bytes] | None = None,
    ) -> SandboxedAgent:
        """Copies the bundle to a private directory, starts a child and imports the agent.

        Raises:
            errors.CodecbenchError: AGENT_LOAD_ERROR, SIGNATURE_MISMATCH, TIMEOUT (phase load), ...
        """
        settings.scratch_dir.mkdir(parents=True, exist_ok=True)
        side = "enc" if role == sandbox_pb2.SANDBOX_ROLE_ENCODER else "dec"
        workdir = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=settings.scratch_dir))
        process = None
        try:
            bundles.write(bundle, workdir, blob)
            process = await SandboxProcess.start(
                workdir, settings.limits, budget, settings.isolation, settings.hidden, gpu=device.startswith("cuda")
            )
            load = sandbox_pb2.SandboxLoad(
                bundle_dir=str(workdir), entry_module=bundle.entry_module, contract=bundle.contract,
                role=role, device=device,
            )
            response, _ = await process.call(
                sandbox_pb2.SandboxRequest(load=load), errors_pb2.PHASE_LOAD, load_timeout_s
            )
            return cls(process, workdir, role, response.loaded.contract)
        except BaseException:
            if process is not None:
                await process.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    async def set_params(self, params: types_pb2.ParameterPoint, timeout_s: float) -> None:
        """Binds the contract's calls to one parameter point (``Codec(device, **params)``)."""
        request = sandbox_pb2.SandboxRequest(set_params=sandbox_pb2.SandboxSetParams(params=params))
        await self.process.call(request, errors_pb2.PHASE_LOAD, timeout_s)

    async def encode(self, image: torch.Tensor, timeout_s: float) -> tuple[sandbox_pb2.SandboxEncoded, float]:
        """Encodes uint8 [3, H, W]; returns the payload and the worker-measured wall time in ms."""
        request = sandbox_pb2.SandboxRequest(encode=sandbox_pb2.SandboxEncode(image=tensors.from_torch(image)))
        response, ms = await self.process.call(request, errors_pb2.PHASE_ENCODE, timeout_s)
        return response.encoded, ms

    async def decode(self, encoded: sandbox_pb2.SandboxEncoded, timeout_s: float
                     ) -> tuple[sandbox_pb2.SandboxDecoded, float]:
        """Decodes a payload from :meth:`encode`; returns the output and the wall time in ms."""
        if encoded.WhichOneof("payload") == "encoding_data":
            decode = sandbox_pb2.SandboxDecode(encoding_data=encoded.encoding_data)
        else:
            decode = sandbox_pb2.SandboxDecode(bitstream=encoded.bitstream)
        response, ms = await self.process.call(
            sandbox_pb2.SandboxRequest(decode=decode), errors_pb2.PHASE_DECODE, timeout_s
        )
        return response.decoded, ms

    async def close(self) -> None:
        """Kills the process and deletes its private directory."""
        try:
            await self.process.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def payload_bytes(encoded: sandbox_pb2.SandboxEncoded) -> bytes:
    """Every byte the decoder receives: the bitstream, or the seed encoding dict as serialized."""
    if encoded.WhichOneof("payload") == "encoding_data":
        return encoded.encoding_data.SerializeToString(deterministic=True)
    return encoded.bitstream


__all__ = ["SandboxSettings", "SandboxedAgent", "payload_bytes"]
