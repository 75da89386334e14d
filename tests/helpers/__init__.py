"""What the tests share besides fixtures: paths, agent bundles, and the bounded poll.

Importable as ``helpers`` (``[tool.pytest.ini_options] pythonpath = ["tests"]``): the tests import
from here rather than from ``conftest``, which pytest loads itself and which holds only fixtures.
Starting real services is :mod:`helpers.services`; the worker-service helpers are
:mod:`helpers.worker`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codecbench import bundles
from codecbench.local import eventually
from codecbench.v1 import types_pb2

REPO = Path(__file__).resolve().parents[2]
AGENTS = REPO / "agents"
TEST_AGENTS = REPO / "tests" / "agents"


# Tests of what bubblewrap does (namespaces, the filesystem view, the agent's uid) need it; the rest
# of the suite runs without it, with the worker in process isolation.
requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: install the package 'bubblewrap' (make setup does, as root with apt)",
)


def agent_bundle(name: str) -> types_pb2.AgentBundle:
    """A bundle of a reference agent (``agents/NAME``) or a test agent (``tests/agents/NAME``)."""
    folder = AGENTS / name if (AGENTS / name).is_dir() else TEST_AGENTS / name
    return bundles.bundle_from_dir(folder)


__all__ = ["AGENTS", "REPO", "TEST_AGENTS", "agent_bundle", "eventually", "requires_bwrap"]
