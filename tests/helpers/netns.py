"""A private network of Linux network namespaces for multi-host tests (root only).

Each host is a network namespace with one veth link into a bridge that lives in a namespace of
its own (the switch), so cutting a host's link (``ip link set PORT down`` on the switch side) is a
partition: no process is killed, packets just stop. Addresses are in ``10.213.7.0/24`` and exist
only inside the namespaces made here; names carry the owner's pid and a random suffix, so two runs
on one machine do not meet, and a run sweeps the namespaces of a killed one (:func:`sweep_stale`).
:func:`private_network` deletes every namespace at the end, failure or not (deleting a
namespace removes its veth ends and the bridge).

Layout (host ``i`` gets address ``10.213.7.(i+1)``)::

    <host0 ns> eth0 ──veth── p0 ┐
    <host1 ns> eth0 ──veth── p1 ├─ br0  <switch ns>
    <host2 ns> eth0 ──veth── p2 ┘
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SUBNET_PREFIX = "10.213.7."

# No `ip` or not root: namespaces cannot be made; the reason is the skip message.
requires_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2's `ip` (ip netns add, veth pairs, a bridge)",
)


def ip(*args: str) -> None:
    """Runs ``ip ARGS``; raises with ip's message when it fails.

    Raises:
        RuntimeError: ``ip`` exited non-zero (its stderr is in the message).
    """
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    """One host of the private network.

    Attributes:
        name: what the test calls it (``"orchestrator"``, ``"worker-a"``).
        netns: its network namespace (``ip netns exec NETNS ...`` runs a command there).
        address: its IPv4 address, inside ``netns`` only.
        port: its link's end on the switch, in ``switch``.
        switch: the switch's namespace.
    """

    name: str
    netns: str
    address: str
    port: str
    switch: str

    @property
    def exec_prefix(self) -> list[str]:
        """The command that runs another one inside this host's namespace (it execs, not forks)."""
        return ["ip", "netns", "exec", self.netns]

    def link(self, up: bool) -> None:
        """Connects (``up``) or cuts this host's link at the switch; no process is touched."""
        ip("-n", self.switch, "link", "set", self.port, "up" if up else "down")


@contextmanager
def private_network(names: Sequence[str]) -> Iterator[dict[str, Host]]:
    """Namespaces for ``names`` on one bridge; every namespace made is deleted on exit.

    Yields:
        The hosts by name, addressed ``10.213.7.1``, ``.2``, ... in the order of ``names``.
    """
    sweep_stale()
    # The owner's pid in every name: a sweep of a later run knows a leftover by its dead owner.
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    switch = f"cb-sw-{tag}"
    made: list[str] = []
    try:
        ip("netns", "add", switch)
        made.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        hosts = {}
        for i, name in enumerate(names):
            host = Host(name, f"cb-h{i}-{tag}", f"{SUBNET_PREFIX}{i + 1}", f"p{i}", switch)
            ip("netns", "add", host.netns)
            made.append(host.netns)
            # Both ends are made inside their namespaces: no interface ever appears in this one.
            ip("link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name", host.port,
               "netns", switch)
            ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.netns, "link", "set", "lo", "up")
            ip("-n", host.netns, "link", "set", "eth0", "up")
            ip("-n", switch, "link", "set", host.port, "master", "br0")
            ip("-n", switch, "link", "set", host.port, "up")
            hosts[name] = host
        yield hosts
    finally:
        for netns in reversed(made):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30, check=False)


STALE_NAME = re.compile(r"^cb-(?:sw|h\d+)-(\d+)-[0-9a-f]+$")


def sweep_stale() -> list[str]:
    """Deletes the namespaces of :func:`private_network` whose owner process (the pid in the name) is
    gone, as a killed test run leaves them, after killing the processes still in them.

    Returns:
        The names deleted.
    """
    swept = []
    for netns in sorted(netns_names()):
        match = STALE_NAME.match(netns)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30,
                              check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30, check=False)
        swept.append(netns)
    return swept


def reachable(address: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether ``address`` answers on the network (no ``ping`` here): a TCP connect that is
    accepted or refused means yes; one that times out or finds no route, no."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:  # TimeoutError, EHOSTUNREACH, ENETUNREACH
        return False


def netns_names() -> set[str]:
    """The names of the network namespaces that exist now (``ip netns list``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


__all__ = ["SUBNET_PREFIX", "Host", "ip", "netns_names", "private_network", "reachable", "requires_netns",
           "sweep_stale"]
