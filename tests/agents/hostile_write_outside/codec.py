"""Hostile: tries to write files outside its private tmp; returns what it managed to write."""

import os


class Codec:
    def __init__(self, device: str, targets: str = "") -> None:
        self.targets = [t for t in targets.split(",") if t]

    def encode(self, image) -> bytes:
        written = []
        for directory in self.targets:
            path = os.path.join(directory, "codecbench-hostile-was-here")
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                written.append(path)
            except OSError:
                pass
        return ("wrote:" + ",".join(written)).encode()

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
