"""Load generator: POSTs corpus alerts over keep-alive HTTP/1.1 connections the way Falco's http_output does.

Runs as its own process (``python -m bench.loadgen``) so it never shares the event loop of the server
under test. Each connection sends one request, waits for the whole response, then sends the next, like
Falco's single output thread. It speaks raw HTTP/1.1 over asyncio streams because an HTTP client library
costs several times more per request than the servers being measured. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench.common import corpus_bodies, percentile

HEADER_END = b"\r\n\r\n"


def build_requests(port: int, path: str) -> list[bytes]:
    """Return one complete HTTP/1.1 request per corpus alert, headers as Falco's libcurl sends them."""
    requests = []
    for body in corpus_bodies():
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Accept: */*\r\n"
            "Content-Type: application/json\r\n"
            "User-Agent: falcosecurity/falco\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


def content_length(head: bytes) -> int:
    """Return the Content-Length of a response head (0 when absent)."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def connection(
    *,
    port: int,
    requests: list[bytes],
    offset: int,
    stop_at: float,
    interval_s: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    """Send requests one after the other on one connection until ``stop_at`` (monotonic seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = offset
    next_send = time.perf_counter()
    try:
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            if interval_s:
                # Fixed offered load: send on schedule, or at once when the responses fell behind it.
                if now < next_send:
                    await asyncio.sleep(next_send - now)
                next_send += interval_s
            request = requests[index % len(requests)]
            index += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(HEADER_END)
            length = content_length(head)
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def generate(
    *, port: int, path: str, connections: int, duration_s: float, warmup_s: float, rate: float
) -> dict[str, Any]:
    """Run the load (after a warm-up whose responses are not counted) and return the measurements."""
    requests = build_requests(port, path)
    interval_s = connections / rate if rate else 0.0
    if warmup_s:
        await asyncio.gather(
            *(
                connection(
                    port=port,
                    requests=requests,
                    offset=i,
                    stop_at=time.perf_counter() + warmup_s,
                    interval_s=interval_s,
                    latencies=[],
                    statuses={},
                )
                for i in range(connections)
            )
        )
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(
        *(
            connection(
                port=port,
                requests=requests,
                offset=i * 7,
                stop_at=stop_at,
                interval_s=interval_s,
                latencies=latencies,
                statuses=statuses,
            )
            for i in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "connections": connections,
        "offered_rate": rate or None,
        "requests": len(latencies),
        "elapsed_s": elapsed,
        "rate": len(latencies) / elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the load and print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to POST to")
    parser.add_argument("--path", default="/", help="request path (default /)")
    parser.add_argument("--connections", type=int, default=1, help="keep-alive connections, each sequential")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before measuring")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered alerts per second in total (0: as fast as the server responds)"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(
        generate(
            port=args.port,
            path=args.path,
            connections=args.connections,
            duration_s=args.duration,
            warmup_s=args.warmup,
            rate=args.rate,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
