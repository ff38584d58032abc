"""Falco stand-in and bare consumer for the gRPC benchmark, each run as its own process.

``serve`` plays Falco 0.43's gRPC server on a unix socket: ``falco.version.service/version`` and
``falco.outputs.service/sub``, which responds to each request on the stream with every queued alert, as
Falco drains its one output queue. ``consume`` is the reference: a bare ``grpc.aio`` client that
subscribes, lets grpc parse each response and discards it. Needs ``router.proto_gen``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from bench.common import corpus_documents
from router.event import parse_time

# grpcio ships no type information, and the bindings come with the gRPC ingest: both are imported by
# name, so this file type-checks the same with and without the project's mypy overrides for them.
grpc: Any = importlib.import_module("grpc")
importlib.import_module("grpc.aio")
outputs_pb2: Any = importlib.import_module("router.proto_gen.falco.outputs_pb2")
outputs_pb2_grpc: Any = importlib.import_module("router.proto_gen.falco.outputs_pb2_grpc")
schema_pb2: Any = importlib.import_module("router.proto_gen.falco.schema_pb2")
version_pb2: Any = importlib.import_module("router.proto_gen.falco.version_pb2")
version_pb2_grpc: Any = importlib.import_module("router.proto_gen.falco.version_pb2_grpc")

WARMUP_ALERTS = 1000
"""Alerts received before the clock starts, so connection set-up is not counted."""


def to_field_string(value: Any) -> str:
    """Return an output field as Falco's gRPC output carries it: every value as a string, null as <NA>."""
    if value is None:
        return "<NA>"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def response_from(alert: dict[str, Any]) -> Any:
    """Build the gRPC message Falco would send for one corpus alert."""
    seconds, nanos = divmod(parse_time(alert["time"]), 1_000_000_000)
    message = outputs_pb2.response(
        rule=alert["rule"],
        output=alert.get("output", ""),
        hostname=alert.get("hostname", ""),
        tags=alert.get("tags") or [],
        source=alert.get("source", ""),
        output_fields={k: to_field_string(v) for k, v in (alert.get("output_fields") or {}).items()},
    )
    message.time.seconds = seconds
    message.time.nanos = nanos
    message.priority = schema_pb2.priority.Value(alert["priority"].upper())
    return message


class Outputs(outputs_pb2_grpc.serviceServicer):  # type: ignore[misc]
    """``falco.outputs.service`` over a queue filled once at start."""

    def __init__(self, alerts: int) -> None:
        corpus = [response_from(doc) for doc in corpus_documents()]
        self.queue = deque(corpus[i % len(corpus)] for i in range(alerts))

    async def sub(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for _request in request_iterator:
            while self.queue:
                yield self.queue.popleft()


class Version(version_pb2_grpc.serviceServicer):  # type: ignore[misc]
    """``falco.version.service``, reporting Falco 0.43.0."""

    async def version(self, request: Any, context: Any) -> Any:
        return version_pb2.response(version="0.43.0", major=0, minor=43, patch=0)


async def serve(socket_path: str, alerts: int) -> None:
    """Serve on ``unix://socket_path`` until SIGTERM."""
    server = grpc.aio.server()
    outputs_pb2_grpc.add_serviceServicer_to_server(Outputs(alerts), server)
    version_pb2_grpc.add_serviceServicer_to_server(Version(), server)
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(grace=None)


async def consume(socket_path: str, alerts: int) -> dict[str, Any]:
    """Subscribe, read ``alerts`` responses and return the rate after the warm-up."""
    async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
        call = outputs_pb2_grpc.serviceStub(channel).sub()
        await call.write(outputs_pb2.request())
        received = 0
        started = time.perf_counter()
        async for _response in call:
            received += 1
            if received == WARMUP_ALERTS:
                started = time.perf_counter()
            if received == alerts:
                break
        elapsed = time.perf_counter() - started
        call.cancel()
    return {"alerts": received, "rate": (received - WARMUP_ALERTS) / elapsed}


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in (``serve``) or the reference consumer (``consume``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.falco_grpc", description=__doc__)
    parser.add_argument("role", choices=["serve", "consume"])
    parser.add_argument("--socket", required=True, help="unix socket path")
    parser.add_argument("--alerts", type=int, required=True, help="alerts to queue (serve) or to read (consume)")
    args = parser.parse_args(argv)
    if args.role == "serve":
        asyncio.run(serve(args.socket, args.alerts))
    else:
        print(json.dumps(asyncio.run(consume(args.socket, args.alerts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
