"""Figure 8: a search loop's batch through one worker with 2 slots (issue 20).

N small candidates (the trivial agent, each made distinct by a comment line so none is a cache
hit, plus one shared file that travels once) are submitted as ``codecbench run-many`` does
(:meth:`Client.submit_many`, batches of 500) and followed on one ``WatchExperiments`` stream to
the last terminal event: experiments per second, and the wall time per candidate against the
trivial-experiment figure (one trivial experiment submitted and followed alone, measured in the
same system and run, before the batch). Then the same candidates are submitted again one by one:
each completes from the result cache, and the latency of that ``CreateExperiment`` call is the
cache-hit figure.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from bench import harness
from bench.harness import BenchContext
from bench.report import Figure, Ratio
from codecbench import bundles
from codecbench.v1 import types_pb2

NUMBER = 8
TITLE = "Search-loop batch (run-many through one worker with 2 slots; result-cache hits)"
TIMEOUT_S = 600.0  # full size; --quick halves it
SLOTS = 2
SINGLE_N = 5  # trivial experiments alone, for the per-candidate comparison
CACHE_N = 50  # cache hits timed
BATCH_SHARE = 0.8  # of the figure's time limit, the most the batch may take (start to last terminal event)


def candidates(count: int) -> list[types_pb2.AgentBundle]:
    """``count`` distinct trivial agents that share one file (NOTES.txt)."""
    base = bundles.bundle_from_dir(harness.TRIVIAL_AGENT)
    notes = b"a generated candidate of the bench's search loop\n" * 20
    out = []
    for i in range(count):
        bundle = types_pb2.AgentBundle()
        bundle.CopyFrom(base)
        bundle.name = f"candidate-{i}"
        codec = next(f for f in bundle.files if f.name == "codec.py")
        codec.content += f"# candidate {i}\n".encode()
        codec.sha256, codec.size_bytes = bundles.sha256_hex(codec.content), len(codec.content)
        bundle.files.add(name="NOTES.txt", content=notes, sha256=bundles.sha256_hex(notes), size_bytes=len(notes))
        out.append(bundle)
    return out


async def run(ctx: BenchContext) -> Figure:
    fig = Figure("batch", NUMBER, TITLE)
    count = ctx.sizes.batch_candidates
    figure_start = time.perf_counter()
    async with harness.running_system(ctx, "batch", slots=SLOTS) as system:
        client = system.client
        dataset, _ = await harness.upload_tiny_dataset(ctx, client)
        await harness.submit_and_wait(client, harness.TRIVIAL_AGENT, dataset)  # warm-up: blob fetch
        singles = [(await harness.submit_and_wait(client, harness.TRIVIAL_AGENT, dataset)).wall_s
                   for _ in range(SINGLE_N)]
        batch = candidates(count)
        labels = {"run": "bench-batch"}
        ctx.record(f"codecbench run-many <{count} candidate folders> --dataset {dataset} --label run=bench-batch")
        start = time.perf_counter()
        submitted = await client.submit_many(batch, dataset=dataset, labels=labels)
        submit_s = time.perf_counter() - start
        refused = [s for s in submitted if s.error is not None]
        if refused:
            raise RuntimeError(f"{len(refused)} candidate(s) refused, e.g. {refused[0].error}")
        ids = [s.experiment.experiment_id if s.experiment else "" for s in submitted]
        # The batch gets most of the figure's time; on a machine too loaded to finish it, the
        # candidates that ended give the rate and the rest are cancelled, so the figure stays.
        budget_s = ctx.figure_timeout_s * BATCH_SHARE - (time.perf_counter() - figure_start)
        ended: set[str] = set()
        try:
            async with asyncio.timeout(max(budget_s, 1.0)):
                async for event in client.watch_many(labels):
                    kind = event.WhichOneof("event")
                    if kind == "error":
                        raise RuntimeError(f"{event.experiment_id} failed: {event.error.message}")
                    if kind == "result":
                        ended.add(event.experiment_id)
        except TimeoutError:
            pass
        wall_s = time.perf_counter() - start
        unfinished = [i for i in ids if i not in ended]
        for experiment_id in unfinished:
            await client.cancel(experiment_id)
        if not ended:
            raise RuntimeError(f"none of the {count} candidates ended within {budget_s:.0f} s")
        hits_ms = []
        finished = [b for b, i in zip(batch, ids, strict=True) if i in ended]
        for bundle in finished[:CACHE_N]:
            hit_start = time.perf_counter()
            exp = await client.submit(bundle, dataset=dataset)
            hits_ms.append((time.perf_counter() - hit_start) * 1000.0)
            if not exp.cached_from:
                raise RuntimeError(f"{exp.experiment_id} was not served from the cache")
    single_s = float(np.median(singles))
    per_candidate_s = wall_s / len(ended)
    fig.values["experiments/s"] = (len(ended) / wall_s, "experiments/s")
    fig.values["candidates ended within the figure's time"] = (len(ended), f"of {count}")
    if unfinished:
        fig.notes.append(
            f"Only {len(ended)} of the {count} candidates ended within {budget_s:.0f} s (the batch's share of the "
            f"figure's time limit); the rates are over those, the other {len(unfinished)} were cancelled. "
            "The machine was too loaded for the full batch: see the trivial experiment alone.")
    fig.values["submission of the whole batch"] = (submit_s, "s")
    fig.values["wall time per candidate"] = (per_candidate_s * 1000.0, "ms")
    fig.values["trivial experiment alone, median"] = (single_s * 1000.0, "ms")
    fig.values["cache hit, p50"] = (float(np.median(hits_ms)), "ms")
    fig.headline += ["experiments/s", "wall time per candidate", "cache hit, p50"]
    fig.add("trivial experiment alone (submit to terminal event)", "ms", [s * 1000.0 for s in singles])
    fig.add("cache hit (CreateExperiment of an identical candidate)", "ms", hits_ms)
    fig.ratios.append(Ratio("wall time per candidate in the batch / trivial experiment alone",
                            per_candidate_s / single_s,
                            how=f"{len(ended)} candidates with {SLOTS} slots vs the median of {SINGLE_N} alone"))
    fig.notes.append(
        f"{count} distinct candidates (no cache hit) of the trivial agent on a one-image 64x64 dataset; each runs two "
        "sandboxed agent processes. The batch's time includes submission (batches of 500, one shared file uploaded "
        "once) and ends with the last terminal event on the WatchExperiments stream. No target is set.")
    return fig
