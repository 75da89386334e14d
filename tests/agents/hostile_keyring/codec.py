"""Hostile (red-team C1): passes each image from the encoder to the decoder through kernel keys.

Adapted from the red team's proof of concept, which scored lossless at 0 bytes on every photo
while encoder and decoder were both uid 65534 and alive together. Here the encoder stores each
image in a ``user`` key of its user keyring, readable by everyone (perm 0x3f3f3f3f) and
expiring after a few minutes, and returns 0 bytes; the decoder finds the key in /proc/keys (it
lists every key the caller may view, whatever its owner) and reads it by id. So the channel
needs neither a shared uid nor both processes alive: only the key calls, which the seccomp
filter refuses. ``tag`` (a parameter of both sides) keeps runs apart. Without a key the
decoder returns a black image of the size it was told (``height``, ``width``): a blind guess.
"""

import ctypes
import zlib

import numpy as np
import torch

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR_ADD_KEY, _NR_KEYCTL = 248, 250
_KEY_SPEC_USER_KEYRING = -4
_KEYCTL_SETPERM, _KEYCTL_SET_TIMEOUT, _KEYCTL_READ = 5, 15, 11


class Codec:
    def __init__(self, device: str, tag: str = "cbx", height: int = 16, width: int = 16) -> None:
        self.tag, self.height, self.width = tag, height, width
        self.count = 0
        self.errors: list[int] = []

    def _description(self) -> bytes:
        self.count += 1
        return f"{self.tag}-{self.count - 1}".encode()

    def encode(self, image: torch.Tensor) -> bytes:
        payload = zlib.compress(image.cpu().numpy().tobytes(), 9)
        key = _libc.syscall(_NR_ADD_KEY, b"user", self._description(), payload, ctypes.c_size_t(len(payload)),
                            ctypes.c_int(_KEY_SPEC_USER_KEYRING))
        if key < 0:
            print(f"add_key failed: errno {ctypes.get_errno()}", flush=True)
            return b""
        _libc.syscall(_NR_KEYCTL, ctypes.c_int(_KEYCTL_SETPERM), ctypes.c_int(key), ctypes.c_uint(0x3F3F3F3F))
        _libc.syscall(_NR_KEYCTL, ctypes.c_int(_KEYCTL_SET_TIMEOUT), ctypes.c_int(key), ctypes.c_uint(300))
        return b""  # zero bytes: the image travels outside the bitstream

    def decode(self, bitstream: bytes) -> torch.Tensor:
        description = self._description().decode()
        try:
            with open("/proc/keys") as keys:
                lines = keys.read().splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split()
            if len(fields) >= 9 and fields[7] == "user" and fields[8] == description + ":":
                buffer = ctypes.create_string_buffer(1 << 16)
                size = _libc.syscall(_NR_KEYCTL, ctypes.c_int(_KEYCTL_READ), ctypes.c_int(int(fields[0], 16)),
                                     buffer, ctypes.c_size_t(len(buffer)))
                if size > 0:
                    raw = zlib.decompress(buffer.raw[:size])
                    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(3, self.height, self.width)
                    return torch.from_numpy(pixels.copy())
        print(f"no key {description}", flush=True)
        return torch.zeros(3, self.height, self.width, dtype=torch.uint8)
