"""Chaos (c): experiments while the orchestrator's data directory (and its log) fill up.

The orchestrator's data directory and log file sit on a small tmpfs; ``experiments`` experiments
run on one worker (whose own data is elsewhere). Once some have finished, the tmpfs is filled to
the last byte; a submission must then be refused RESOURCE_EXHAUSTED (reason ``DISK_FULL``) and the
service stay up; then the space is freed. Every experiment must end (none stays RUNNING), with a
sound history. Mounting a tmpfs needs root: without it the run is skipped, and says why.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chaos.cluster import Cluster
from chaos.invariants import history_problem, stored_history
from chaos.kills import TRIVIAL_AGENT, tiny_png
from codecbench import bundles, errors, local, states

DISK_REASON = "DISK_FULL"  # orchestrator_svc.disk.REASON_DISK_FULL (chaos drives services from outside)


@dataclass
class DiskOutcome:
    """The counts of chaos (c).

    Attributes:
        skipped: why the run did not happen ("" when it did).
        experiments: experiments submitted.
        refused_while_full: submissions refused RESOURCE_EXHAUSTED/DISK_FULL while the disk was full.
        other_refusals: other errors of those submissions (``code: message``).
        stuck: experiments not terminal after the space was freed.
        bad_histories: experiments whose stored events break the invariants.
        states: final states, by name.
        crashed: whether the orchestrator exited.
        wall_s: duration.
    """

    skipped: str = ""
    experiments: int = 0
    refused_while_full: int = 0
    other_refusals: list[str] = field(default_factory=list)
    stuck: int = 0
    bad_histories: dict[str, str] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    crashed: bool = False
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Skipped, or: writes refused with the reason while full, nothing stuck, no crash."""
        return bool(self.skipped) or (self.refused_while_full > 0 and not self.other_refusals and not self.stuck
                                      and not self.bad_histories and not self.crashed)


@contextlib.contextmanager
def small_tmpfs(mount: Path, size_mib: int) -> Iterator[str]:
    """Mounts a tmpfs of ``size_mib`` MiB at ``mount``; yields "" or, when it cannot, why not."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        yield f"cannot mount a {size_mib} MiB tmpfs (needs root): {done.stderr.strip() or done.returncode}"
        return
    try:
        yield ""
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Writes a file in ``folder`` until its filesystem has no space left; returns the file."""
    filler = folder / "filler"
    # unbuffered: nothing is left to flush (and fail) at close
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(b"\0" * 65536):
            pass
    return filler


async def run_disk_full(root: Path, experiments: int = 40, size_mib: int = 24) -> DiskOutcome:
    """Runs chaos (c) under ``root`` and returns its counts (``skipped`` set when no tmpfs can be mounted)."""
    started = time.monotonic()
    outcome = DiskOutcome()
    disk = root / "tmpfs"
    bundle = bundles.bundle_from_dir(TRIVIAL_AGENT)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "tiny.png").write_bytes(tiny_png())
    with small_tmpfs(disk, size_mib) as why_not:
        if why_not:
            outcome.skipped = why_not
            return outcome
        cluster = Cluster(root / "services", orchestrator_data=disk / "orchestrator", log_dir=disk / "logs")
        async with cluster:
            await cluster.start(workers=1)
            async with cluster.client() as client:
                await client.upload_dataset("chaos-tiny", images)
                ids = []
                half = experiments // 2
                for _ in range(half):
                    ids.append((await client.submit(bundle, dataset="chaos-tiny", no_cache=True)).experiment_id)
                filler = fill(disk)
                for _ in range(experiments - half):
                    try:
                        ids.append((await client.submit(bundle, dataset="chaos-tiny", no_cache=True)).experiment_id)
                    except errors.ResourceExhausted as exc:
                        if exc.reason == DISK_REASON:
                            outcome.refused_while_full += 1
                        else:
                            outcome.other_refusals.append(f"RESOURCE_EXHAUSTED {exc.reason}: {exc}")
                    except errors.CodecbenchError as exc:
                        outcome.other_refusals.append(f"{type(exc).__name__}: {exc}")
                filler.unlink()
                outcome.experiments = len(ids)

                async def all_ended() -> bool:
                    return not await client.list(states=[states.QUEUED, states.RUNNING], limit=1)

                with contextlib.suppress(TimeoutError):
                    await local.eventually(all_ended, timeout_s=120.0, interval_s=0.25, what="every experiment ended")
                for experiment_id in ids:
                    exp = await client.get(experiment_id)
                    outcome.states[states.state_name(exp.state)] += 1
                    if exp.state not in states.TERMINAL_STATES:
                        outcome.stuck += 1
                        continue
                    events = await stored_history(client, experiment_id)
                    if problem := history_problem(events, exp.last_sequence):
                        outcome.bad_histories[experiment_id] = problem
            assert cluster.orchestrator is not None
            outcome.crashed = cluster.orchestrator.process.returncode is not None
    outcome.wall_s = time.monotonic() - started
    return outcome
