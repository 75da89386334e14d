"""``python -m worker_svc`` / ``codecbench-worker``: runs a worker until SIGINT or SIGTERM.

Secure by default: without bubblewrap the worker refuses to start, unless ``--isolation process``
says that agents may run as plain child processes (then every experiment logs a warning and
``WorkerInfo.isolation`` is ``ISOLATION_PROCESS``).

SIGTERM (or SIGINT) drains the worker gracefully, for rolling upgrades: it tells the orchestrator
it drains (no new dispatches), lets running experiments finish within ``--drain-grace-s``
(default 60 s), then stops; an experiment still running then is stopped and the orchestrator
runs it again elsewhere with a new attempt that does not count against its limit. A second
SIGTERM (or SIGINT) ends the grace period at once. Kubernetes'
``terminationGracePeriodSeconds`` (default 30 s) must exceed ``--drain-grace-s`` by a few seconds,
or the kubelet's SIGKILL turns the drain into a lost worker.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from codecbench import auth, devices, logs, rpc, telemetry
from sandbox import isolation
from worker_svc.registration import OrchestratorLink
from worker_svc.server import WorkerConfig, start_worker

#: How long running experiments may take to finish after SIGTERM (``--drain-grace-s``).
DEFAULT_DRAIN_GRACE_S = 60.0
MAX_DRAIN_GRACE_S = 24 * 3600.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The worker's command line, checked; reads the token files (exits with a usage error on a problem)."""
    parser = argparse.ArgumentParser(prog="codecbench-worker", description="codecbench worker service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one and prints it")
    parser.add_argument("--orchestrator", default="", help="host:port of the orchestrator to register with")
    parser.add_argument("--slots", type=int, default=1, help="experiments run at once (default 1)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device offered to experiments")
    parser.add_argument("--data-dir", type=Path, default=Path(".codecbench/worker"), help="blob cache and scratch")
    parser.add_argument("--build-id", default="", help="override the computed build id (testing STALE workers)")
    parser.add_argument("--isolation", choices=["bwrap", "process"], default="bwrap",
                        help="bwrap (default): every agent process in a bubblewrap sandbox, refuse to start without "
                        "it; process: plain child processes, with the worker's filesystem view and network")
    # The old spelling of --isolation process.
    parser.add_argument("--no-bwrap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-warm-template", action="store_true",
                        help="start a new interpreter for each agent process instead of forking a warm template")
    parser.add_argument("--enroll-token-file", type=Path,
                        help="the orchestrator's enrollment secret (its DATA_DIR/enroll.token); needed with "
                        "--orchestrator")
    parser.add_argument("--admin-token-file", type=Path,
                        help="a local token this worker also accepts, for debugging with grpcurl -H 'authorization: "
                        "Bearer TOKEN'")
    parser.add_argument("--drain-grace-s", type=float, default=DEFAULT_DRAIN_GRACE_S,
                        help="on SIGTERM, how long running experiments may take to finish before they are stopped "
                        f"and requeued elsewhere (default {DEFAULT_DRAIN_GRACE_S:g}; Kubernetes' "
                        "terminationGracePeriodSeconds must exceed it)")
    rpc.add_tls_arguments(parser)
    rpc.add_health_port_argument(parser)
    telemetry.add_metrics_arguments(parser)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.orchestrator and not args.enroll_token_file:
        parser.error("--orchestrator needs --enroll-token-file (the orchestrator's enroll.token)")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    try:
        rpc.check_listen_security(args.host, rpc.tls_from_args(args), args.insecure)
        args.enroll_secret = auth.read_secret_file(args.enroll_token_file) if args.enroll_token_file else ""
        args.admin_token = auth.read_secret_file(args.admin_token_file) if args.admin_token_file else ""
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if args.slots < 1:
        parser.error(f"--slots: {args.slots} must be at least 1")
    if not 0 <= args.drain_grace_s <= MAX_DRAIN_GRACE_S:
        parser.error(f"--drain-grace-s: {args.drain_grace_s:g} must be between 0 and {MAX_DRAIN_GRACE_S:g}")
    if args.no_bwrap:
        args.isolation = "process"
    if args.isolation == "bwrap" and isolation.bwrap_path() is None:
        parser.error("bubblewrap (bwrap) is not installed, so agents cannot be sandboxed; install the package "
                     "'bubblewrap' (Debian/Ubuntu: apt-get install bubblewrap), or pass --isolation process to run "
                     "agents as plain child processes (no filesystem, network or PID isolation)")
    return args


async def serve(args: argparse.Namespace) -> None:
    """Runs the worker (registered with ``--orchestrator``, if given) until SIGINT or SIGTERM."""
    config = WorkerConfig(
        data_dir=args.data_dir, host=args.host, port=args.port, slots=args.slots, device=devices.parse(args.device),
        build_id=args.build_id, use_bwrap=args.isolation == "bwrap", warm_template=not args.no_warm_template,
        admin_token=args.admin_token, tls=rpc.tls_from_args(args), insecure=args.insecure,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
    )
    orchestrator = None
    if args.orchestrator:
        orchestrator = OrchestratorLink(args.orchestrator, args.enroll_secret, rpc.tls_from_args(args))
    handle = await start_worker(config, orchestrator.read_blob if orchestrator else None)
    probes = await rpc.start_health_server(args.host, args.health_port, handle.health) if args.health_port else None
    print(f"codecbench worker {handle.info.worker_id} listening on {handle.address}", flush=True)
    if handle.metrics is not None:
        print(f"codecbench worker metrics at {handle.metrics.url}", flush=True)
    heartbeats = asyncio.create_task(orchestrator.keep_registered(handle)) if orchestrator else None
    await rpc.wait_for_termination()
    # A graceful drain (rolling upgrades): heartbeats go on until it is over (module docstring). A
    # second signal ends the grace period at once (an operator who will not wait it out).
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle.servicer.end_grace)
    if orchestrator:
        await orchestrator.drain(handle, args.drain_grace_s)
    else:
        await handle.drain(args.drain_grace_s)
    if heartbeats:
        heartbeats.cancel()
        await asyncio.gather(heartbeats, return_exceptions=True)
    if orchestrator:
        await orchestrator.exiting(handle)  # leaves the worker list now, not LOST later
    await handle.stop()
    if probes:
        await probes.stop(0)
    if orchestrator:
        await orchestrator.close()


def main(argv: list[str] | None = None) -> int:
    """``codecbench-worker``: parses ``argv`` (default ``sys.argv[1:]``), serves, returns the exit status."""
    args = parse_args(argv)
    logs.configure(args.log_level)
    return rpc.run_service("codecbench-worker", serve(args))


if __name__ == "__main__":
    sys.exit(main())
