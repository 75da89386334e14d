"""Hostile (red-team L5): closes its request socket in encode and sleeps, answering nothing.

The worker must see the end of the stream at once and report the process, not wait for the
encode limit: the agent's init must not hold a copy of the socket.
"""

import os
import stat
import time


class Codec:
    def __init__(self, device: str) -> None:
        pass

    def encode(self, image) -> bytes:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                if fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.close(fd)
            except OSError:
                pass
        time.sleep(600)
        return b""

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
