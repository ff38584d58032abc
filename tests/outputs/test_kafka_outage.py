"""Case C12: the Kafka broker is unreachable for 20 s while 1,000 alerts arrive, then comes back.

Expected: Slack and the webhook get every alert during the outage (no delay from the dead broker), and once
the broker is back, all 1,000 alerts are in the topic in arrival order per key.

The outage is a cut TCP proxy in front of a running Tansu, not a Tansu restart. To the router both look
the same: connections refused and closed, then accepted again. But Tansu keeps topics in memory only and
acknowledges, then drops, a produce to a topic that does not exist yet, so after a restart it loses what
the router sends before the test has re-created the topic; a real broker keeps its topics. Set
FALCO_ROUTER_TEST_KAFKA_OUTAGE_S to change the outage length.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from router.app import RouterApp
from router.config import parse_config
from tests.outputs.conftest import SLACK_TOKEN_ENV, settled, wait_until
from tests.support.data import cases, free_port
from tests.support.slack_server import SlackServer
from tests.support.tansu import TansuBroker
from tests.support.tcp_proxy import TcpProxy
from tests.support.webhook_receiver import WebhookReceiver

TOPIC = "c12"
ALERTS = 1000
OUTAGE_S = float(os.environ.get("FALCO_ROUTER_TEST_KAFKA_OUTAGE_S", "20"))


def config_text(broker: TansuBroker, slack: SlackServer, receiver: WebhookReceiver) -> str:
    # Retries stay frequent and unlimited in count during the outage; max_age_s bounds them instead.
    retry = "retry: {initial_backoff_s: 0.1, max_backoff_s: 1, max_attempts: 1000, max_age_s: 600}"
    return f"""
ingest:
  http:
    listen: 127.0.0.1:{free_port()}
outputs:
  siem:
    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: {TOPIC}
    enable_idempotence: false  # the Tansu broker cannot start an idempotent producer
    request_timeout_s: 2
    {retry}
  soc:
    type: slack
    token: {{env: {SLACK_TOKEN_ENV}}}
    channel: C0C12
    base_url: {slack.api_url}
  hook:
    type: webhook
    url: {receiver.url}
routes:
  - name: everything
    outputs: [siem, soc, hook]
"""


@pytest.fixture
async def proxied_broker() -> AsyncIterator[tuple[TansuBroker, TcpProxy]]:
    broker = TansuBroker()
    proxy = TcpProxy(broker.port)
    broker.advertised_port = proxy.port
    await proxy.start()
    await broker.start()
    try:
        yield broker, proxy
    finally:
        await proxy.cut()
        await broker.stop()


@pytest.mark.slow
async def test_c12_broker_outage_loses_nothing_and_delays_no_other_output(
    proxied_broker: tuple[TansuBroker, TcpProxy],
    slack_server: SlackServer,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tansu, proxy = proxied_broker
    monkeypatch.setenv(SLACK_TOKEN_ENV, "xoxb-test")
    await tansu.create_topic(TOPIC)
    app = RouterApp(parse_config(config_text(tansu, slack_server, webhook_receiver), "c12.yaml"))
    await app.start()
    template = cases("C12")[0]["event"]
    stamps = [template["output_fields"]["evt.time"] + n * 1_000_000 for n in range(ALERTS)]
    try:
        assert app.http is not None
        loop = asyncio.get_running_loop()
        await proxy.cut()
        outage_started = loop.time()
        async with aiohttp.ClientSession() as http:
            for stamp in stamps:
                document = {**template, "output_fields": {**template["output_fields"], "evt.time": stamp}}
                async with http.post(f"http://127.0.0.1:{app.http.port}/", data=orjson.dumps(document)) as answer:
                    assert answer.status == 200

        # The other outputs deliver everything while the broker is still down.
        await wait_until(settled(app, "hook", ALERTS), timeout_s=OUTAGE_S)
        await wait_until(settled(app, "soc", ALERTS), timeout_s=OUTAGE_S)
        assert loop.time() - outage_started < OUTAGE_S, "the webhook and Slack were not faster than the outage"
        assert app.metrics.sample("output_delivered_total", output="siem") == 0

        await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - outage_started)))
        await proxy.start()
        await wait_until(settled(app, "siem", ALERTS), timeout_s=120)
    finally:
        await app.shutdown(grace_s=5)

    messages = await tansu.consume_all(TOPIC, ALERTS, timeout_s=30)
    received = [json.loads(m.value)["output_fields"]["evt.time"] for m in messages]
    assert app.metrics.sample_sum("output_lost_total", output="siem") == 0
    assert len(received) == ALERTS
    assert received == stamps, "alerts of one key (one hostname) arrived out of order or twice"
    assert app.metrics.sample("output_delivered_total", output="hook") == ALERTS
    assert app.metrics.sample("output_delivered_total", output="soc") == ALERTS
