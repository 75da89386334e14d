"""The web view's ASGI application: one orchestrator client for its lifetime, the pages, the
static files, error pages for refused requests, and headers that keep every page on this host.

The Content-Security-Policy allows scripts, styles, images and connections from this host only
(plus inline styles, which Plotly sets on the chart's elements): a browser that honours it makes
no request elsewhere even if a page were to name another host.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codecbench import errors, rpc
from codecbench.client import Client
from codecbench.web import live, present, routes

HERE = Path(__file__).parent
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Refused requests as HTTP statuses (the error tree's classes, most specific first).
_HTTP_STATUS: tuple[tuple[type[errors.CodecbenchError], int], ...] = (
    (errors.NotFound, 404), (errors.InvalidArgument, 400), (errors.OutOfRange, 400),
    (errors.Unauthenticated, 401), (errors.PermissionDenied, 403), (errors.Unavailable, 503),
)


@dataclass(frozen=True)
class WebSettings:
    """Where the orchestrator is and whose token the view uses.

    Attributes:
        server: the orchestrator's ``host:port``.
        token: the bearer token; None: found by :func:`codecbench.auth.find_token`.
        token_file: a file holding the token (used when ``token`` is None).
        tls: TLS settings of the channel to the orchestrator.
    """

    server: str
    token: str | None = None
    token_file: Path | None = None
    tls: rpc.TlsConfig = rpc.NO_TLS


def plotly_js() -> Path:
    """The minified Plotly.js bundle that the ``plotly`` Python package ships (served at /vendor/plotly.min.js)."""
    return Path(str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js"))


class _SecurityHeaders:
    """Adds the Content-Security-Policy, no-sniff, referrer and cross-origin resource headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"referrer-policy", b"no-referrer"),
                                      # no other site may embed these pages' images (kept reconstructions)
                                      (b"cross-origin-resource-policy", b"same-origin")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: WebSettings) -> Starlette:
    """The web view as an ASGI application (serve it with uvicorn, as ``codecbench web`` does).

    The orchestrator client is opened when the application starts (its lifespan) and closed when
    it stops.

    Args:
        settings: the orchestrator's address, the token and TLS settings.

    Returns:
        The Starlette application.

    Raises:
        OSError: at startup, the token file cannot be read.
    """
    templates = Jinja2Templates(directory=HERE / "templates")
    present.install(templates.env)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Client(settings.server, token=settings.token, token_file=settings.token_file,
                          tls=settings.tls) as client:
            app.state.client = client
            yield

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.CodecbenchError)
        status = next((code for cls, code in _HTTP_STATUS if isinstance(exc, cls)), 502)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": str(exc)},
                                          status_code=status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                                          status_code=exc.status_code)

    app = Starlette(
        routes=[
            Route("/", routes.experiments, name="experiments"),
            Route("/experiments/{experiment_id}", routes.experiment, name="experiment"),
            Route("/experiments/{experiment_id}/points/{point_index:index}/images/{image_index:index}/reconstruction.png",
                  routes.reconstruction, name="reconstruction"),
            Route("/experiments/{experiment_id}/points/{point_index:index}/images/{image_index:index}/original",
                  routes.original, name="original"),
            Route("/compare", routes.compare, name="compare"),
            Route("/failures", routes.failures, name="failures"),
            Route("/workers", routes.workers, name="workers"),
            Route("/events", live.events, name="events"),
            Route("/vendor/plotly.min.js", lambda _: FileResponse(plotly_js(), media_type="text/javascript"),
                  name="plotly"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
        exception_handlers={errors.CodecbenchError: refused, HTTPException: http_error},
    )
    app.state.templates = templates
    app.add_middleware(_SecurityHeaders)
    return app
