"""Test agent: reports, for each path of ``paths`` (comma-separated), its first bytes or the error."""
import json


class Codec:
    def __init__(self, device: str, paths: str = "") -> None:
        self.paths = [p for p in paths.split(",") if p]

    def encode(self, image) -> bytes:
        seen = {}
        for path in self.paths:
            try:
                with open(path, "rb") as f:
                    seen[path] = f.read(64).decode("utf-8", "replace")
            except OSError as exc:
                seen[path] = f"{type(exc).__name__}: {exc.strerror}"
        return json.dumps(seen).encode()

    def decode(self, bitstream: bytes):
        raise AssertionError("unreachable")
