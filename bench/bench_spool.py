"""Benchmark the spool: ack latency at a fixed rate, and throughput with and without it.

Run from the project root: ``.venv/bin/python bench/bench_spool.py [--rate 2000] [--seconds 5]``.

- latency: alerts are accepted one per call at ``--rate`` alerts/s, as the HTTP ingest does per
  request. It records the time from ``Pipeline.accept`` to its return, which with the spool on includes
  the group commit. HTTP parsing is not included.
- throughput: ``--concurrency`` submitters accept alerts as fast as they can until ``--total`` alerts
  are delivered to an output that does nothing; reported for memory queues and for the spool.
- http throughput (``--http``): the same, through the HTTP ingest, with the client (one alert per
  request, ``--concurrency`` connections) in its own process so it does not share the router's loop.
- formats (``--formats``): the raw cost of the two storage designs considered, SQLite in WAL mode and an
  append-only segment file, for 1 KB records in groups of 1 and 50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

# The benchmark runs as a script from a checkout, so the project root goes on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.app import RouterApp
from router.config import RouterConfig
from router.event import Event, parse_alert
from router.logs import configure_logging
from router.outputs.base import DeliveryError, Output
from router.pipeline import Backpressure

ALERT = {
    "hostname": "host-a",
    "output": "22:13:37.434319636: Warning Sensitive file opened for reading by non-trusted program (file=/etc/shadow)",
    "priority": "Warning",
    "rule": "Read sensitive file untrusted",
    "source": "syscall",
    "tags": ["filesystem"],
    "time": "2023-11-14T22:13:40.000000000Z",
    "output_fields": {"fd.name": "/etc/shadow", "proc.cmdline": "cat /etc/shadow", "evt.time": 1700000020000000000},
}


class NullOutput(Output):
    """Accepts every alert at once, so the benchmark measures the router, not a peer."""

    type_name = "file"
    max_batch = 100

    async def send(self, event: Event) -> None:
        return None

    async def send_batch(self, events: Sequence[Event]) -> list[DeliveryError | None]:
        return [None] * len(events)


def make_app(spool_dir: Path | None, ingest_port: int | None = None) -> RouterApp:
    http = {"enabled": ingest_port is not None, "listen": f"127.0.0.1:{ingest_port or 2801}"}
    document: dict[str, Any] = {
        "ingest": {"http": http},
        "outputs": {"sink": {"type": "file", "path": "/dev/null", "queue": {"max_items": 1_000_000}}},
        "routes": [{"name": "all", "outputs": ["sink"]}],
    }
    if spool_dir is not None:
        document["spool"] = {"path": str(spool_dir)}
    config = RouterConfig.model_validate(document)
    return RouterApp(config, overrides={"sink": NullOutput("sink", config.outputs["sink"])})


async def measure_latency(spool_dir: Path | None, rate: float, seconds: float) -> list[float]:
    app = make_app(spool_dir)
    await app.start(ingest=False)
    latencies: list[float] = []

    async def accept_one() -> None:
        event = parse_alert(ALERT)
        started = time.perf_counter()
        await app.pipeline.accept([event])
        latencies.append(time.perf_counter() - started)

    tasks = set()
    interval = 1.0 / rate
    begin = time.perf_counter()
    for number in range(int(rate * seconds)):
        # Keep the offered rate even when one tick is late: sleep to the scheduled time, not by a fixed step.
        delay = begin + number * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(accept_one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    await app.pipeline.wait_idle()
    await app.shutdown(grace_s=5)
    return latencies


async def measure_throughput(spool_dir: Path | None, total: int, concurrency: int) -> float:
    app = make_app(spool_dir)
    await app.start(ingest=False)
    remaining = total

    async def submitter() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            event = parse_alert(ALERT)
            while True:
                try:
                    await app.pipeline.accept([event])
                    break
                except Backpressure:
                    await asyncio.sleep(0.001)
            # Without the spool accept never suspends; yield so the pipeline task runs as with real requests.
            await asyncio.sleep(0)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    await app.pipeline.wait_idle(poll_s=0.001)
    elapsed = time.perf_counter() - started
    await app.shutdown(grace_s=5)
    return total / elapsed


async def measure_http_throughput(spool_dir: Path | None, total: int, concurrency: int) -> float:
    port = free_port()
    app = make_app(spool_dir, port)
    await app.start()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        f"http://127.0.0.1:{port}/",
        str(total),
        str(concurrency),
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await client.communicate()
    await app.pipeline.wait_idle(poll_s=0.001)
    await app.shutdown(grace_s=5)
    return float(output.decode().strip())


async def run_client(url: str, total: int, concurrency: int) -> None:
    """Post ``total`` alerts, one per request; print alerts per second."""
    import aiohttp  # noqa: PLC0415 - only the client process needs it

    body = orjson.dumps(ALERT)
    remaining = total

    async def poster(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body) as response:
                if response.status != 200:
                    raise SystemExit(f"HTTP {response.status}: {await response.text()}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(poster(session) for _ in range(concurrency)))
        print(total / (time.perf_counter() - started))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def measure_formats(directory: Path, records: int = 20_000) -> dict[str, float]:
    body = os.urandom(512).hex().encode()  # 1 KB
    results: dict[str, float] = {}
    for group in (1, 50):
        for synchronous in ("NORMAL", "FULL"):
            path = directory / f"bench-{group}-{synchronous}.sqlite3"
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB)")
            started = time.perf_counter()
            for _ in range(0, records, group):
                db.execute("BEGIN")
                db.executemany("INSERT INTO t (body) VALUES (?)", [(body,)] * group)
                db.execute("COMMIT")
            results[f"sqlite_wal_{synchronous.lower()}_group_{group}"] = records / (time.perf_counter() - started)
            db.close()
        for sync in (False, True):
            path = directory / f"segment-{group}-{sync}.log"
            with path.open("ab", buffering=0) as segment:
                started = time.perf_counter()
                for _ in range(0, records, group):
                    frame = b"".join(len(body).to_bytes(4, "big") + body for _ in range(group))
                    segment.write(frame)
                    if sync:
                        os.fdatasync(segment.fileno())
                name = "fdatasync" if sync else "nosync"
                results[f"segment_{name}_group_{group}"] = records / (time.perf_counter() - started)
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=2000.0, help="offered alerts per second in the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--total", type=int, default=20_000, help="alerts per throughput run")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent submitters in the throughput run")
    parser.add_argument("--formats", action="store_true", help="also compare SQLite WAL with a segment file")
    parser.add_argument("--http", action="store_true", help="also measure throughput through the HTTP ingest")
    parser.add_argument("--client", nargs=3, metavar=("URL", "TOTAL", "CONCURRENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        await run_client(args.client[0], int(args.client[1]), int(args.client[2]))
        return
    configure_logging("warning", "json")
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} sqlite={sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        for label, spool_dir in (("memory", None), ("spool", directory / "latency")):
            latencies = await measure_latency(spool_dir, args.rate, args.seconds)
            print(
                f"latency {label}: {len(latencies)} alerts at {args.rate:.0f}/s "
                f"p50={statistics.median(latencies) * 1000:.3f} ms p99={percentile(latencies, 0.99) * 1000:.3f} ms "
                f"max={max(latencies) * 1000:.3f} ms"
            )
        memory_rate = await measure_throughput(None, args.total, args.concurrency)
        spool_rate = await measure_throughput(directory / "throughput", args.total, args.concurrency)
        print(f"throughput memory: {memory_rate:.0f} alerts/s")
        print(f"throughput spool: {spool_rate:.0f} alerts/s ({spool_rate / memory_rate:.0%} of memory)")
        if args.http:
            memory_http = await measure_http_throughput(None, args.total, args.concurrency)
            spool_http = await measure_http_throughput(directory / "http", args.total, args.concurrency)
            print(f"http throughput memory: {memory_http:.0f} alerts/s")
            print(f"http throughput spool: {spool_http:.0f} alerts/s ({spool_http / memory_http:.0%} of memory)")
        if args.formats:
            for name, value in measure_formats(directory).items():
                print(f"format {name}: {value:.0f} records/s")


if __name__ == "__main__":
    asyncio.run(main())
