"""Fixtures of the output tests: a Tansu broker, a Slack stand-in, a webhook receiver and a router wired to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from router.app import RouterApp
from router.config import parse_config
from tests.support.data import free_port
from tests.support.slack_server import SlackServer, slack_server
from tests.support.tansu import TansuBroker, tansu
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

__all__ = ["slack_server", "tansu", "webhook_receiver"]

TOPIC = "falco-alerts"
SLACK_TOKEN_ENV = "FALCO_ROUTER_TEST_SLACK_TOKEN"
MENTION = "<!subteam^S0123|oncall>"


def router_yaml(broker: TansuBroker, slack: SlackServer, receiver: WebhookReceiver, port: int) -> str:
    """Return a config that routes every alert to Kafka, Slack and the webhook, with fast retries."""
    retry = "retry: {initial_backoff_s: 0.05, max_backoff_s: 0.2, max_attempts: 10}"
    return f"""
ingest:
  http:
    listen: 127.0.0.1:{port}
outputs:
  kafka:
    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: {TOPIC}
    enable_idempotence: false  # the Tansu broker cannot start an idempotent producer
    request_timeout_s: 5
    {retry}
  slack:
    type: slack
    token: {{env: {SLACK_TOKEN_ENV}}}
    channel: "#alerts"
    base_url: {slack.api_url}
    mention: "{MENTION}"
    {retry}
  hook:
    type: webhook
    url: {receiver.url}
    {retry}
routes:
  - name: everything
    internal: include  # Falco's own health alerts too
    outputs: [kafka, slack, hook]
"""


@pytest.fixture
async def router(
    tansu: TansuBroker,
    slack_server: SlackServer,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[RouterApp]:
    """A running router whose outputs point at the local peers."""
    monkeypatch.setenv(SLACK_TOKEN_ENV, "xoxb-test")
    await tansu.create_topic(TOPIC)
    app = RouterApp(parse_config(router_yaml(tansu, slack_server, webhook_receiver, free_port()), "test.yaml"))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown(grace_s=2)


@pytest.fixture
def post_alert(router: RouterApp) -> Callable[[str | bytes], Awaitable[None]]:
    """Post one alert body to the router's HTTP ingest and require a 200."""

    async def post(body: str | bytes) -> None:
        url = f"http://127.0.0.1:{router.http.port}/" if router.http else ""
        async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
            assert response.status == 200, await response.text()

    return post


async def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait until ``condition()`` holds; fail with a clear message after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def settled(app: RouterApp, output: str, count: int) -> Callable[[], bool]:
    """Return a condition: ``count`` alerts were delivered or lost by ``output``."""

    def check() -> bool:
        done = app.metrics.sample("output_delivered_total", output=output)
        lost = app.metrics.sample_sum("output_lost_total", output=output)
        return done + lost >= count

    return check


def without_uuid(document: Any) -> Any:
    """Return an outgoing alert without the router's uuid key, to compare with what Falco sent."""
    return {k: v for k, v in document.items() if k != "uuid"}
