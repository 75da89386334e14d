"""codecbench: evaluate image codec agents on sandboxed workers and get honest rate–distortion metrics.

What users import:

- :class:`codecbench.Client` — the asyncio client of the orchestrator (:mod:`codecbench.client`);
- :mod:`codecbench.errors` — the one error tree, raised by the client and the services alike;
- :mod:`codecbench.analysis` — BD-rate, RD plots, error groups, CompressAI-layout export;
- :mod:`codecbench.cli` — the ``codecbench`` command; :mod:`codecbench.local` starts services locally.

The protocol lives in :mod:`codecbench.v1` (generated from ``protos/codecbench/v1/*.proto`` by
``make proto`` and committed). The remaining modules are the small kernel shared with the services
(values, tensors, bundles, datasets, framing). ``Client`` is imported lazily so that code running
inside a sandbox, which imports the kernel, never loads grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codecbench.client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from codecbench.client import Client

        return Client
    raise AttributeError(f"module 'codecbench' has no attribute {name!r}")
