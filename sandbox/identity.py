"""Who an agent process is: uid/gid 65534 (nobody), no capabilities, ``no_new_privs``.

A uid inside a user namespace is not enough when the worker runs as root: ``bwrap --unshare-user
--uid 65534`` started by root leaves the outside uid 0, and the process still reads root-only
files. Dropping the real uid before bwrap (``setpriv``) was the other option, but then bwrap
resolves every bind source as uid 65534 and cannot reach a runtime under ``/root`` (pyenv) or a
0700 temporary folder. So, as root, bwrap runs privileged without a user namespace (it builds
the view as root), keeps only the capabilities needed to change uid (and, for the warm template,
to create namespaces), and the sandbox runtime itself calls :func:`become_agent_user` before any
agent code runs: a real ``setresuid(65534)``, after which the bound runtime is reachable through
the folders bwrap created (mode 0755) and every root-only host file is refused.

When the worker is not root, bwrap runs unprivileged in a user namespace that maps the worker's
uid to 65534 (``--uid 65534``): the agent holds no more than the worker's user, and sees none
of its files (they are not in the view).
"""

from __future__ import annotations

import os

from sandbox import namespaces

AGENT_UID = 65534
AGENT_GID = 65534
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


def become_agent_user() -> None:
    """Makes this process uid/gid 65534 with no supplementary groups, no capabilities (bounding
    set included) and ``no_new_privs``. Idempotent; call it before any agent code runs.

    Raises:
        namespaces.NamespaceError, PermissionError: the kernel refused (the process must not go on).
    """
    namespaces.drop_bounding_set()  # needs CAP_SETPCAP, so before the uid changes
    if os.getuid() != AGENT_UID or os.geteuid() != AGENT_UID:
        os.setgroups([])
        os.setresgid(AGENT_GID, AGENT_GID, AGENT_GID)
        os.setresuid(AGENT_UID, AGENT_UID, AGENT_UID)  # clears the permitted and effective sets
    namespaces.drop_all_capabilities()


__all__ = ["AGENT_GID", "AGENT_UID", "become_agent_user", "bwrap_args", "worker_is_root"]
