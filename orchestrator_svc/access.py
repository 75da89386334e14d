"""Who may call which orchestrator RPC: the guard that the error boundary runs before every handler.

Authentication (this module): the bearer token is looked up by its SHA-256 among the users' API
tokens, then among the per-worker credentials; else it must be the enrollment secret (compared in
constant time). Missing or unknown: UNAUTHENTICATED. Then each method admits some roles
(:data:`ROLES_OF_METHOD`); another role: PERMISSION_DENIED. Health and reflection are open.

Authorization on data (whose experiment, which blob) is the service's, on the principal this guard
sets (:func:`codecbench.auth.current`)::

    method                      user   admin   worker   enrollee
    experiments, datasets       own    all     -        -
    ReadBlob                    own+shared all  blobs of experiments dispatched to it   -
    ListWorkers                 counts all     -        -
    ShareDataset, DrainWorker   -      yes     -        -
    ShareExperiment             -      yes     -        -
    Heartbeat                   -      -       itself   -
    RegisterWorker              -      -       -        yes
"""

from __future__ import annotations

from codecbench import auth, errors
from orchestrator_svc.store import Store

_USERS = frozenset({auth.ROLE_USER, auth.ROLE_ADMIN})
ROLES_OF_METHOD: dict[str, frozenset[str]] = {
    "CreateExperiment": _USERS,
    "GetExperiment": _USERS,
    "ListExperiments": _USERS,
    "CancelExperiment": _USERS,
    "WatchExperiment": _USERS,
    "CreateDataset": _USERS,
    "ListDatasets": _USERS,
    "ShareDataset": frozenset({auth.ROLE_ADMIN}),
    "ShareExperiment": frozenset({auth.ROLE_ADMIN}),
    "ReadBlob": _USERS | {auth.ROLE_WORKER},
    "RegisterWorker": frozenset({auth.ROLE_ENROLLEE}),
    "Heartbeat": frozenset({auth.ROLE_WORKER}),
    "ListWorkers": _USERS,
    # Admins drain any worker; a worker drains itself (SIGTERM: a rolling upgrade), checked by the service.
    "DrainWorker": frozenset({auth.ROLE_ADMIN, auth.ROLE_WORKER}),
    "CreateExperiments": _USERS,
    "WatchExperiments": _USERS,
}


class OrchestratorGuard:
    """Authenticates every orchestrator call (a :data:`codecbench.status.Guard`).

    Args:
        store: holds the hashes of API tokens and per-worker credentials.
        enroll_secret: the secret that lets a worker register.
    """

    def __init__(self, store: Store, enroll_secret: str) -> None:
        self.store = store
        self.enroll_secret = enroll_secret
        # Non-empty while this orchestrator is a standby (orchestrator_svc.leadership): why every
        # call but health and reflection is refused UNAVAILABLE (a client or worker retries, and
        # reaches the leader through the service address).
        self.standby = ""

    def identify(self, token: str) -> auth.Principal | None:
        """The caller a token stands for, or None when it is unknown."""
        digest = auth.token_hash(token)
        if (record := self.store.find_token(digest)) is not None:
            return auth.Principal(record.name, record.role)
        if (worker_id := self.store.worker_of_credential(digest)) is not None:
            return auth.Principal(worker_id, auth.ROLE_WORKER)
        if auth.same_secret(token, self.enroll_secret):
            return auth.Principal("enrollee", auth.ROLE_ENROLLEE)
        return None

    def __call__(self, full_method: str, metadata: object) -> auth.Principal | None:
        """Authenticates one call.

        Returns:
            The caller, or None for an open method (health, reflection).

        Raises:
            errors.Unavailable: this orchestrator is a standby.
            errors.Unauthenticated: no token, or one that is not valid.
            errors.PermissionDenied: a valid caller whose role may not call this method.
        """
        if full_method.startswith(auth.OPEN_SERVICES):
            return None
        if self.standby:
            raise errors.Unavailable(self.standby, reason=errors.REASON_STANDBY)
        token = auth.bearer(metadata)  # type: ignore[arg-type]
        if not token:
            raise errors.Unauthenticated(f"missing bearer token: {auth.missing_token_hint()}")
        principal = self.identify(token)
        if principal is None:
            raise errors.Unauthenticated("the bearer token is not valid here (unknown, or for another orchestrator)")
        method = full_method.rsplit("/", 1)[-1]
        if principal.role not in ROLES_OF_METHOD.get(method, frozenset()):
            raise errors.PermissionDenied(f"{method} is not allowed for {principal.role} {principal.name!r}")
        return principal


__all__ = ["ROLES_OF_METHOD", "OrchestratorGuard"]
