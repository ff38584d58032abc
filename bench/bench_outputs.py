"""Measure the router's CPU per alert in the Kafka and webhook outputs, without HTTP ingest or pipeline.

Run: .venv/bin/python bench/bench_outputs.py [alerts]
Each output is created from its config as the router creates it and sent the corpus alerts in the
batches the delivery loop hands over (500 for Kafka, ``max_batch`` for the webhook). The peers run as
their own processes on 127.0.0.1: Tansu (in-memory storage) and ``bench.reference_http``, a bare
aiohttp server that responds 200. The cost is this process's CPU time (user + system) per alert,
because other processes on a shared machine disturb it less than the rate. The best of 3 rounds is
reported.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import corpus_documents, free_port, stop
from bench.routerproc import start_reference
from router.config import ConfigError, parse_config
from router.event import Event, parse_alert
from router.outputs import create_output
from router.outputs.base import Output
from tests.support.tansu import TansuBroker

TOPIC = "falco-alerts"
ROUNDS = 3


def make_output(body: str) -> Output:
    config = parse_config(f"outputs:\n  out:\n{body}routes: [{{name: all, outputs: [out]}}]\n", "bench.yaml")
    return create_output("out", config.outputs["out"])


def alerts(count: int) -> list[Event]:
    documents = corpus_documents()
    return [parse_alert(documents[index % len(documents)]) for index in range(count)]


async def cpu_per_alert_us(output: Output, count: int) -> tuple[float, float]:
    """Return the best CPU µs per alert over the rounds, and the wall-clock alerts/s of that round."""
    await output.start()
    best = (float("inf"), 0.0)
    try:
        for _ in range(ROUNDS):
            events = alerts(count)
            for event in events:
                event.to_json()  # the pipeline serialises each alert once, before any output
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            for start in range(0, count, output.max_batch):
                results = await output.send_batch(events[start : start + output.max_batch])
                if any(result is not None for result in results):
                    raise RuntimeError(f"delivery failed: {next(r for r in results if r is not None)}")
            cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
            best = min(best, (cpu_s / count * 1e6, count / wall_s))
    finally:
        await output.close()
    return best


async def main(count: int) -> None:
    broker = TansuBroker()
    await broker.start()
    webhook_port = free_port()
    receiver = start_reference(webhook_port, use_uvloop=False)
    try:
        await broker.create_topic(TOPIC)
        url = f"http://127.0.0.1:{webhook_port}/falco"
        cases = [
            (
                "kafka",
                f'type: kafka\nbrokers: ["{broker.bootstrap}"]\ntopic: {TOPIC}\nenable_idempotence: false',
                count,
            ),
            ("webhook, one alert per request", f"type: webhook\nurl: {url}", count // 10),
            ("webhook, batches of 100", f"type: webhook\nurl: {url}\nbatch: {{max_alerts: 100}}", count),
        ]
        for name, settings, alerts_sent in cases:
            try:
                output = make_output("".join(f"    {line}\n" for line in settings.splitlines()))
            except ConfigError as exc:
                print(f"{name}: not supported by this version ({exc})")
                continue
            cpu_us, rate = await cpu_per_alert_us(output, alerts_sent)
            print(f"{name}: {cpu_us:.1f} µs of CPU per alert, {rate:,.0f} alerts/s ({alerts_sent:,} alerts)")
    finally:
        stop(receiver)
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
