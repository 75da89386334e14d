"""Who an agent process is: an unprivileged uid/gid of its role, no capabilities, ``no_new_privs``.

A uid inside a user namespace is not enough when the worker runs as root: ``bwrap --unshare-user
--uid 65534`` started by root leaves the outside uid 0, and the process still reads root-only
files. Dropping the real uid before bwrap (``setpriv``) was the other option, but then bwrap
resolves every bind source as uid 65534 and cannot reach a runtime under ``/root`` (pyenv) or a
0700 temporary folder. So, as root, bwrap runs privileged without a user namespace (it builds
the view as root), keeps only the capabilities needed to change uid (and, for the warm template,
to create namespaces), and the sandbox runtime itself calls :func:`become_agent_user` before any
agent code runs: a real ``setresuid`` to its role's uid, after which the bound runtime is reachable through
the folders bwrap created (mode 0755) and every root-only host file is refused.

Encoders and decoders never share a uid (as root): an encoder is uid/gid 65533
(:data:`ENCODER_UID`), a decoder 65532 (:data:`DECODER_UID`), whatever the experiment or worker.
Kernel state kept per uid outside every namespace (the user keyring, inotify instance counts,
``RLIMIT_NPROC`` process counts, POSIX mqueue bytes) was a channel from an encoder to the
decoder of the same run when both were uid 65534. These uids must belong to no other account
of the host.

When the worker is not root, bwrap runs unprivileged in a user namespace that maps the worker's
uid to 65534 (``--uid 65534``): the agent holds no more than the worker's user, and sees none
of its files (they are not in the view). Only one uid can be mapped without a setuid helper, so
there every agent process is the worker's uid outside its namespace; what keeps per-uid counters
from carrying data then is that an encoder has ended before its decoder starts
(:mod:`worker_svc.executor`) and the seccomp filter (:mod:`sandbox.seccomp`) for keys.
"""

from __future__ import annotations

import os

from codecbench.v1 import sandbox_pb2
from sandbox import namespaces

AGENT_UID = 65534
AGENT_GID = 65534
ENCODER_UID = 65533
DECODER_UID = 65532
_ROLE_UIDS = {sandbox_pb2.SANDBOX_ROLE_ENCODER: ENCODER_UID, sandbox_pb2.SANDBOX_ROLE_DECODER: DECODER_UID}
# What bwrap leaves a privileged (root) sandbox: changing uid/gid and dropping the bounding set.
_DROP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
# The warm template also creates each agent process's namespaces and mounts.
_TEMPLATE_CAPS = (*_DROP_CAPS, "CAP_SYS_ADMIN")


def worker_is_root() -> bool:
    """Whether bwrap runs privileged here (the worker's effective uid is 0)."""
    return os.geteuid() == 0


def bwrap_args(template: bool) -> list[str]:
    """The namespace and capability arguments of bwrap for an agent process or the template.

    As root: every namespace but the user namespace (so :func:`become_agent_user` changes the
    real uid) and only the capabilities that takes. Otherwise: a user namespace mapping the
    worker's uid to 65534; the template keeps its capabilities inside it.
    """
    shared = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if worker_is_root():
        args = [*shared, "--cap-drop", "ALL"]
        for cap in _TEMPLATE_CAPS if template else _DROP_CAPS:
            args += ["--cap-add", cap]
        return args
    args = [*shared, "--unshare-user", "--uid", str(AGENT_UID), "--gid", str(AGENT_GID)]
    return [*args, "--cap-add", "ALL"] if template else [*args, "--cap-drop", "ALL"]


def uid_for(role: sandbox_pb2.SandboxRole.ValueType) -> int:
    """The uid (and gid) an agent process of ``role`` runs as, decided by the worker.

    As root: :data:`ENCODER_UID` or :data:`DECODER_UID` (:data:`AGENT_UID` for no role).
    Otherwise :data:`AGENT_UID`, the one uid bwrap's user namespace maps.
    """
    return _ROLE_UIDS.get(role, AGENT_UID) if worker_is_root() else AGENT_UID


def become_agent_user(uid: int = AGENT_UID) -> None:
    """Makes this process uid/gid ``uid`` with no supplementary groups, no capabilities (bounding
    set included) and ``no_new_privs``. Idempotent; call it before any agent code runs.

    Raises:
        namespaces.NamespaceError, PermissionError: the kernel refused (the process must not go on).
        ValueError: ``uid`` is 0.
    """
    if uid <= 0:
        raise ValueError(f"an agent process cannot run as uid {uid}")
    namespaces.drop_bounding_set()  # needs CAP_SETPCAP, so before the uid changes
    if os.getuid() != uid or os.geteuid() != uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # clears the permitted and effective sets
    namespaces.drop_all_capabilities()


__all__ = [
    "AGENT_GID", "AGENT_UID", "DECODER_UID", "ENCODER_UID", "become_agent_user", "bwrap_args", "uid_for",
    "worker_is_root",
]
