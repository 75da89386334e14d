"""Test agent: reports what its process can see, as JSON in the bitstream."""

import json
import os


def _status(key: str) -> str:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return ""


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        with open("/proc/net/dev") as dev:
            interfaces = [line.split(":")[0].strip() for line in dev.readlines()[2:]]
        return json.dumps({
            "pid": os.getpid(),
            "cap_eff": _status("CapEff"),
            "no_new_privs": _status("NoNewPrivs"),
            "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "interfaces": interfaces,
            "cwd": os.getcwd(),
            "comm": open("/proc/self/comm").read().strip(),
            "init_comm": open("/proc/1/comm").read().strip(),
            "uid": os.getresuid(),
            "gid": os.getresgid(),
            "groups": os.getgroups(),
            "cap_bnd": _status("CapBnd"),
            "seccomp": _status("Seccomp"),
            "root": sorted(os.listdir("/")),
        }).encode()

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
