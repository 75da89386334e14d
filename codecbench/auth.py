"""Who is calling: bearer tokens, their hashes, the callers' roles, and token files.

Every call to a codecbench service carries ``authorization: Bearer <token>`` metadata (sent by
:func:`codecbench.rpc.channel` as call credentials). Three kinds of token exist:

- **user tokens** (``codecbench-orchestrator token create NAME [--admin]``): 256 random bits from
  :mod:`secrets`, shown once; the orchestrator's store keeps only their SHA-256 with the user's
  name and role (``user`` or ``admin``). A plain SHA-256 is enough here (argon2 was rejected): a
  slow, salted hash protects *guessable* secrets such as passwords, and a 256-bit random token
  cannot be guessed from its hash, so the lookup stays one indexed equality on every call.
- **the enrollment secret** (``--enroll-token-file`` of both services): lets a worker call
  ``RegisterWorker`` and nothing else.
- **per-worker credentials**: returned by ``RegisterWorker`` and bound to one worker id; the worker
  sends it on ``Heartbeat`` and ``ReadBlob``, and the orchestrator presents it back when it calls
  the worker (the worker accepts experiment RPCs only with it, or with a local admin token).

Every comparison of a presented secret is by hash lookup or :func:`hmac.compare_digest`; no secret
is ever logged (log lines name the user or worker id instead).

Token discovery for clients (:func:`find_token`): an explicit token, else ``$CODECBENCH_TOKEN``,
else the file ``$CODECBENCH_TOKEN_FILE``, else ``.codecbench/client.token`` (what ``codecbench up``
writes into its default data directory, 0600).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codecbench import errors

ROLE_USER = "user"
ROLE_ADMIN = "admin"
ROLES = (ROLE_USER, ROLE_ADMIN)
# Callers that are services, not users.
ROLE_WORKER = "worker"  # a registered worker, by its per-worker credential
ROLE_ENROLLEE = "enrollee"  # holder of the enrollment secret: may register, nothing else
ROLE_ORCHESTRATOR = "orchestrator"  # on a worker: the orchestrator presenting the worker's credential

AUTHORIZATION = "authorization"
TOKEN_ENV = "CODECBENCH_TOKEN"
TOKEN_FILE_ENV = "CODECBENCH_TOKEN_FILE"
# The client token file of ``codecbench up``, relative to its data directory.
CLIENT_TOKEN_FILE = "client.token"
DEFAULT_TOKEN_PATH = Path(".codecbench") / CLIENT_TOKEN_FILE
# Where a service keeps its enrollment secret by default, relative to its data directory.
ENROLL_TOKEN_FILE = "enroll.token"
TOKEN_BYTES = 32  # 256 bits
# Methods every caller may use without a token (probes and tools).
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: the user's name, or the worker id for a worker.
        role: one of the ``ROLE_*`` constants.
    """

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Whether the caller has the admin role."""
        return self.role == ROLE_ADMIN


# The caller of the RPC being handled; set by the service's guard before the handler runs.
_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("codecbench_principal", default=None)


def current() -> Principal:
    """The authenticated caller of the RPC being handled.

    Returns:
        The principal the server's guard set for this call.

    Raises:
        errors.Unauthenticated: no guard authenticated this call (a server without one).
    """
    principal = _current.get()
    if principal is None:
        raise errors.Unauthenticated("the call was not authenticated")
    return principal


def set_current(principal: Principal) -> None:
    """Records the caller of the RPC being handled (each RPC runs in its own task and context)."""
    _current.set(principal)


def new_token() -> str:
    """A new random token: 256 bits from :mod:`secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored (see the module docstring for why SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (:func:`hmac.compare_digest`)."""
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer TOKEN`` entry in call metadata, or ``""``.

    Raises:
        errors.Unauthenticated: an authorization entry that is not a bearer token, or more than one
            (which of two identities a call means is not for the server to guess).
    """
    entries = [value for key, value in metadata or () if key.lower() == AUTHORIZATION]
    if not entries:
        return ""
    if len(entries) > 1:
        raise errors.Unauthenticated(f"{len(entries)} authorization entries: send exactly one 'Bearer TOKEN'")
    text = entries[0].decode(errors="replace") if isinstance(entries[0], bytes) else entries[0]
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated("the authorization metadata must be 'Bearer TOKEN'")
    return token.strip()


def write_secret_file(path: Path, secret: str) -> None:
    """Writes a secret to a new file created with mode 0600 (its folder 0700 when created here).

    Raises:
        FileExistsError: the file exists (secrets are never overwritten).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def read_secret_file(path: Path) -> str:
    """The secret in a file (surrounding whitespace stripped).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is empty.
    """
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


def ensure_secret_file(path: Path) -> str:
    """The secret in ``path``, made (random, 0600) when the file does not exist yet.

    Raises:
        OSError: the file cannot be read or created.
        ValueError: the file is empty.
    """
    try:
        write_secret_file(path, new_token())
    except FileExistsError:
        pass
    return read_secret_file(path)


def find_token(token: str | None = None, token_file: Path | None = None) -> str:
    """The token a client sends: see the module docstring for the order.

    Args:
        token: an explicit token (wins).
        token_file: a file holding the token (next).

    Returns:
        The token, or ``""`` when none is found (calls then fail with UNAUTHENTICATED).

    Raises:
        OSError: ``token_file`` (or ``$CODECBENCH_TOKEN_FILE``) cannot be read.
    """
    if token:
        return token
    if token_file is not None:
        return read_secret_file(token_file)
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    if os.environ.get(TOKEN_FILE_ENV):
        return read_secret_file(Path(os.environ[TOKEN_FILE_ENV]))
    if DEFAULT_TOKEN_PATH.is_file():
        return read_secret_file(DEFAULT_TOKEN_PATH)
    return ""


def missing_token_hint() -> str:
    """What a caller without a token is told."""
    return (f"send 'authorization: Bearer TOKEN' (codecbench reads ${TOKEN_ENV}, --token-file, "
            f"${TOKEN_FILE_ENV} or {DEFAULT_TOKEN_PATH}; `codecbench-orchestrator token create NAME` makes one)")


__all__ = [
    "AUTHORIZATION", "CLIENT_TOKEN_FILE", "DEFAULT_TOKEN_PATH", "ENROLL_TOKEN_FILE", "OPEN_SERVICES", "ROLES",
    "ROLE_ADMIN", "ROLE_ENROLLEE", "ROLE_ORCHESTRATOR", "ROLE_USER", "ROLE_WORKER", "TOKEN_ENV", "TOKEN_FILE_ENV",
    "Principal", "bearer", "current", "ensure_secret_file", "find_token", "missing_token_hint", "new_token",
    "read_secret_file", "same_secret", "set_current", "token_hash", "write_secret_file",
]
