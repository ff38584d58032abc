"""Alerts posted to a running router reach a real Kafka broker, a Slack stand-in and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from router.app import RouterApp, StartupError
from router.config import parse_config
from router.event import loads, parse_alert
from tests.outputs.conftest import MENTION, TOPIC, settled, wait_until, without_uuid
from tests.support.data import cases, corpus_lines
from tests.support.slack_server import Fault, SlackServer
from tests.support.tansu import TansuBroker
from tests.support.webhook_receiver import WebhookReceiver

Post = Callable[[str | bytes], Awaitable[None]]
OUTPUTS = ("kafka", "slack", "hook")


def case_body(name: str) -> str:
    return json.dumps(cases(name)[0]["event"])


def slack_field(message: dict[str, Any], name: str) -> list[str]:
    """Return the texts of every Slack field labelled ``name``."""
    texts = []
    for attachment in message["attachments"]:
        for block in attachment["blocks"]:
            for field in block.get("fields", []):
                if field["text"].startswith(f"*{name}*\n"):
                    texts.append(field["text"].split("\n", 1)[1])
    return texts


async def deliver(router: RouterApp, post_alert: Post, bodies: list[str]) -> None:
    for body in bodies:
        await post_alert(body)
    for output in OUTPUTS:
        await wait_until(settled(router, output, len(bodies)))


async def test_corpus_reaches_every_output_once(
    router: RouterApp,
    post_alert: Post,
    tansu: TansuBroker,
    slack_server: SlackServer,
    webhook_receiver: WebhookReceiver,
) -> None:
    lines = corpus_lines()
    await deliver(router, post_alert, lines)
    originals = [loads(line) for line in lines]

    messages = await tansu.consume_all(TOPIC, len(lines))
    assert len(messages) == len(lines)
    assert [without_uuid(loads(m.value)) for m in messages] == originals
    assert len(slack_server.posted) == len(lines)
    assert len(webhook_receiver.delivered) == len(lines)
    assert [without_uuid(loads(r.body)) for r in webhook_receiver.delivered] == originals


async def test_kafka_keeps_integers_past_2_63(router: RouterApp, post_alert: Post, tansu: TansuBroker) -> None:
    lines = [line for line in corpus_lines() if "18446744073695528866" in line]
    assert lines, "the corpus holds an integer past 2^63"
    await deliver(router, post_alert, lines)

    (message,) = await tansu.consume_all(TOPIC, 1)
    assert b"18446744073695528866" in message.value
    assert without_uuid(loads(message.value)) == loads(lines[0])


async def test_kafka_record_key_and_headers(router: RouterApp, post_alert: Post, tansu: TansuBroker) -> None:
    await deliver(router, post_alert, [case_body("C13")])

    (message,) = await tansu.consume_all(TOPIC, 1)
    assert message.key == b"host-a"
    assert message.headers["rule"] == b"Read sensitive file untrusted"
    assert message.headers["priority"] == b"Warning"
    assert message.headers["source"] == b"syscall"
    assert message.headers["falco-router-id"] == loads(message.value)["uuid"].encode()


async def test_null_values_reach_kafka_and_slack(
    router: RouterApp, post_alert: Post, tansu: TansuBroker, slack_server: SlackServer
) -> None:
    await deliver(router, post_alert, [case_body("C01")])

    (message,) = await tansu.consume_all(TOPIC, 1)
    fields = loads(message.value)["output_fields"]
    assert fields["k8s.ns.name"] is None
    assert fields["user.name"] is None
    (posted,) = slack_server.posted
    assert slack_field(posted, "k8s.ns.name") == ["`&lt;NA&gt;`"]
    assert slack_field(posted, "proc.pname") == ["`&lt;NA&gt;`"]


async def test_slack_fields_once_ints_decimal(router: RouterApp, post_alert: Post, slack_server: SlackServer) -> None:
    event = cases("C02")[0]["event"]
    await deliver(router, post_alert, [json.dumps(event)])

    (posted,) = slack_server.posted
    for name, value in event["output_fields"].items():
        assert slack_field(posted, name) == [f"`{value}`"], name
    assert slack_field(posted, "user.loginuid") == ["`-1`"]
    assert slack_field(posted, "proc.tty") == ["`34816`"]


async def test_audit_alert_quotes_and_lists_round_trip(
    router: RouterApp,
    post_alert: Post,
    tansu: TansuBroker,
    webhook_receiver: WebhookReceiver,
    slack_server: SlackServer,
) -> None:
    event = cases("C05")[0]["event"]
    await deliver(router, post_alert, [json.dumps(event)])

    (message,) = await tansu.consume_all(TOPIC, 1)
    assert without_uuid(loads(message.value)) == event
    assert without_uuid(loads(webhook_receiver.delivered[0].body)) == event
    (posted,) = slack_server.posted
    groups = slack_field(posted, "ka.user.groups")
    assert groups == ['`["system:serviceaccounts","system:authenticated"]`']


async def test_huge_cmdline_cut_only_in_slack(
    router: RouterApp,
    post_alert: Post,
    tansu: TansuBroker,
    webhook_receiver: WebhookReceiver,
    slack_server: SlackServer,
) -> None:
    event = cases("C06")[0]["event"]
    cmdline = event["output_fields"]["proc.cmdline"]
    await deliver(router, post_alert, [json.dumps(event)])

    (message,) = await tansu.consume_all(TOPIC, 1)
    assert loads(message.value)["output_fields"]["proc.cmdline"] == cmdline
    assert loads(webhook_receiver.delivered[0].body)["output_fields"]["proc.cmdline"] == cmdline
    (posted,) = slack_server.posted  # the stand-in posts only messages within Slack's limits
    (shown,) = slack_field(posted, "proc.cmdline")
    assert re.search(r"…truncated \(\d+ chars\)`$", shown)
    assert cmdline.startswith(shown[1 : shown.index("…truncated")].replace("&amp;", "&"))


async def test_webhook_503_retried_with_same_event_id(
    router: RouterApp, post_alert: Post, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.answer_next(503, times=3)
    await deliver(router, post_alert, [case_body("C13")])

    attempts = webhook_receiver.requests
    assert len(attempts) == 4
    assert len(webhook_receiver.delivered) == 1
    event_id = loads(webhook_receiver.delivered[0].body)["uuid"]
    assert {a.headers["X-Event-Id"] for a in attempts} == {event_id}
    assert router.metrics.sample("output_delivered_total", output="hook") == 1


async def test_slack_payload_has_no_injected_mentions_or_links(
    router: RouterApp, post_alert: Post, slack_server: SlackServer
) -> None:
    await deliver(router, post_alert, [case_body("C14")])

    (request,) = slack_server.requests
    payload = request.body.decode()
    for raw in ("<!channel>", "<!here>", "<@U00000000>", "<https://evil.example/x|open runbook>"):
        assert raw not in payload, raw
    assert not re.search(r"<(?:https?://|@|!(?:channel|here|everyone))", payload.replace(MENTION, ""))
    assert MENTION in payload


async def test_slack_429_honours_retry_after_while_others_flow(
    router: RouterApp,
    post_alert: Post,
    slack_server: SlackServer,
    webhook_receiver: WebhookReceiver,
    tansu: TansuBroker,
) -> None:
    slack_server.fail_next(Fault(429, retry_after_s=3), times=2)
    await post_alert(case_body("C15"))
    await wait_until(settled(router, "hook", 1))
    await wait_until(settled(router, "kafka", 1))
    assert len(slack_server.posted) == 0
    await wait_until(settled(router, "slack", 1))

    first, second, third = (r.at_s for r in slack_server.requests)
    assert second - first >= 3.0
    assert third - second >= 3.0
    assert len(slack_server.posted) == 1
    assert router.metrics.sample("output_retries_total", output="slack", reason="rate_limited") == 2
    assert len(await tansu.consume_all(TOPIC, 1)) == 1


async def test_webhook_redirect_is_not_delivered(
    router: RouterApp, post_alert: Post, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.answer_next(302, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    await deliver(router, post_alert, [case_body("C13")])

    assert len(webhook_receiver.requests) == 1
    assert router.metrics.sample("output_delivered_total", output="hook") == 0
    assert router.metrics.sample("output_lost_total", output="hook", reason="redirect") == 1


async def test_webhook_400_dead_lettered_without_retry(
    router: RouterApp, post_alert: Post, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.answer_next(400)
    await deliver(router, post_alert, [case_body("C13")])

    assert len(webhook_receiver.requests) == 1
    assert router.metrics.sample("output_lost_total", output="hook", reason="http_400") == 1


@pytest.mark.slow
async def test_broker_down_at_startup_delays_only_kafka(webhook_receiver: WebhookReceiver) -> None:
    broker = TansuBroker()  # its port is chosen but nothing listens there yet
    config = parse_config(
        f"""
ingest: {{http: {{enabled: false}}}}
outputs:
  audit:
    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: late
    enable_idempotence: false  # the Tansu broker cannot start an idempotent producer
    request_timeout_s: 1
    retry: {{initial_backoff_s: 0.1, max_backoff_s: 0.5}}
  hook:
    type: webhook
    url: {webhook_receiver.url}
routes: [{{name: all, outputs: [audit, hook]}}]
""",
        "test.yaml",
    )
    app = RouterApp(config)
    await app.start()
    try:
        # Failing from the start, before any alert is tried, so a quiet router still shows the outage.
        assert app.health.get("output.audit").status == "failing"  # type: ignore[union-attr]
        assert app.metrics.sample("output_up", output="audit") == 0
        await app.pipeline.accept([parse_alert(loads(case_body("C13")))])
        await wait_until(settled(app, "hook", 1))
        await wait_until(
            lambda: app.metrics.sample("output_retries_total", output="audit", reason="broker_unavailable") >= 1
        )
        assert app.health.get("output.audit").status == "failing"  # type: ignore[union-attr]

        await broker.start()
        await broker.create_topic("late")
        await wait_until(settled(app, "audit", 1), timeout_s=60)
        assert app.metrics.sample("output_delivered_total", output="audit") == 1
        assert len(await broker.consume_all("late", 1)) == 1
    finally:
        await app.shutdown(grace_s=2)
        await broker.stop()


async def test_missing_secret_stops_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FALCO_ROUTER_TEST_MISSING", raising=False)
    config = parse_config(
        """
ingest: {http: {enabled: false}}
outputs:
  pager:
    type: slack
    token: {env: FALCO_ROUTER_TEST_MISSING}
    channel: "#alerts"
    base_url: http://127.0.0.1:9/api/
routes: [{name: all, outputs: [pager]}]
""",
        "test.yaml",
    )
    with pytest.raises(StartupError, match=r"output pager \(slack\): Slack token unavailable"):
        await RouterApp(config).start()


async def test_webhook_outage_then_one_delivery(
    router: RouterApp, post_alert: Post, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.fail_until_recovered(503)
    await post_alert(case_body("C13"))
    await wait_until(lambda: len(webhook_receiver.requests) >= 3)
    webhook_receiver.recover()
    await wait_until(settled(router, "hook", 1))

    assert len(webhook_receiver.delivered) == 1
    assert len({r.headers["X-Event-Id"] for r in webhook_receiver.requests}) == 1
    assert router.metrics.sample("output_retries_total", output="hook", reason="http_503") >= 2


async def test_shutdown_finishes_while_broker_down(router: RouterApp, post_alert: Post, tansu: TansuBroker) -> None:
    await tansu.stop()
    await post_alert(case_body("C12"))
    await wait_until(settled(router, "hook", 1))

    # The guard only turns a hang into a failure; a shutdown within it is not a performance claim.
    async with asyncio.timeout(60):
        await router.shutdown(grace_s=1)

    assert router.metrics.sample("output_delivered_total", output="kafka") == 0
