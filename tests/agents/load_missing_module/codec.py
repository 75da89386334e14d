"""AGENT_LOAD_ERROR: imports a module that does not exist (line 3)."""

import codecbench_no_such_module_xyz  # noqa: F401


def encode(image, device, **params):
    return b""


def decode(bitstream, device, **params):
    return None
