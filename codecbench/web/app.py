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
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codecbench import auth, errors, rpc
from codecbench.web import live, present, routes, sessions

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
    """Where the orchestrator is, whose token a one-time login code logs in with, and which Host
    headers the view answers.

    Attributes:
        server: the orchestrator's ``host:port``.
        token: the token of a one-time code's session; None: found by :func:`codecbench.auth.find_token`.
        token_file: a file holding the token (used when ``token`` is None).
        tls: TLS settings of the channels to the orchestrator.
        hosts: host names the view answers besides 127.0.0.1 and localhost (the address it is bound
            to); a request naming another host (DNS rebinding) is refused with 400.
        login_code_ttl_s: how long a one-time login code works, in seconds.
    """

    server: str
    token: str | None = None
    token_file: Path | None = None
    tls: rpc.TlsConfig = rpc.NO_TLS
    hosts: tuple[str, ...] = ()
    login_code_ttl_s: float = sessions.LOGIN_CODE_TTL_S


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
                                      # same-origin, not no-referrer: under no-referrer browsers
                                      # send "Origin: null" with a POST, which SameOriginPosts refuses
                                      (b"referrer-policy", b"same-origin"),
                                      # no other site may embed these pages' images (kept reconstructions)
                                      (b"cross-origin-resource-policy", b"same-origin")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: WebSettings) -> Starlette:
    """The web view as an ASGI application (serve it with uvicorn, as ``codecbench web`` does).

    Every route but the login page and static assets needs a browser session
    (:mod:`codecbench.web.sessions`); ``app.state.sessions.issue_code()`` makes a one-time login
    code. The sessions' orchestrator clients are closed when the application stops (its lifespan).

    Args:
        settings: the orchestrator's address, the token and TLS settings.

    Returns:
        The Starlette application.

    Raises:
        OSError: the token file cannot be read.
    """
    templates = Jinja2Templates(directory=HERE / "templates")
    present.install(templates.env)

    logins = sessions.Sessions(settings.server, settings.tls, auth.find_token(settings.token, settings.token_file),
                               code_ttl_s=settings.login_code_ttl_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await logins.close()

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.CodecbenchError)
        if isinstance(exc, errors.Unauthenticated):  # the token is revoked or unknown: log in again
            await logins.end(sessions.current(request))
            return sessions.login_page(request, "The orchestrator refused this session's token: log in again.", 401)
        status = next((code for cls, code in _HTTP_STATUS if isinstance(exc, cls)), 502)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": str(exc)},
                                          status_code=status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                                          status_code=exc.status_code)

    app = Starlette(
        routes=[
            Route("/login", sessions.login, methods=["GET", "POST"], name="login"),
            Route("/logout", sessions.logout, methods=["POST"], name="logout"),
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
    app.state.sessions = logins
    # added innermost first: headers on every answer, then Host, Origin, and the session last
    app.add_middleware(sessions.RequireSession, sessions=logins)
    app.add_middleware(sessions.SameOriginPosts)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", *settings.hosts])
    app.add_middleware(_SecurityHeaders)
    return app
