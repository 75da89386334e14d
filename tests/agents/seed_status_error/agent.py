"""The old contract's failure report: a decoding dict whose status is not "ok"."""


def run_encoding_agent(device='cpu'):
    return {"status": "ok", "payload": b"\x00\x01"}


def run_decoding_agent(device='cpu', encoding_data=None):
    if encoding_data.get('status') != 'ok':
        return {"status": "error", "message": "no payload"}
    return {"status": "failed", "message": "checksum mismatch in block 3"}
