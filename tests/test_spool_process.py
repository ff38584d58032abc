"""The spool across real process deaths: the router runs as a subprocess and is killed with signals.

Only processes started here are signalled, and every server binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from router.spool.store import DATABASE_NAME
from tests.support.data import PROJECT_ROOT, cases, free_port
from tests.support.falco_grpc import FalcoStandIn, response_from_alert
from tests.support.webhook import WebhookReceiver

pytestmark = pytest.mark.slow

EXIT_DEADLINE_S = 30.0


def write_config(
    directory: Path, ingest_port: int, webhook_port: int, grace_s: float = 20.0, grpc_address: str | None = None
) -> Path:
    ingest: dict[str, object] = {"http": {"listen": f"127.0.0.1:{ingest_port}"}}
    if grpc_address is not None:
        ingest["grpc"] = {"enabled": True, "address": grpc_address, "poll_interval_s": 0.05}
    document = {
        "ingest": ingest,
        "outputs": {
            "hook": {
                "type": "webhook",
                "url": f"http://127.0.0.1:{webhook_port}/alerts",
                "timeout_s": 2,
                "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "max_attempts": 10_000},
            }
        },
        "routes": [{"name": "all", "outputs": ["hook"]}],
        "spool": {"path": str(directory / "spool"), "page_items": 100},
        "shutdown": {"grace_s": grace_s},
    }
    path = directory / "router.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@contextmanager
def router_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "router", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("ab") as stderr:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + EXIT_DEADLINE_S
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = await asyncio.to_thread(log.read_text)
                raise AssertionError(f"router exited with {process.returncode}: {tail[-2000:]}")
            try:
                async with client.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("router not ready in time")


async def post_alerts(port: int, first: int, count: int) -> list[int]:
    """POST ``count`` C12 alerts one per request; return their evt.time values."""
    template = cases("C12")[0]["event"]
    stamps = []
    async with aiohttp.ClientSession() as client:
        for number in range(first, first + count):
            stamp = 1700000020000000000 + number * 1_000_000
            document = {**template, "output_fields": {**template["output_fields"], "evt.time": stamp}}
            async with client.post(f"http://127.0.0.1:{port}/", data=orjson.dumps(document)) as response:
                assert response.status == 200, await response.text()
            stamps.append(stamp)
    return stamps


async def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return await asyncio.to_thread(process.wait, timeout_s)
    except subprocess.TimeoutExpired:
        return None


async def wait_delivered(receiver: WebhookReceiver, distinct_ids: int, timeout_s: float = 60.0) -> None:
    """Wait until the receiver accepted ``distinct_ids`` ids; on timeout the test's asserts report what is missing."""
    deadline = time.monotonic() + timeout_s
    while len(set(receiver.accepted)) < distinct_ids:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def ids_by_stamp(receiver: WebhookReceiver) -> dict[int, set[str]]:
    found: dict[int, set[str]] = defaultdict(set)
    for body in receiver.bodies:
        found[body["output_fields"]["evt.time"]].add(body["uuid"])
    return found


def spooled_deliveries(directory: Path) -> int:
    with sqlite3.connect(directory / "spool" / DATABASE_NAME) as db:
        routed: int = db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        unrouted: int = db.execute("SELECT count(*) FROM accepted").fetchone()[0]
    return routed + unrouted


async def test_kill_9_loses_no_accepted_alert(tmp_path: Path) -> None:
    ingest_port, webhook_port = free_port(), free_port()
    config = write_config(tmp_path, ingest_port, webhook_port)
    log = tmp_path / "router.log"
    with router_process(config, log) as first:
        await wait_ready(ingest_port, first, log)
        stamps = await post_alerts(ingest_port, 0, 500)
        first.send_signal(signal.SIGKILL)
        killed_code = await wait_exit(first, EXIT_DEADLINE_S)

    receiver = WebhookReceiver(webhook_port)
    with router_process(config, log) as second:
        await wait_ready(ingest_port, second, log)
        await receiver.start()
        try:
            await wait_delivered(receiver, 500)
            second.send_signal(signal.SIGTERM)
            await wait_exit(second, EXIT_DEADLINE_S)
        finally:
            await receiver.stop()

    found = ids_by_stamp(receiver)
    duplicates = receiver.duplicates()
    # Reported, not asserted: at-least-once allows a duplicate for an alert in flight at the kill.
    print(f"kill -9: {len(receiver.accepted)} deliveries, {len(duplicates)} duplicated ids: {duplicates}")
    assert killed_code == -signal.SIGKILL
    assert sorted(found) == stamps
    assert all(len(ids) == 1 for ids in found.values()), "an alert changed its id across the restart"


async def test_sigterm_during_outage_exits_and_keeps_alerts(tmp_path: Path) -> None:
    ingest_port, webhook_port = free_port(), free_port()
    config = write_config(tmp_path, ingest_port, webhook_port, grace_s=1.0)
    log = tmp_path / "router.log"
    with router_process(config, log) as first:
        await wait_ready(ingest_port, first, log)
        stamps = await post_alerts(ingest_port, 0, 100)
        first.send_signal(signal.SIGTERM)
        exit_code = await wait_exit(first, EXIT_DEADLINE_S)
    kept = spooled_deliveries(tmp_path)

    receiver = WebhookReceiver(webhook_port)
    await receiver.start()
    try:
        with router_process(config, log) as second:
            await wait_ready(ingest_port, second, log)
            await wait_delivered(receiver, 100)
            second.send_signal(signal.SIGTERM)
            await wait_exit(second, EXIT_DEADLINE_S)
    finally:
        await receiver.stop()

    assert exit_code == 0
    assert kept == 100
    assert sorted(ids_by_stamp(receiver)) == stamps
    assert "alerts_kept_in_spool" in log.read_text()


async def test_kill_9_loses_no_alert_taken_from_falco_grpc(tmp_path: Path) -> None:
    # Falco removes an alert from its queue when it streams it, so the spool is the only copy left.
    ingest_port, webhook_port = free_port(), free_port()
    falco = FalcoStandIn()
    address = await falco.start_unix(tmp_path / "falco.sock")
    config = write_config(tmp_path, ingest_port, webhook_port, grpc_address=address)
    log = tmp_path / "router.log"
    template = cases("C12")[0]["event"]
    stamps = [1700000020000000000 + n * 1_000_000 for n in range(200)]
    try:
        with router_process(config, log) as first:
            await wait_ready(ingest_port, first, log)
            falco.enqueue(
                response_from_alert({**template, "output_fields": {**template["output_fields"], "evt.time": stamp}})
                for stamp in stamps
            )
            deadline = time.monotonic() + EXIT_DEADLINE_S
            while (falco.queue or spooled_deliveries(tmp_path) < len(stamps)) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            killed_code = await wait_exit(first, EXIT_DEADLINE_S)
        assert not falco.queue, "the router did not take every alert from Falco before the kill"
    finally:
        await falco.stop()

    receiver = WebhookReceiver(webhook_port)
    with router_process(config.with_name("router.yaml"), log) as second:
        await wait_ready(ingest_port, second, log)
        await receiver.start()
        try:
            await wait_delivered(receiver, len(stamps))
            second.send_signal(signal.SIGTERM)
            await wait_exit(second, EXIT_DEADLINE_S)
        finally:
            await receiver.stop()

    assert killed_code == -signal.SIGKILL
    assert sorted(ids_by_stamp(receiver)) == stamps
