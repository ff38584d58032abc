"""The daemon as users run it: ``falco-router run`` fed by both transports, delivering to real peers.

Falco is played by a gRPC stand-in on a unix socket and by HTTP posts of the same corpus alerts; the
outputs are a Tansu broker, a local Slack API server and a local webhook receiver.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.event import loads
from tests.outputs.conftest import without_uuid
from tests.support.data import corpus_lines, free_port
from tests.support.falco_grpc import FalcoStandIn, response_from_alert, stringify
from tests.support.slack_server import SlackServer, slack_server
from tests.support.tansu import TansuBroker, tansu
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

__all__ = ["slack_server", "tansu", "webhook_receiver"]

TOPIC = "falco"


def daemon_config(port: int, socket: str, broker: TansuBroker, slack: SlackServer, receiver: WebhookReceiver) -> str:
    return f"""
ingest:
  http:
    listen: 127.0.0.1:{port}
  grpc:
    enabled: true
    address: {socket}
    poll_interval_s: 0.05
outputs:
  siem:
    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: {TOPIC}
    enable_idempotence: false  # the Tansu broker cannot start an idempotent producer
  soc:
    type: slack
    token: {{env: E2E_SLACK_TOKEN}}
    channel: C0E2E
    base_url: {slack.api_url}
  hook:
    type: webhook
    url: {receiver.url}
routes:
  - name: everything
    internal: include  # Falco's own health alerts too
    outputs: [siem, soc, hook]
"""


async def wait_ready(port: int, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if process.returncode is not None:
                pytest.fail(f"falco-router exited with status {process.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    pytest.fail("falco-router did not become ready")


async def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """Return an alert with output_fields as gRPC text, so both transports compare equal."""
    alert = without_uuid(document)
    alert["output_fields"] = {k: stringify(v) for k, v in alert.get("output_fields", {}).items()}
    return alert


@pytest.mark.slow
async def test_every_corpus_alert_over_both_transports_reaches_every_output(
    tmp_path: Path, tansu: TansuBroker, slack_server: SlackServer, webhook_receiver: WebhookReceiver
) -> None:
    originals = [loads(line) for line in corpus_lines()]
    await tansu.create_topic(TOPIC)
    falco = FalcoStandIn()
    socket = await falco.start_unix(tmp_path / "falco.sock")
    port = free_port()
    config = tmp_path / "router.yaml"
    config.write_text(daemon_config(port, socket, tansu, slack_server, webhook_receiver))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "run",
        "--config",
        str(config),
        env={**os.environ, "E2E_SLACK_TOKEN": "xoxb-test"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_ready(port, process)
        falco.enqueue(response_from_alert(alert) for alert in originals)
        async with aiohttp.ClientSession() as http:
            for line in corpus_lines():
                async with http.post(f"http://127.0.0.1:{port}/", data=line) as answer:
                    assert answer.status == 200
        expected = 2 * len(originals)
        await wait_for(lambda: len(slack_server.posted) >= expected, "the Slack messages")
        await wait_for(lambda: len(webhook_receiver.requests) >= expected, "the webhook requests")
        messages = await tansu.consume_all(TOPIC, expected)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        await falco.stop()

    assert process.returncode == 0, stderr.decode()[-2000:]
    kafka = [json.loads(m.value) for m in messages]
    hook = [json.loads(r.body) for r in webhook_receiver.requests]
    assert len(kafka) == expected
    assert len(hook) == expected
    assert len(slack_server.posted) == expected

    # Each alert arrives once per transport at each output: twice in all, never lost or doubled.
    key = Counter((a["rule"], a["time"]) for a in originals)
    assert Counter((a["rule"], a["time"]) for a in kafka) == key + key
    assert Counter((a["rule"], a["time"]) for a in hook) == key + key

    for received in (kafka, hook):
        exact = [without_uuid(a) for a in received]
        for original in originals:
            # The HTTP copy keeps every key and JSON type exactly; the gRPC copy carries the same values.
            assert original in exact, original["rule"]
            assert sum(comparable(a) == comparable(original) for a in received) == 2, original["rule"]

    slack_text = json.dumps(slack_server.posted)
    for original in originals:
        assert (
            json.dumps(original["rule"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))[1:-1]
            in slack_text
        )
