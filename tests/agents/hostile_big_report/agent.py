"""Hostile (red-team H1): a seed agent whose decoding dict carries ``count`` numeric entries besides
the reconstruction. 1,200,000 of them made a 26 MB frame, under the 64 MiB limit, whose conversion
on the worker's event loop stopped its heartbeats for minutes; now INVALID_OUTPUT past 256 entries."""

import numpy as np
import torch


def run_encoding_agent(device="cpu", image=None, count=1_200_000):
    return {"px": image.cpu().numpy()}


def run_decoding_agent(device="cpu", encoding_data=None, count=1_200_000):
    out = {f"k{i}": float(i) for i in range(count)}
    out["reconstruction"] = torch.from_numpy(np.asarray(encoding_data["px"]).copy())
    return out
