"""Opt-in webhook batches: several alerts per request, one response for all of them, retried as a whole."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid

import orjson
import pytest

from router.app import RouterApp
from router.config import ConfigError, parse_config
from router.event import Event, parse_alert
from router.outputs import create_output
from router.outputs.base import Output, PermanentError, RetriableError
from tests.outputs.conftest import wait_until
from tests.support.data import cases, free_port
from tests.support.webhook_receiver import WebhookReceiver

# Written out here, not imported, so that a change of the namespace in the code fails this test.
NAMESPACE = uuid.UUID("6f1d3a52-8c4e-4b0a-9e57-2d8f0c6b7a13")


def make_output(body: str) -> Output:
    config = parse_config(f"outputs:\n  hook:\n{body}\nroutes: [{{name: all, outputs: [hook]}}]\n", "test.yaml")
    return create_output("hook", config.outputs["hook"])


def hook_config(receiver: WebhookReceiver, batch: str | None = "{max_alerts: 10}") -> str:
    text = f"    type: webhook\n    url: {receiver.url}"
    if batch is not None:
        text += f"\n    batch: {batch}"
    return text


def alerts(count: int) -> list[Event]:
    rows = cases()
    return [parse_alert(rows[index % len(rows)]["event"]) for index in range(count)]


def expected_batch_id(events: list[Event]) -> str:
    return str(uuid.uuid5(NAMESPACE, ",".join(event.id for event in events)))


async def send_batch(output: Output, events: list[Event]) -> list[object]:
    await output.start()
    try:
        return list(await output.send_batch(events))
    finally:
        await output.close()


def test_single_alert_requests_stay_default(webhook_receiver: WebhookReceiver) -> None:
    output = make_output(hook_config(webhook_receiver, batch=None))

    assert output.max_batch == 1


def test_batch_sets_max_batch(webhook_receiver: WebhookReceiver) -> None:
    output = make_output(hook_config(webhook_receiver, "{max_alerts: 250}"))

    assert output.max_batch == 250


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("{max_alerts: 0}", "batch.max_alerts: Input should be greater than or equal to 1"),
        ("{max_alerts: 1001}", "batch.max_alerts: Input should be less than or equal to 1000"),
        ("{format: xml}", "batch.format: Input should be 'json_array' or 'json_lines'"),
        ("{size: 3}", "batch.size: unknown key"),
    ],
)
def test_invalid_batch_setting_rejected(webhook_receiver: WebhookReceiver, batch: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_output(hook_config(webhook_receiver, batch))


async def test_json_array_body_and_headers(webhook_receiver: WebhookReceiver) -> None:
    events = alerts(3)

    results = await send_batch(make_output(hook_config(webhook_receiver)), events)

    assert results == [None, None, None]
    (request,) = webhook_receiver.requests
    assert request.body == b"[" + b",".join(e.to_json() for e in events) + b"]"
    assert [alert["uuid"] for alert in orjson.loads(request.body)] == [e.id for e in events]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Event-Id"] == expected_batch_id(events)
    assert request.headers["X-Event-Count"] == "3"


async def test_json_lines_body(webhook_receiver: WebhookReceiver) -> None:
    events = alerts(4)

    results = await send_batch(make_output(hook_config(webhook_receiver, "{format: json_lines}")), events)

    assert results == [None] * 4
    (request,) = webhook_receiver.requests
    assert request.body.endswith(b"\n")
    assert request.body.split(b"\n")[:-1] == [e.to_json() for e in events]
    assert request.headers["Content-Type"] == "application/x-ndjson"


async def test_batch_signature_covers_whole_body(
    webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCO_ROUTER_TEST_HOOK_KEY", "s1gning")
    body = hook_config(webhook_receiver) + "\n    signing_key: {env: FALCO_ROUTER_TEST_HOOK_KEY}"

    await send_batch(make_output(body), alerts(5))

    (request,) = webhook_receiver.requests
    signed = request.headers["X-Falco-Router-Timestamp"].encode() + b"." + request.body
    expected = "sha256=" + hmac.new(b"s1gning", signed, hashlib.sha256).hexdigest()
    assert request.headers["X-Falco-Router-Signature"] == expected


async def test_failed_request_fails_every_alert(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.answer_next(503)

    results = await send_batch(make_output(hook_config(webhook_receiver)), alerts(3))

    assert [type(r) for r in results] == [RetriableError] * 3
    assert {getattr(r, "reason", None) for r in results} == {"http_503"}


async def test_rejected_batch_is_permanent(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.answer_next(413)

    results = await send_batch(make_output(hook_config(webhook_receiver)), alerts(2))

    assert [type(r) for r in results] == [PermanentError] * 2


async def test_send_wraps_alert_in_batch(webhook_receiver: WebhookReceiver) -> None:
    output = make_output(hook_config(webhook_receiver))
    (alert,) = alerts(1)
    await output.start()
    try:
        await output.send(alert)
    finally:
        await output.close()

    (request,) = webhook_receiver.requests
    assert request.body == b"[" + alert.to_json() + b"]"
    assert request.headers["X-Event-Count"] == "1"


async def test_router_retries_batch_whole(webhook_receiver: WebhookReceiver) -> None:
    config = f"""
ingest:
  http:
    listen: 127.0.0.1:{free_port()}
outputs:
  hook:
    type: webhook
    url: {webhook_receiver.url}
    batch: {{max_alerts: 50}}
    retry: {{initial_backoff_s: 0.05, max_backoff_s: 0.2, max_attempts: 10}}
routes:
  - name: everything
    internal: include
    outputs: [hook]
"""
    app = RouterApp(parse_config(config, "test.yaml"))
    webhook_receiver.fail_until_recovered(503)
    await app.start()
    events = alerts(30)
    try:
        await app.pipeline.accept(events)
        await wait_until(lambda: len(webhook_receiver.requests) >= 2)
        webhook_receiver.recover()
        await wait_until(lambda: app.metrics.sample("output_delivered_total", output="hook") >= len(events))
    finally:
        await app.shutdown(grace_s=2)

    delivered = [alert["uuid"] for request in webhook_receiver.delivered for alert in json.loads(request.body)]
    assert delivered == [e.id for e in events]
    failed_ids = [r.headers["X-Event-Id"] for r in webhook_receiver.requests if r not in webhook_receiver.delivered]
    first_delivered = webhook_receiver.delivered[0]
    assert failed_ids[0] == first_delivered.headers["X-Event-Id"]
    assert all(r.body == first_delivered.body for r in webhook_receiver.requests[: len(failed_ids)])
