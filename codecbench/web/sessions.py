"""Who is looking: the web view's login, browser sessions and the checks that keep other local
processes and other web pages out (as Jupyter does).

The view shows what a codecbench token may see, so every route but the login page and the static
assets needs an authenticated browser session. Two ways in:

- the one-time login URL that ``codecbench web`` prints (``/login?code=...``): a 256-bit random
  code (:func:`secrets.token_urlsafe`), good once, for :data:`LOGIN_CODE_TTL_S`; it logs in as the
  CLI's token owner and redirects to ``/`` so the URL bar drops it;
- the login form, where a user pastes their own API token (POST): several users can share one view,
  each browser session calling the orchestrator with its own token through its own
  :class:`~codecbench.client.Client`; no session ever uses another's.

The session cookie holds a random id (the server keeps id -> token; the token never leaves it),
``HttpOnly``, ``SameSite=Strict``, ``Path=/`` and ``Secure`` over TLS. A token the orchestrator
refuses (UNAUTHENTICATED) ends its session. ``POST /logout`` ends one.

Other local processes and web pages: the app checks the Host header (Starlette's
``TrustedHostMiddleware``, in :mod:`codecbench.web.app`) against DNS rebinding, and
:class:`SameOriginPosts` refuses a POST whose ``Origin`` is another site's (CSRF; a session cookie
is ``SameSite=Strict`` besides). Signed cookies were rejected: a server-side map needs no secret
key and lets a refused token end its session at once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from codecbench import errors, rpc
from codecbench.client import Client

COOKIE = "codecbench_session"
# How long the printed one-time login URL works (Jupyter's token lasts as long as the server; a
# short life limits what a leaked terminal scrollback gives away).
LOGIN_CODE_TTL_S = 600.0
# The longest body POST /login reads (a token is 43 characters; the form adds its field name).
MAX_LOGIN_BODY_BYTES = 4096
# Served without a session: the login page, and assets that hold no user's data.
PUBLIC_PATHS = ("/login",)
PUBLIC_PREFIXES = ("/static/", "/vendor/")


@dataclass(frozen=True)
class Session:
    """One browser's login: its random id (the cookie's value), its token and its client."""

    session_id: str
    token: str
    client: Client


class Sessions:
    """The view's one-time login codes and browser sessions, in memory (they end with the process)."""

    def __init__(self, server: str, tls: rpc.TlsConfig, cli_token: str,
                 code_ttl_s: float = LOGIN_CODE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        """Args:
        server: the orchestrator's ``host:port``.
        tls: TLS settings of each session's channel.
        cli_token: the token a one-time code logs in with (the one ``codecbench web`` runs with).
        code_ttl_s: how long a code is good, in seconds.
        clock: monotonic seconds (tests pass their own).
        """
        self.server, self.tls, self.cli_token = server, tls, cli_token
        self.code_ttl_s, self.clock = code_ttl_s, clock
        self._codes: dict[str, float] = {}  # code -> when it expires (clock seconds)
        self._sessions: dict[str, Session] = {}

    def issue_code(self) -> str:
        """A new one-time login code (256 random bits, URL-safe), good for ``code_ttl_s``."""
        code = secrets.token_urlsafe(32)
        self._codes[code] = self.clock() + self.code_ttl_s
        return code

    def redeem_code(self, code: str) -> bool:
        """Uses up ``code``; True when it was issued, unused and unexpired."""
        expires = self._codes.pop(code, None)
        return expires is not None and self.clock() < expires

    def open(self, token: str) -> Session:
        """A new session calling the orchestrator with ``token``."""
        session = Session(secrets.token_urlsafe(32), token, Client(self.server, token=token, tls=self.tls))
        self._sessions[session.session_id] = session
        return session

    def find(self, session_id: str | None) -> Session | None:
        """The session of a cookie's value, or None."""
        return self._sessions.get(session_id) if session_id else None

    async def end(self, session: Session) -> None:
        """Forgets ``session`` and closes its client (its calls in flight are cancelled)."""
        if self._sessions.pop(session.session_id, None) is not None:
            await session.client.close()

    async def close(self) -> None:
        """Ends every session (the app's shutdown)."""
        for session in list(self._sessions.values()):
            await self.end(session)


def current(request: Request) -> Session:
    """The request's session (:class:`RequireSession` put it there for every non-public route)."""
    session: Session = request.scope["state"]["session"]
    return session


def client(request: Request) -> Client:
    """The orchestrator client of the request's session (its own token)."""
    return current(request).client


def _sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


class RequireSession:
    """Answers every non-public request without a live session: 303 to ``/login`` for a page a
    browser navigates to, 401 for anything else (event streams, images, POSTs); no data either way."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: passes public paths and requests with a live session (put in the scope's state)."""
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        session = self.sessions.find(request.cookies.get(COOKIE))
        if session is None:
            refused: Response = PlainTextResponse("login required", status_code=401)
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                refused = RedirectResponse("/login", status_code=303)
            await refused(scope, receive, send)
            return
        scope.setdefault("state", {})["session"] = session
        await self.app(scope, receive, send)


class SameOriginPosts:
    """Refuses (403) a POST whose ``Origin`` header names another origin than the one it was sent
    to (a form on another site posting to the view). A POST without ``Origin`` (not a browser's:
    browsers send it with every POST) passes; it carries no cookie a browser sent for another site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: refuses a cross-origin POST, passes anything else."""
        if scope["type"] == "http" and scope["method"] == "POST":
            request = Request(scope)
            origin = request.headers.get("origin")
            if origin is not None and not _same_origin(origin, request):
                await PlainTextResponse("cross-origin POST refused", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _same_origin(origin: str, request: Request) -> bool:
    parts = urlsplit(origin)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.headers.get("host", ""))


def _logged_in(request: Request, session: Session) -> Response:
    # to / whatever was asked: the URL bar then shows no code
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session.session_id, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


def login_page(request: Request, problem: str = "", status_code: int = 200) -> Response:
    """The login form (and why the last try failed), with any session cookie deleted."""
    response: Response = request.app.state.templates.TemplateResponse(
        request, "login.html", {"problem": problem}, status_code=status_code)
    if COOKIE in request.cookies:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
    return response


async def login(request: Request) -> Response:
    """``GET /login``: the form, or with ``?code=`` a one-time code exchanged for a session as the
    CLI's token owner; ``POST /login``: a pasted token (form field ``token``) checked with the
    orchestrator, then a session of its own."""
    sessions = _sessions(request)
    if request.method == "GET":
        code = request.query_params.get("code")
        if code is None:
            return login_page(request)
        if not sessions.redeem_code(code):
            return login_page(request, "This login link was used already or has expired: run codecbench web "
                                       "again, or paste your API token.", 401)
        return _logged_in(request, sessions.open(sessions.cli_token))
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY_BYTES:
            return login_page(request, f"token: at most {MAX_LOGIN_BODY_BYTES} bytes", 400)
    token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
    if not token:
        return login_page(request, "token: paste your codecbench API token", 400)
    session = sessions.open(token)
    try:
        await session.client.workers()  # any authenticated call: does the orchestrator know this token?
    except errors.Unauthenticated:
        await sessions.end(session)
        return login_page(request, "The orchestrator refused this token.", 401)
    except BaseException:
        await sessions.end(session)
        raise
    return _logged_in(request, session)


async def logout(request: Request) -> Response:
    """``POST /logout``: ends this browser's session, then the login page."""
    await _sessions(request).end(current(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response
