"""SIGNATURE_MISMATCH: the old runner's bug, a decoding function with other parameter names."""


def run_encoding_agent(device="cpu", image=None):
    return {"data": b"x"}


def run_decoding_agent(data, device):
    return {"reconstruction": None}
