"""Linux namespace, mount and capability calls for a freshly forked agent process (ctypes).

Used by the warm template (:mod:`sandbox.template`): every forked agent process gets its own
network, mount, PID, IPC and UTS namespaces, a private tmpfs ``/tmp`` and ``/proc``, and then
drops every capability and sets ``no_new_privs`` before any agent code runs. Constants are the
kernel's (``linux/sched.h``, ``linux/mount.h``, ``linux/prctl.h``, ``linux/capability.h``).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
AGENT_NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_LAST = 63
_CAP_SETPCAP = 8

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(OSError):
    """A namespace, mount or capability call that the kernel refused."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise NamespaceError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    """Moves the caller into new namespaces (``man 2 unshare``).

    The new PID namespace applies to the caller's next child, not the caller.
    """
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    """Joins the namespace of ``fd`` (``man 2 setns``): with CLONE_NEWPID, the caller's next children."""
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """Mounts ``source`` on ``target`` (``man 2 mount``)."""
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None),
        f"mount {fstype or source} on {target}",
    )


def make_mounts_private() -> None:
    """Stops mount events from propagating back to the template's mount namespace."""
    mount("none", "/", None, MS_REC | MS_PRIVATE)


def prctl(option: int, arg: int) -> None:
    """One process-control operation with one argument (``man 2 prctl``)."""
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def set_process_name(name: str) -> None:
    """Sets ``/proc/PID/comm`` (at most 15 bytes), so operators and tests can find agent processes."""
    _check(_libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0), "prctl(PR_SET_NAME)")


def die_with_parent(signal_number: int) -> None:
    """The kernel sends ``signal_number`` to this process when its parent exits."""
    prctl(PR_SET_PDEATHSIG, signal_number)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_bounding_set() -> None:
    """Empties the capability bounding set, so nothing this process executes can gain a
    capability again. Needs CAP_SETPCAP; without it (an agent process bwrap already stripped)
    there is nothing this process could pass on, and the call does nothing."""
    if not effective_capabilities() & (1 << _CAP_SETPCAP):
        return
    for cap in range(_CAP_LAST + 1):
        # EINVAL (22): the running kernel has no such capability.
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            _check(-1, f"drop capability {cap} from the bounding set")


def drop_all_capabilities() -> None:
    """Empties the bounding, effective, permitted and inheritable sets and sets no_new_privs, so
    neither this process nor anything it executes can hold a capability again."""
    drop_bounding_set()
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset (drop all)")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def effective_capabilities() -> int:
    """The CapEff mask of this process (from /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0
