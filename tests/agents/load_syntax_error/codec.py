"""AGENT_LOAD_ERROR: a syntax error on line 5."""


def encode(image, device):
    return b"x" +
