"""What the tests share besides fixtures: paths, agent bundles, and the bounded poll.

Importable as ``helpers`` (``[tool.pytest.ini_options] pythonpath = ["tests"]``): the tests import
from here rather than from ``conftest``, which pytest loads itself and which holds only fixtures.
Starting real services is :mod:`helpers.services`; the worker-service helpers are
:mod:`helpers.worker`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import pytest

from codecbench import auth, bundles, rpc
from codecbench.local import eventually
from codecbench.v1 import types_pb2

REPO = Path(__file__).resolve().parents[2]
AGENTS = REPO / "agents"
TEST_AGENTS = REPO / "tests" / "agents"
# One admin token for the whole test session: a Client() without arguments finds it in the
# environment; the orchestrators of helpers.services accept it, and test workers take it as their
# local admin token (WorkerConfig.admin_token), so tests may call them directly.
TEST_ADMIN_TOKEN = os.environ.setdefault(auth.TOKEN_ENV, auth.new_token())


def worker_channel(address: str) -> grpc.aio.Channel:
    """A channel to a test worker that presents :data:`TEST_ADMIN_TOKEN`."""
    return rpc.channel(address, TEST_ADMIN_TOKEN)


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


__all__ = ["AGENTS", "REPO", "TEST_ADMIN_TOKEN", "TEST_AGENTS", "agent_bundle", "eventually", "requires_bwrap",
           "worker_channel"]
