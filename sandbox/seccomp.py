"""The seccomp filter of every agent process: kernel interfaces an agent has no use for are refused.

A red-team codec passed whole images from its encoder to its decoder through the per-uid user
keyring (``add_key``/``keyctl``), and could ``unshare(CLONE_NEWUSER)`` to hold every capability
in a nested user namespace. Namespaces, uids and a read-only view do not cover such kernel
state, so every agent process (and its init) runs under a filter that answers ``EPERM`` to:

- the key management calls (``add_key``, ``keyctl``, ``request_key``): keys outlive processes
  and are shared by every process of a uid;
- new namespaces: ``unshare``, ``setns``, and ``clone`` with any ``CLONE_NEW*`` flag (``clone``
  itself stays: threads and ``fork`` use it); ``clone3`` answers ``ENOSYS``, so glibc falls back
  to ``clone``, whose flags the filter can read (``clone3`` passes them in memory, which it cannot);
- other processes' memory and tracing: ``ptrace``, ``process_vm_readv``/``process_vm_writev``;
- kernel attack surface an image codec never needs: ``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring_*``, the ``mount`` family, ``kexec_*``, kernel modules, swap,
  ``reboot``, ``syslog``, ``acct``, ``quotactl``, ``chroot``.

Everything else is allowed (torch, numpy, CUDA and threads work unchanged). The same rules
cover the x32 ABI; system calls of any other ABI (``int 0x80``) kill the process.

The filter is built once in the worker with libseccomp (``pyseccomp``, a ctypes wrapper of
``libseccomp.so.2``) and exported as a classic BPF program; an agent process receives those
bytes on a descriptor and loads them itself (:func:`install`, plain ``seccomp(2)``), after
``no_new_privs`` and before any agent code runs, so nothing in the sandbox needs libseccomp.
Where libseccomp cannot be loaded, :func:`program` raises :class:`SeccompUnavailable` and a
worker using bubblewrap refuses to start (fail closed, see :func:`sandbox.launchers.make_launcher`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import tempfile
from functools import cache
from typing import Any

from sandbox import namespaces

CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUSER = 0x10000000
# Every namespace flag clone(2) takes in its first argument (CLONE_NEWTIME is clone3/unshare only:
# in clone's flags its bit is part of the exit signal).
CLONE_NAMESPACE_FLAGS = (
    namespaces.CLONE_NEWNS, CLONE_NEWCGROUP, namespaces.CLONE_NEWUTS, namespaces.CLONE_NEWIPC, CLONE_NEWUSER,
    namespaces.CLONE_NEWPID, namespaces.CLONE_NEWNET,
)
# Refused with EPERM whatever their arguments.
DENIED = (
    "add_key", "keyctl", "request_key",
    "unshare", "setns",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "chroot",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl",
)
# Refused with ENOSYS: glibc then falls back to clone(2), which the filter can inspect.
NOT_IMPLEMENTED = ("clone3",)

_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_BPF_INSTRUCTION_BYTES = 8


class SeccompUnavailable(RuntimeError):
    """libseccomp (or a rule of the filter) is missing here, so no filter can be built."""


def _pyseccomp() -> Any:
    """The ``pyseccomp`` module. It finds libseccomp with ``ctypes.util.find_library``, which
    needs ``ldconfig``; where that finds nothing, the soname is tried directly."""
    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return original(name) or ("libseccomp.so.2" if name == "seccomp" else None)

    ctypes.util.find_library = find_library
    try:
        import pyseccomp  # type: ignore[import-untyped]
    except (ImportError, OSError, RuntimeError) as exc:
        raise SeccompUnavailable(f"libseccomp cannot be loaded ({type(exc).__name__}: {exc})") from exc
    finally:
        ctypes.util.find_library = original
    return pyseccomp


@cache
def program() -> bytes:
    """The filter as a classic BPF program (an array of ``struct sock_filter``), for :func:`install`.

    Raises:
        SeccompUnavailable: libseccomp is missing, or does not know one of the refused calls.
    """
    seccomp = _pyseccomp()
    try:
        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        if seccomp.system_arch() == seccomp.Arch.X86_64:
            # x32 calls carry the x86_64 audit arch with bit 30 set in the number: without the
            # x32 ABI in the filter they would pass every rule (where the kernel enables x32).
            rules.add_arch(seccomp.Arch.X32)
        for name in DENIED:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        for name in NOT_IMPLEMENTED:
            rules.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
        for flag in CLONE_NAMESPACE_FLAGS:  # one rule per flag: rules are ORed, comparisons ANDed
            rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        with tempfile.TemporaryFile() as exported:
            rules.export_bpf(exported)
            exported.seek(0)
            bpf = exported.read()
    except (OSError, ValueError, RuntimeError) as exc:
        raise SeccompUnavailable(f"libseccomp refused the filter ({type(exc).__name__}: {exc})") from exc
    if not bpf or len(bpf) % _BPF_INSTRUCTION_BYTES:
        raise SeccompUnavailable(f"libseccomp exported a filter of {len(bpf)} bytes")
    return bpf


def write_to_pipe(bpf: bytes) -> int:
    """A pipe's read end holding ``bpf`` (a few hundred bytes: fits the pipe's buffer), for a child
    to :func:`read_program` from; the caller closes it once the child has it."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, bpf)
    finally:
        os.close(write_end)
    return read_end


def read_program(fd: int) -> bytes:
    """Reads a program written by :func:`write_to_pipe` to the end and closes ``fd``."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def install(bpf: bytes) -> None:
    """Sets ``no_new_privs`` and loads ``bpf`` on every thread of this process; it holds for
    every process this one starts, and cannot be removed.

    Raises:
        OSError: the kernel refused (the process must not go on to run agent code).
    """
    if not bpf or len(bpf) % _BPF_INSTRUCTION_BYTES:
        raise OSError(errno.EINVAL, f"not a BPF program ({len(bpf)} bytes)")
    number = _SYS_SECCOMP.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"seccomp: unsupported architecture {os.uname().machine}")
    namespaces.prctl(namespaces.PR_SET_NO_NEW_PRIVS, 1)
    buffer = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // _BPF_INSTRUCTION_BYTES, ctypes.addressof(buffer))
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                           ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if result != 0:
        code = ctypes.get_errno() if result < 0 else errno.EBUSY  # > 0: a thread that could not be synced
        raise OSError(code, f"seccomp(SET_MODE_FILTER): {os.strerror(code)}")


def filter_mode() -> int:
    """The ``Seccomp:`` field of /proc/self/status: 2 once a filter is loaded."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return 0


__all__ = [
    "CLONE_NAMESPACE_FLAGS", "DENIED", "NOT_IMPLEMENTED", "SeccompUnavailable", "filter_mode", "install", "program",
    "read_program", "write_to_pipe",
]
