"""``python -m orchestrator_svc`` / ``codecbench-orchestrator``: runs until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from codecbench import logs, rpc
from orchestrator_svc.server import OrchestratorConfig, start_orchestrator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="codecbench-orchestrator", description="codecbench orchestrator service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50051, help="port to bind; 0 picks a free one and prints it")
    parser.add_argument("--data-dir", type=Path, default=Path(".codecbench"), help="SQLite store and blobs")
    parser.add_argument("--store-url", default="", help="SQLAlchemy URL (default: SQLite file in --data-dir)")
    parser.add_argument("--expected-build", default="", help="build id workers must run (default: this code's)")
    parser.add_argument("--heartbeat-timeout-s", type=float, default=15.0, help="silence after which a worker is LOST")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    handle = await start_orchestrator(
        OrchestratorConfig(
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            store_url=args.store_url,
            expected_build=args.expected_build,
            heartbeat_timeout_s=args.heartbeat_timeout_s,
        )
    )
    print(f"codecbench orchestrator listening on {handle.address}", flush=True)
    await rpc.wait_for_termination()
    await handle.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
