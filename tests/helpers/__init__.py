"""What the tests share besides fixtures: paths, agent bundles, and the bounded poll.

Importable as ``helpers`` (``[tool.pytest.ini_options] pythonpath = ["tests"]``): the tests import
from here rather than from ``conftest``, which pytest loads itself and which holds only fixtures.
Starting real services is :mod:`helpers.services`; the worker-service helpers are
:mod:`helpers.worker`.
"""

from __future__ import annotations

from pathlib import Path

from codecbench import bundles
from codecbench.local import eventually
from codecbench.v1 import types_pb2

REPO = Path(__file__).resolve().parents[2]
AGENTS = REPO / "agents"
TEST_AGENTS = REPO / "tests" / "agents"


def agent_bundle(name: str) -> types_pb2.AgentBundle:
    """A bundle of a reference agent (``agents/NAME``) or a test agent (``tests/agents/NAME``)."""
    folder = AGENTS / name if (AGENTS / name).is_dir() else TEST_AGENTS / name
    return bundles.bundle_from_dir(folder)


__all__ = ["AGENTS", "REPO", "TEST_AGENTS", "agent_bundle", "eventually"]
