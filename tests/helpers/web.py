"""The web view against real services: an orchestrator, a registered worker, a small dataset and
finished experiments (two RD curves of ``jpeg``, one failure whose error text and label try to
inject markup), and the view served by uvicorn on 127.0.0.1 (port 0) in the test's event loop.

Shared by ``tests/test_web.py`` (requests in process, through httpx) and
``tests/test_web_browser.py`` (headless Chromium).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from codecbench import states
from codecbench.client import Client
from codecbench.v1 import orchestrator_pb2
from codecbench.web import WebSettings, create_app
from helpers import AGENTS, TEST_ADMIN_TOKEN, eventually
from helpers.services import attach_worker, orchestrator, write_images
from orchestrator_svc.server import OrchestratorHandle, create_token

# Markup in user-controlled text: it must render as text (a test looks for it escaped, and in the
# browser checks that it did not run: the page's title stays as served).
XSS_LABEL = "<script>document.title='label-xss'</script>"
XSS_ERROR = "<img src=x onerror=\"document.title='error-xss'\">"
XSS_AGENT = f'''"""Fails at encode with markup in its message (the web view must show it as text)."""


def encode(image, device, **params):
    raise ValueError({XSS_ERROR!r})


def decode(bitstream, device, **params):
    raise ValueError("never called")
'''
# Four points each: BD-rate needs at least four per curve. Images of 176 px: MS-SSIM needs 161.
QUALITIES_A = [10, 30, 50, 80]
QUALITIES_B = [15, 35, 60, 90]


@dataclass
class World:
    """The services and the experiments made for the tests: ``curve_a`` is user alice's (it keeps
    the reconstruction of its first image per point, on alice's dataset), the others the admin's;
    bob is a user who owns nothing."""

    orchestrator: OrchestratorHandle
    client: Client
    dataset: str
    curve_a: orchestrator_pb2.Experiment
    curve_b: orchestrator_pb2.Experiment
    failed: orchestrator_pb2.Experiment
    root: Path
    alice_token: str
    bob_token: str


def web_app(address: str, token: str = TEST_ADMIN_TOKEN, login_code_ttl_s: float = 600.0) -> Starlette:
    """The web view of the orchestrator at ``address``; its one-time login codes log in with ``token``
    (default: the tests' admin token)."""
    return create_app(WebSettings(server=address, token=token, login_code_ttl_s=login_code_ttl_s))


def login_url(app: Starlette, base: str) -> str:
    """A one-time login URL of ``app`` served at ``base``, as ``codecbench web`` prints it."""
    return f"{base}/login?code={app.state.sessions.issue_code()}"


async def log_in(http: httpx.AsyncClient, app: Starlette) -> httpx.Response:
    """Logs ``http`` in through a one-time login URL of ``app`` (its cookie jar keeps the session);
    returns the answer (a redirect to ``/`` that sets the cookie)."""
    reply = await http.get(login_url(app, str(http.base_url).rstrip("/")))
    assert reply.status_code == 303 and reply.headers["location"] == "/", reply
    return reply


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """Serves ``app`` with uvicorn on 127.0.0.1 (a free port) in this event loop; yields its base URL."""
    # a bounded graceful shutdown: an event stream a browser still holds open would otherwise keep it waiting
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), what="uvicorn starts")
    if task.done():
        task.result()  # raises why it did not start
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def world(root: Path) -> AsyncIterator[World]:
    """An orchestrator, a worker, a dataset of two 176x176 images, and the finished experiments."""
    async with orchestrator(root / "orchestrator") as orch:
        worker = await attach_worker(orch, root / "worker", slots=2)
        try:
            alice_token, bob_token = create_token(orch.store, "alice"), create_token(orch.store, "bob")
            async with Client(orch.address) as client, Client(orch.address, token=alice_token) as alice:
                dataset = (await alice.upload_dataset("web-small", write_images(root / "images",
                                                                                 [(176, 176), (176, 184)]))).name
                xss_agent = root / "xss_agent"
                xss_agent.mkdir()
                (xss_agent / "codec.py").write_text(XSS_AGENT)
                submitted = [
                    await alice.submit(AGENTS / "jpeg", dataset, [{"quality": q} for q in QUALITIES_A],
                                       labels={"suite": "web", "note": XSS_LABEL}, keep_reconstructions=1),
                    await client.submit(AGENTS / "jpeg", dataset, [{"quality": q} for q in QUALITIES_B],
                                        labels={"suite": "web"}),
                    await client.submit(xss_agent, dataset, labels={"suite": "web"}),
                ]
                done = [await client.wait(e.experiment_id) for e in submitted]
                assert [e.state for e in done] == [states.SUCCEEDED, states.SUCCEEDED, states.FAILED], done
                yield World(orch, client, dataset, *done, root=root, alice_token=alice_token, bob_token=bob_token)
        finally:
            await worker.stop()
            shutil.rmtree(root / "images", ignore_errors=True)
