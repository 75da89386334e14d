"""The ``codecbench`` typer application and its commands.

Each command parses its options (:mod:`codecbench.cli.parsing`), makes its requests through
:class:`codecbench.client.Client` inside :func:`_call`, and prints a view
(:mod:`codecbench.cli.views`); ``run`` follows the experiment live (:mod:`codecbench.cli.follow`).
Exit codes are listed in :mod:`codecbench.cli`.

Every read command takes ``--json``: messages as the protobuf JSON mapping with the proto field
names (``experiment_id``), int64 as numbers, infinity as ``"Infinity"`` (see
:mod:`codecbench.analysis`); ``watch --json`` writes one event per line (JSON Lines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from codecbench import analysis, auth, devices, errors, rpc, states, values
from codecbench.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, views
from codecbench.cli.follow import WaitingReporter, follow
from codecbench.cli.parsing import UsageError, parameter_grid, parse_labels, parse_since, parse_states
from codecbench.client import DEFAULT_SERVER, Client
from codecbench.v1 import orchestrator_pb2, types_pb2


@dataclass
class Settings:
    """Per-invocation state: where the orchestrator is, how to authenticate, and where output goes."""

    server: str
    out: Console
    err: Console
    token_file: Path | None = None
    tls: rpc.TlsConfig = rpc.NO_TLS


app = typer.Typer(
    name="codecbench", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Evaluate image codec agents on codecbench workers: submit, watch, compare, export.",
)
datasets_app = typer.Typer(help="List datasets, or upload a folder of PNG/JPEG images as one.")
app.add_typer(datasets_app, name="datasets")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


@app.callback()
def _main(
    ctx: typer.Context,
    server: Annotated[str, typer.Option(
        "--server", envvar="CODECBENCH_SERVER", help="Orchestrator host:port (env CODECBENCH_SERVER).",
    )] = DEFAULT_SERVER,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", envvar=auth.TOKEN_FILE_ENV,
        help="File holding your API token (default: $CODECBENCH_TOKEN, else .codecbench/client.token, which "
             "`codecbench up` writes).",
    )] = None,
    tls_ca: Annotated[Path | None, typer.Option(
        "--tls-ca", envvar="CODECBENCH_TLS_CA", help="PEM CA of the orchestrator's certificate (TLS).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", envvar="CODECBENCH_TLS_CERT", help="Your PEM client certificate (mutual TLS).")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", envvar="CODECBENCH_TLS_KEY", help="The private key of --tls-cert.")] = None,
) -> None:
    ctx.obj = Settings(server=server, out=views.make_console(), err=views.make_console(stderr=True),
                       token_file=token_file, tls=rpc.TlsConfig(cert=tls_cert, key=tls_key, ca=tls_ca))


# -- plumbing ----------------------------------------------------------------------------------


_INTERRUPTED = "interrupted (an experiment that was submitted keeps running on the orchestrator)"


def _call(ctx: typer.Context, work: Callable[[Client, Settings], Awaitable[int]],
          interrupted: str = _INTERRUPTED) -> None:
    """Runs ``work`` with a client on a fresh event loop and exits with its code.

    A refused request (the :mod:`codecbench.errors` tree, which the client raises) and bad input
    (:class:`UsageError`) print ``error: <message>`` and exit 2; an unreachable orchestrator gets a
    hint on how to start one or point at one, a standby one (reason ``STANDBY``) the advice to point
    at the leader; Ctrl-C prints ``interrupted`` and exits 130.
    """
    settings: Settings = ctx.obj

    async def session() -> int:
        async with Client(settings.server, token_file=settings.token_file, tls=settings.tls) as client:
            return await work(client, settings)

    try:
        code = asyncio.run(session())
    except errors.Unavailable as exc:
        if exc.reason == errors.REASON_STANDBY:  # it answers, but another orchestrator leads
            settings.err.print(Text(f"error: {exc} ({settings.server}); point --server / CODECBENCH_SERVER at "
                                    "the leader", style="red"))
            raise typer.Exit(EXIT_USAGE) from None
        settings.err.print(Text(f"error: cannot reach the orchestrator at {settings.server} ({exc}); start one with "
                                "`codecbench up`, or point --server / CODECBENCH_SERVER at it", style="red"))
        code = EXIT_USAGE
    except (errors.CodecbenchError, UsageError, OSError) as exc:  # OSError: an unreadable token or TLS file
        settings.err.print(Text(f"error: {exc}", style="red"))
        code = EXIT_USAGE
    except KeyboardInterrupt:
        settings.err.print(interrupted)
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


def print_json(data: Any, indent: int | None = 2) -> None:
    """Writes ``data`` to stdout as JSON, non-finite floats spelled as in the protobuf JSON mapping."""
    typer.echo(json.dumps(analysis.json_safe(data), indent=indent, allow_nan=False))


# -- commands ----------------------------------------------------------------------------------


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Store, blobs and logs of both services.")] = Path(".codecbench"),
    port: Annotated[int, typer.Option(help="Orchestrator port on 127.0.0.1 (0 picks a free one).")] = 50051,
    worker_slots: Annotated[int, typer.Option(min=1, help="Experiments the worker runs at once.")] = 1,
    no_bwrap: Annotated[bool, typer.Option("--no-bwrap", help="Process-only isolation even if bwrap exists.")] = False,
    log_level: Annotated[str, typer.Option(help="Level of the services' logs (files under DATA_DIR/logs).")] = "info",
) -> None:
    """Start an orchestrator and one local worker (SQLite, 127.0.0.1) until `codecbench down`, Ctrl-C or SIGTERM."""
    from codecbench.local import LocalStartError, claim_up, release_up, start_local

    console = views.make_console()

    async def serve() -> int:
        services = await start_local(data_dir, port, worker_slots, not no_bwrap, log_level)
        console.print(f"orchestrator listening on {services.orchestrator.address} (pid {services.orchestrator.pid})")
        console.print(f"worker {services.worker_id} listening on {services.worker.address} "
                      f"(pid {services.worker.pid}, {worker_slots} slot(s))")
        console.print(f"logs: {services.orchestrator.log_path}, {services.worker.log_path}")
        console.print(f"use it: export CODECBENCH_SERVER={services.orchestrator.address}; "
                      f"`codecbench down --data-dir {data_dir}` (or Ctrl-C) stops both")
        if services.token_file.resolve() != auth.DEFAULT_TOKEN_PATH.resolve():
            console.print(f"your admin token: export {auth.TOKEN_FILE_ENV}={services.token_file}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopped = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(services.wait_any_exit())
        await asyncio.wait([stopped, exited], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if exited.done():
            dead = exited.result()
            console.print(Text(f"the {dead.name} exited with code {dead.process.returncode}; see {dead.log_path}",
                               style="red"))
            code = EXIT_FAILED
        else:
            exited.cancel()
        console.print("stopping the worker, then the orchestrator")
        await services.stop()
        console.print("stopped")
        return code

    try:
        claim_up(data_dir)
        code = asyncio.run(serve())
    except LocalStartError as exc:
        views.make_console(stderr=True).print(Text(f"error: {exc}", style="red"), soft_wrap=True)
        code = EXIT_USAGE if exc.exit_code == EXIT_USAGE else EXIT_FAILED
    except KeyboardInterrupt:  # during start-up, before the signal handlers; the services were stopped
        code = EXIT_INTERRUPTED
    finally:
        release_up(data_dir)
    raise typer.Exit(code)


@app.command()
def down(
    data_dir: Annotated[Path, typer.Option(help="The data dir of `codecbench up`.")] = Path(".codecbench"),
    timeout_s: Annotated[float, typer.Option(min=0, help="How long to wait for it to stop, in s.")] = 60.0,
) -> None:
    """Stop the `codecbench up` of DATA_DIR (its worker, then its orchestrator) and wait until it has exited."""
    from codecbench.local import stop_up

    console = views.make_console()
    try:
        pid = asyncio.run(stop_up(data_dir, timeout_s))
    except TimeoutError as exc:
        views.make_console(stderr=True).print(Text(f"error: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    if pid is None:
        console.print(f"no `codecbench up` runs for {data_dir}: nothing to stop")
    else:
        console.print(f"stopped `codecbench up` (pid {pid}) and its services for {data_dir}")


@app.command()
def run(
    ctx: typer.Context,
    agent_dir: Annotated[Path, typer.Argument(help="Folder of the agent (entry module codec.py or the only .py).")],
    dataset: Annotated[str, typer.Option(help="Dataset name (see `codecbench datasets`).")] = "photos",
    param: Annotated[list[str] | None, typer.Option(
        help="NAME=V1,V2,... (repeatable; the cartesian product makes the points). Values parse as int, "
             "then float, then str.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or any.")] = "cpu",
    detach: Annotated[bool, typer.Option("--detach", help="Submit, print the id and return.")] = False,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE label (repeatable).")] = None,
    request_id: Annotated[str, typer.Option(help="Idempotency key: a repeat returns the first experiment.")] = "",
    entry_module: Annotated[str, typer.Option(help="Dotted entry module if it cannot be guessed.")] = "",
    max_attempts: Annotated[int, typer.Option(help="Dispatch attempts when workers are lost (0: default 3).")] = 0,
    priority: Annotated[int, typer.Option(
        help="Higher runs first among your queued experiments (fair share: users take turns).")] = 0,
    queue_timeout_s: Annotated[float, typer.Option(
        help="Fail it (UNSCHEDULABLE) if after this many s no registered worker can run it (0: wait).")] = 0.0,
    timeout_load_s: Annotated[float, typer.Option(help="Load limit in s (0: worker default).")] = 0.0,
    timeout_encode_s: Annotated[float, typer.Option(help="Per-image encode limit in s (0: worker default).")] = 0.0,
    timeout_decode_s: Annotated[float, typer.Option(help="Per-image decode limit in s (0: worker default).")] = 0.0,
    timeout_experiment_s: Annotated[float, typer.Option(help="Whole-run limit in s (0: worker default).")] = 0.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Evaluate even when an identical earlier "
                                           "experiment's result could be reused.")] = False,
    keep_reconstructions: Annotated[int, typer.Option(
        help="Keep the decoded images of the first N dataset images of each point (PNG, 0 to 16), to look at "
             "beside the originals in `codecbench web`.")] = 0,
) -> None:
    """Submit an agent on a dataset; follow it live unless --detach; exit 1 if it fails."""
    timeouts = types_pb2.Timeouts(load_s=timeout_load_s, encode_s=timeout_encode_s, decode_s=timeout_decode_s,
                                  experiment_s=timeout_experiment_s)

    async def work(client: Client, s: Settings) -> int:
        points, labels = parameter_grid(param or []), parse_labels(label or [])
        try:
            exp = await client.submit(agent_dir, dataset=dataset, points=points, device=device, timeouts=timeouts,
                                      labels=labels, request_id=request_id, max_attempts=max_attempts,
                                      priority=priority, entry_module=entry_module,
                                      queue_timeout_s=queue_timeout_s, no_cache=no_cache,
                                      keep_reconstructions=keep_reconstructions)
        except (FileNotFoundError, ValueError, values.ValueConversionError) as exc:
            # no such folder, no entry module, a value with no protocol form (an int beyond 64 bits)
            raise UsageError(str(exc)) from exc
        s.out.print(f"submitted {exp.experiment_id} ({exp.agent.name} on {exp.dataset}, {len(exp.points)} point(s), "
                    f"device {devices.short_name(exp.device)})"
                    + (f": outcome reused from {exp.cached_from} (--no-cache evaluates it again)"
                       if exp.cached_from else ""))
        if detach:
            s.out.print(f"follow it with: codecbench watch {exp.experiment_id}")
            return 0
        final = await follow(client, exp, s.out)
        if final.state == states.SUCCEEDED:
            s.out.print(views.results_view([final], title=f"results of {final.experiment_id} ({final.agent.name})"))
            return 0
        return EXIT_FAILED

    _call(ctx, work)


@app.command("run-many")
def run_many(
    ctx: typer.Context,
    agent_dirs: Annotated[list[Path], typer.Argument(help="Folders of the candidate agents.")],
    label: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE label (repeatable); `run=NAME` names the run (default: a fresh run=<id>).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name (see `codecbench datasets`).")] = "photos",
    param: Annotated[list[str] | None, typer.Option(help="NAME=V1,V2,... as in `run` (the same for every agent).")]
    = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or any.")] = "cpu",
    priority: Annotated[int, typer.Option(help="Higher runs first among your queued experiments.")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Evaluate even when an identical earlier "
                                           "experiment's result could be reused.")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Submit, print the ids and return.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per submission and per finished "
                                          "experiment (JSON Lines).")] = False,
) -> None:
    """Submit many candidate agents in batches (shared files uploaded once), follow them all; exit 1 if any
    is refused or fails."""

    async def work(client: Client, s: Settings) -> int:
        labels = parse_labels(label or [])
        labels.setdefault("run", f"run-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}")
        try:
            submitted = await client.submit_many(agent_dirs, dataset=dataset, points=parameter_grid(param or []),
                                                 device=device, labels=labels, priority=priority, no_cache=no_cache)
        except (FileNotFoundError, ValueError, values.ValueConversionError) as exc:
            raise UsageError(str(exc)) from exc
        code = 0
        for folder, sub in zip(agent_dirs, submitted, strict=True):
            if as_json:
                print_json({"agent_dir": str(folder), "request_id": sub.request_id,
                            "experiment_id": sub.experiment.experiment_id if sub.experiment else None,
                            "error": str(sub.error) if sub.error else None}, indent=None)
            elif sub.error is not None:
                s.err.print(Text(f"{folder}: refused: {sub.error}", style="red"))
            code = EXIT_FAILED if sub.error is not None else code
        accepted = [sub.experiment for sub in submitted if sub.experiment is not None]
        selector = " ".join(f"--label {k}={v}" for k, v in labels.items())
        if not as_json:
            s.out.print(f"submitted {len(accepted)} of {len(submitted)} candidate(s) with labels {selector} "
                        f"({sum(1 for e in accepted if e.cached_from)} from the cache)")
        if detach or not accepted:
            return code
        names = {e.experiment_id: e.agent.name for e in accepted}
        cached = {e.experiment_id: e.cached_from for e in accepted if e.cached_from}
        succeeded = 0
        async for event in client.watch_many(labels):
            kind = event.WhichOneof("event")
            if kind not in ("result", "error") or event.experiment_id not in names:
                continue
            succeeded += kind == "result"
            code = EXIT_FAILED if kind == "error" else code
            if as_json:
                print_json(views.message_json(event), indent=None)
                continue
            outcome = "SUCCEEDED" if kind == "result" else errors.describe(event.error)
            source = cached.get(event.experiment_id)
            outcome += f" (cached from {source})" if source else ""
            s.out.print(Text(f"{event.experiment_id} ({names[event.experiment_id]}) {outcome}"), soft_wrap=True)
        if not as_json:
            s.out.print(f"{succeeded} of {len(accepted)} succeeded; rank them with: codecbench rank --baseline EXP "
                        f"{selector}")
        return code

    _call(ctx, work)


@app.command("ls")
def list_experiments(
    ctx: typer.Context,
    state: Annotated[list[str] | None, typer.Option(help="Only these states (repeatable or comma-separated).")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE that must match (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List experiments, newest first."""

    async def work(client: Client, s: Settings) -> int:
        experiments = await client.list(parse_states(state or []), parse_labels(label or []), limit)
        if as_json:
            print_json([views.message_json(e) for e in experiments])
            return 0
        s.out.print(views.experiments_table(experiments, title=f"experiments on {s.server}"))
        return 0

    _call(ctx, work)


@app.command()
def show(ctx: typer.Context, experiment_id: str, as_json: JsonOption = False) -> None:
    """Show one experiment: state, attempts, worker, per-point and per-image metrics, error."""

    async def work(client: Client, s: Settings) -> int:
        e = await client.get(experiment_id)
        if as_json:
            print_json(views.message_json(e))
            return 0
        s.out.print(views.experiment_view(e))
        return 0

    _call(ctx, work)


@app.command()
def watch(
    ctx: typer.Context,
    experiment_id: str,
    after: Annotated[int, typer.Option(help="Only events with a sequence number above this (at most the "
                                             "experiment's latest sequence number).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line (JSON Lines).")] = False,
) -> None:
    """Print an experiment's events (stored ones first) until it ends; exit 1 if it failed.

    While it is queued, says why it waits when no worker can run it. Ctrl-C stops watching only.
    """

    async def work(client: Client, s: Settings) -> int:
        code = 0
        # stdout's JSON Lines carry events only: the waiting reason goes to stderr then
        waiting = WaitingReporter(client, experiment_id, s.err if as_json else s.out)
        try:
            async with waiting:
                async for event in client.watch(experiment_id, after_sequence=after):
                    if as_json:
                        print_json(views.message_json(event), indent=None)
                    else:
                        s.out.print(views.event_text(event), soft_wrap=True)
                    kind = event.WhichOneof("event")
                    if kind == "state_change":
                        waiting.on_state(event.state_change.state)
                    code = EXIT_FAILED if kind == "error" else code
        except errors.OutOfRange as exc:
            last = exc.metadata.get("last_sequence")
            if last is None:
                raise
            raise UsageError(f"experiment {experiment_id} is at sequence {last}: --after {after} is past it; "
                             f"use --after {last} or less") from exc
        return code

    _call(ctx, work, interrupted=f"interrupted: only the watching stopped; {experiment_id} keeps running on the "
                                 f"orchestrator (`codecbench cancel {experiment_id}` stops it)")


@app.command()
def cancel(ctx: typer.Context, experiment_id: str) -> None:
    """Cancel a queued or running experiment (a finished one is left as it is)."""

    async def work(client: Client, s: Settings) -> int:
        e = await client.cancel(experiment_id)
        line = Text(f"{e.experiment_id} is ")
        line.append_text(views.state_text(e.state))
        s.out.print(line)
        return 0

    _call(ctx, work)


@app.command("share-result")
def share_result(
    ctx: typer.Context,
    experiment_id: str,
    unshare: Annotated[bool, typer.Option("--unshare", help="Keep it to its owner's submissions again.")] = False,
) -> None:
    """Let every user's identical submission reuse the result of a SUCCEEDED experiment (admins only):
    it becomes a shared result-cache entry."""

    async def work(client: Client, s: Settings) -> int:
        e = await client.share_result(experiment_id, shared=not unshare)
        s.out.print(f"{e.experiment_id}: its result is "
                    + ("reused by every user's identical submission" if not unshare
                       else f"reused by {e.owner}'s identical submissions only"))
        return 0

    _call(ctx, work)


@app.command()
def workers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List workers: state (with the reason when STALE or LOST), build, slots, devices, heartbeat; then
    the queued and running experiments per owner (yours only unless you are an admin)."""

    async def work(client: Client, s: Settings) -> int:
        found = await client.workers()
        if as_json:
            print_json([views.message_json(w) for w in found])
        else:
            s.out.print(views.workers_table(found))
            queues = await client.queues()
            if queues:
                s.out.print(views.queues_table(queues))
        return 0

    _call(ctx, work)


@app.command()
def drain(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(help="The worker, as `codecbench workers` lists it.")],
    as_json: JsonOption = False,
) -> None:
    """Stop giving a worker new experiments; those it runs finish (admins only)."""

    async def work(client: Client, s: Settings) -> int:
        status = await client.drain(worker_id)
        if as_json:
            print_json(views.message_json(status))
            return 0
        state = orchestrator_pb2.WorkerState.Name(status.state).removeprefix("WORKER_STATE_")
        running = ", ".join(status.running_experiment_ids) or "none"
        s.out.print(f"worker {status.info.worker_id} is {state}: it gets no new experiments; "
                    f"those it runs finish ({running})", soft_wrap=True)
        return 0

    _call(ctx, work)


@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List datasets (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return

    async def work(client: Client, s: Settings) -> int:
        found = await client.datasets()
        if as_json:
            print_json([views.message_json(d) for d in found])
            return 0
        s.out.print(views.datasets_table(found))
        return 0

    _call(ctx, work)


@datasets_app.command("add")
def datasets_add(
    ctx: typer.Context,
    name: str,
    folder: Annotated[Path, typer.Argument(help="Folder whose PNG/JPEG files become the dataset.")],
) -> None:
    """Upload every PNG/JPEG of FOLDER as dataset NAME."""

    async def work(client: Client, s: Settings) -> int:
        try:
            d = await client.upload_dataset(name, folder)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from exc
        s.out.print(f"dataset {d.name}: {len(d.images)} image(s), digest {d.digest[:16]}")
        return 0

    _call(ctx, work)


@datasets_app.command("share")
def datasets_share(
    ctx: typer.Context,
    name: str,
    unshare: Annotated[bool, typer.Option("--unshare", help="Make it private to its owner again.")] = False,
) -> None:
    """Let every user read dataset NAME and run experiments on it (admins only)."""

    async def work(client: Client, s: Settings) -> int:
        d = await client.share_dataset(name, shared=not unshare)
        s.out.print(f"dataset {d.name} is {'shared with every user' if d.shared else f'private to {d.owner}'}")
        return 0

    _call(ctx, work)


async def _finished_curves(client: Client, experiment_ids: Sequence[str]) -> list[analysis.Curve]:
    curves = []
    for experiment_id in experiment_ids:
        try:
            curves.append(analysis.Curve.from_experiment(await client.get(experiment_id)))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return curves


@app.command()
def compare(
    ctx: typer.Context,
    experiment_ids: Annotated[list[str], typer.Argument(help="Experiments to compare with the baseline.")],
    baseline: Annotated[str, typer.Option(help="The anchor experiment.")],
    plot: Annotated[Path | None, typer.Option(help="Write an RD plot (bpp vs PSNR) as PNG here.")] = None,
    allow_different_datasets: Annotated[bool, typer.Option(
        "--allow-different-datasets", help="Compare experiments run on another dataset than the baseline's too "
        "(refused otherwise); every such row is flagged.")] = False,
    as_json: JsonOption = False,
) -> None:
    """BD-rate (PSNR and MS-SSIM, PCHIP) of the baseline and each experiment against it, and an RD plot.

    Each curve needs at least 4 points; experiments on different datasets are refused unless
    --allow-different-datasets is given.
    """

    async def work(client: Client, s: Settings) -> int:
        anchor, *others = await _finished_curves(client, [baseline, *experiment_ids])
        # the baseline's own row first (+0.00 %, or why not computable), as `make demo` shows it, whether
        # or not it is named among the experiments too
        curves = [anchor, *(c for c in others if c.experiment_id != anchor.experiment_id)]
        copies = [e for e in [await client.get(i) for i in dict.fromkeys([baseline, *experiment_ids])] if e.cached_from]
        try:
            rows = analysis.bd_rate_table(curves, anchor, allow_different_datasets=allow_different_datasets)
        except analysis.DifferentDatasets as exc:
            raise UsageError(str(exc)) from exc
        notes = analysis.rd_plot(curves, plot, title="rate-distortion (codecbench)") if plot else []
        if as_json:
            print_json({"baseline": {"experiment_id": anchor.experiment_id, "name": anchor.name,
                                      "dataset": anchor.dataset},
                         "method": analysis.BD_METHOD, "rows": [r.to_json() for r in rows],
                         "cached_from": {e.experiment_id: e.cached_from for e in copies},
                         "plot": str(plot) if plot else None, "plot_notes": notes})
            return 0
        s.out.print(views.bd_rate_view(rows, anchor))
        for exp in copies:
            s.out.print(f"note: {exp.experiment_id} is a copy of {exp.cached_from} (result cache; nothing ran)")
        if plot:
            s.out.print(f"RD plot written to {plot}")
            for note in notes:
                s.out.print(f"  {note}")
        return 0

    _call(ctx, work)


@app.command()
def rank(
    ctx: typer.Context,
    baseline: Annotated[str, typer.Option(help="The anchor experiment (SUCCEEDED, at least 4 points).")],
    label: Annotated[list[str], typer.Option(help="KEY=VALUE the candidates carry, e.g. run=NAME (repeatable).")],
    metric: Annotated[str, typer.Option(help="Quality metric of the BD-rate: psnr or ms_ssim.")] = "psnr",
    limit: Annotated[int, typer.Option(min=1, help="Look at this many newest candidates.")] = 100_000,
    as_json: JsonOption = False,
) -> None:
    """Rank candidates by BD-rate against a baseline; list those without one and why, then the failures
    grouped by kind and location."""

    async def work(client: Client, s: Settings) -> int:
        try:
            ranking = await client.rank(baseline, parse_labels(label), metric=metric, limit=limit)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if as_json:
            print_json(ranking.to_json())
        else:
            s.out.print(views.ranking_view(ranking))
        return 0

    _call(ctx, work)


@app.command("errors")
def errors_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only experiments created since: 30m, 1h, 2d, 1w or ISO date.")]
    = None,
    limit: Annotated[int, typer.Option(min=1, help="Look at this many newest failed experiments.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Group failed experiments by error kind and source location, with counts and an example each."""

    async def work(client: Client, s: Settings) -> int:
        created_after = parse_since(since) if since else None
        listed = await client.list([states.FAILED], limit=limit, created_after=created_after)
        failed, copies = analysis.without_cached_copies(listed)
        groups = analysis.group_errors(failed)
        if as_json:
            since_iso = dt.datetime.fromtimestamp(created_after, dt.UTC).isoformat() if created_after else None
            print_json({"since": since_iso, "failed_experiments": len(failed), "cached_copies_left_out": copies,
                         "groups": [g.to_json() for g in groups]})
            return 0
        scope = f" since {since}" if since else ""
        title = f"{len(failed)} failed experiment(s){scope} in {len(groups)} group(s)" + (
            f" ({copies} cached copies of earlier failures left out)" if copies else "")
        s.out.print(views.error_groups_table(groups, title))
        return 0

    _call(ctx, work)


@app.command()
def export(
    ctx: typer.Context,
    experiment_ids: Annotated[list[str], typer.Argument(help="Succeeded experiments.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Results as JSON in CompressAI's layout (one object; a list for several experiments)."""

    async def work(client: Client, s: Settings) -> int:
        exported = []
        for experiment_id in experiment_ids:
            try:
                exported.append(analysis.compressai_results(await client.get(experiment_id)))
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
        data = exported[0] if len(exported) == 1 else exported
        if output is None:
            print_json(data)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
            s.out.print(f"wrote {output}")
        return 0

    _call(ctx, work)



@app.command()
def web(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port (0 picks a free one).")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it on loopback); every page needs a login: "
                                           "the printed one-time URL, or a pasted API token.")] = "127.0.0.1",
) -> None:
    """Serve a web view of your experiments, RD curves, failures and workers at http://HOST:PORT/ until Ctrl-C.

    It prints a one-time login URL (good once, for 10 minutes) that logs the browser in with your
    token; others can log in on the same view with their own token, each seeing what they may see.
    """
    import socket

    import uvicorn

    from codecbench.web import WebSettings, create_app

    s: Settings = ctx.obj
    try:
        token = auth.find_token(None, s.token_file)
    except OSError as exc:
        s.err.print(Text(f"error: {exc}", style="red"))
        raise typer.Exit(EXIT_USAGE) from None
    application = create_app(WebSettings(server=s.server, token=token, tls=s.tls, hosts=(host,)))
    # bound here, so the printed URL names the real port when --port 0 picked one
    listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    bound = listening.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    s.out.print(f"codecbench web view of {s.server} on http://{url_host}:{bound}/ (Ctrl-C stops it); log in at",
                soft_wrap=True, markup=False, highlight=False)
    code = application.state.sessions.issue_code()
    s.out.print(f"http://{url_host}:{bound}/login?code={code}", soft_wrap=True, markup=False, highlight=False)
    s.out.file.flush()
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    server.run(sockets=[listening])
