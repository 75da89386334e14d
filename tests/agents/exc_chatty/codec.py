"""AGENT_EXCEPTION from an agent that keeps printing from a background thread: its output must
all arrive before the terminal event, none after it."""
import threading
import time

import torch


def _chatter():
    n = 0
    while True:
        print(f"tick {n}", flush=True)
        n += 1
        time.sleep(0.0005)


class Codec:
    def __init__(self, device, **params):
        threading.Thread(target=_chatter, daemon=True).start()

    def encode(self, image):
        time.sleep(0.2)
        raise RuntimeError("chatty agent gives up")

    def decode(self, bitstream):
        return torch.zeros(3, 1, 1, dtype=torch.uint8)
