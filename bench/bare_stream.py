"""A bare gRPC byte stream: the baseline of the transfer figure.

``python -m bench.bare_stream --port 0 --dir FOLDER`` serves two methods through a generic handler
with identity (bytes) serializers, on codecbench's own server options (message limits):

- ``/bench.BareStream/Upload`` (stream → unary): receives raw chunks, returns the byte count;
- ``/bench.BareStream/Download`` (unary → stream): the request is a file name in ``FOLDER``, the
  response its bytes in chunks of ``codecbench.rpc.CHUNK_BYTES`` (1 MiB).

It runs as its own process, like the orchestrator, so both sides of the comparison have the same
topology (client and server in two processes on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from codecbench import rpc

SERVICE = "bench.BareStream"
UPLOAD = f"/{SERVICE}/Upload"
DOWNLOAD = f"/{SERVICE}/Download"


def identity(data: bytes) -> bytes:
    """The (de)serializer of raw bytes messages."""
    return data


def handler(folder: Path) -> grpc.GenericRpcHandler:
    async def upload(request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        total = 0
        async for chunk in request_iterator:
            total += len(chunk)
        return str(total).encode()

    async def download(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        with (folder / Path(request.decode()).name).open("rb") as f:
            while chunk := f.read(rpc.CHUNK_BYTES):
                yield chunk

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Upload": grpc.stream_unary_rpc_method_handler(
            upload, request_deserializer=identity, response_serializer=identity),
        "Download": grpc.unary_stream_rpc_method_handler(
            download, request_deserializer=identity, response_serializer=identity),
    })


async def serve(port: int, folder: Path) -> None:
    server = grpc.aio.server(options=rpc.server_options())
    server.add_generic_rpc_handlers((handler(folder),))
    bound = rpc.bind(server, "127.0.0.1", port)
    await server.start()
    print(f"bare stream listening on 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_stream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", type=Path, required=True, help="folder whose files Download serves")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
