"""How each output classifies the responses of its peer: delivered, retriable or permanent, with the reason."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from aiokafka.codec import has_zstd
from aiokafka.errors import InvalidTopicError, UnknownError

from router.config import parse_config
from router.event import Event, parse_alert
from router.outputs import create_output
from router.outputs.base import Output, OutputStartError, PermanentError, RetriableError
from router.outputs.kafka import delivery_error as kafka_delivery_error
from tests.support.data import cases, free_port
from tests.support.slack_server import Fault, SlackServer
from tests.support.tansu import TansuBroker
from tests.support.webhook_receiver import WebhookReceiver


def make_output(name: str, body: str) -> Output:
    config = parse_config(f"outputs:\n  {name}:\n{body}\nroutes: [{{name: all, outputs: [{name}]}}]\n", "test.yaml")
    return create_output(name, config.outputs[name])


def event(case: str = "C13") -> Event:
    return parse_alert(cases(case)[0]["event"])


@pytest.fixture
def slack_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALCO_ROUTER_TEST_SLACK_TOKEN", "xoxb-test")


async def slack_api_output(server: SlackServer) -> Output:
    output = make_output(
        "pager",
        f"""    type: slack
    token: {{env: FALCO_ROUTER_TEST_SLACK_TOKEN}}
    channel: "#alerts"
    base_url: {server.api_url}""",
    )
    await output.start()
    return output


@pytest.mark.parametrize(
    ("fault", "error_type", "reason"),
    [
        (Fault(200, "invalid_blocks"), PermanentError, "invalid_blocks"),
        (Fault(200, "channel_not_found"), PermanentError, "channel_not_found"),
        (Fault(200, "msg_too_long"), PermanentError, "msg_too_long"),
        (Fault(503), RetriableError, "server_error"),
        (Fault(429, retry_after_s=7), RetriableError, "rate_limited"),
    ],
)
async def test_slack_api_error_classified(
    slack_server: SlackServer, slack_token: None, fault: Fault, error_type: type[Exception], reason: str
) -> None:
    output = await slack_api_output(slack_server)
    slack_server.fail_next(fault)
    try:
        with pytest.raises(error_type) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert getattr(raised.value, "reason", None) == reason


async def test_slack_429_carries_retry_after(slack_server: SlackServer, slack_token: None) -> None:
    output = await slack_api_output(slack_server)
    slack_server.fail_next(Fault(429, retry_after_s=7))
    try:
        with pytest.raises(RetriableError) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert raised.value.retry_after_s == 7


async def test_slack_wrong_token_is_permanent(slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALCO_ROUTER_TEST_SLACK_TOKEN", "xoxb-wrong")
    output = await slack_api_output(slack_server)
    try:
        with pytest.raises(PermanentError, match="invalid_auth"):
            await output.send(event())
    finally:
        await output.close()


async def test_slack_unreachable_is_retriable(slack_token: None) -> None:
    server = SlackServer()  # never started, so nothing listens on its port
    output = await slack_api_output(server)
    try:
        with pytest.raises(RetriableError) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert raised.value.reason == "connection_failed"


async def test_slack_incoming_webhook_posts(slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALCO_ROUTER_TEST_SLACK_WEBHOOK", slack_server.webhook_url)
    output = make_output("pager", "    type: slack\n    webhook_url: {env: FALCO_ROUTER_TEST_SLACK_WEBHOOK}")
    await output.start()
    try:
        await output.send(event("C14"))
    finally:
        await output.close()

    (posted,) = slack_server.posted
    assert "channel" not in posted
    assert "&lt;!channel&gt;" in str(posted)


async def test_slack_incoming_webhook_error_is_permanent(
    slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCO_ROUTER_TEST_SLACK_WEBHOOK", slack_server.webhook_url)
    output = make_output("pager", "    type: slack\n    webhook_url: {env: FALCO_ROUTER_TEST_SLACK_WEBHOOK}")
    await output.start()
    slack_server.fail_next(Fault(400, "invalid_blocks"))
    try:
        with pytest.raises(PermanentError) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert raised.value.reason == "invalid_blocks"


async def webhook_output(receiver: WebhookReceiver, extra: str = "") -> Output:
    output = make_output("hook", f"    type: webhook\n    url: {receiver.url}\n    timeout_s: 2{extra}")
    await output.start()
    return output


@pytest.mark.parametrize(
    ("status", "error_type", "reason"),
    [
        (408, RetriableError, "http_408"),
        (429, RetriableError, "http_429"),
        (500, RetriableError, "http_500"),
        (503, RetriableError, "http_503"),
        (400, PermanentError, "http_400"),
        (404, PermanentError, "http_404"),
        (301, PermanentError, "redirect"),
        (307, PermanentError, "redirect"),
        (308, PermanentError, "redirect"),
    ],
)
async def test_webhook_status_classified(
    webhook_receiver: WebhookReceiver, status: int, error_type: type[Exception], reason: str
) -> None:
    output = await webhook_output(webhook_receiver)
    webhook_receiver.answer_next(status, headers={"Location": "http://127.0.0.1:9/x"} if 300 <= status < 400 else None)
    try:
        with pytest.raises(error_type) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert getattr(raised.value, "reason", None) == reason


async def test_webhook_429_carries_retry_after(webhook_receiver: WebhookReceiver) -> None:
    output = await webhook_output(webhook_receiver)
    webhook_receiver.answer_next(429, headers={"Retry-After": "12"})
    try:
        with pytest.raises(RetriableError) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert raised.value.retry_after_s == 12


async def test_webhook_redirect_names_location(webhook_receiver: WebhookReceiver) -> None:
    output = await webhook_output(webhook_receiver)
    webhook_receiver.answer_next(302, headers={"Location": "http://127.0.0.1:9/moved"})
    try:
        with pytest.raises(PermanentError, match=re.escape("http://127.0.0.1:9/moved")):
            await output.send(event())
    finally:
        await output.close()


async def test_webhook_sends_secret_headers_and_signature(
    webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCO_ROUTER_TEST_HOOK_AUTH", "Bearer t0ken")
    monkeypatch.setenv("FALCO_ROUTER_TEST_HOOK_KEY", "s1gning")
    output = await webhook_output(
        webhook_receiver,
        "\n    headers: {X-Team: sec}"
        "\n    secret_headers: {Authorization: {env: FALCO_ROUTER_TEST_HOOK_AUTH}}"
        "\n    signing_key: {env: FALCO_ROUTER_TEST_HOOK_KEY}",
    )
    alert = event()
    try:
        await output.send(alert)
    finally:
        await output.close()

    (request,) = webhook_receiver.requests
    signed = request.headers["X-Falco-Router-Timestamp"].encode() + b"." + request.body
    expected = "sha256=" + hmac.new(b"s1gning", signed, hashlib.sha256).hexdigest()
    assert request.headers["X-Falco-Router-Signature"] == expected
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.headers["X-Team"] == "sec"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Event-Id"] == alert.id
    assert request.body == alert.to_json()


async def test_webhook_unreachable_is_retriable() -> None:
    output = make_output("hook", f"    type: webhook\n    url: http://127.0.0.1:{free_port()}/hook")
    await output.start()
    try:
        with pytest.raises(RetriableError) as raised:
            await output.send(event())
    finally:
        await output.close()

    assert raised.value.reason == "connection_failed"


async def test_webhook_missing_secret_header_fails_start() -> None:
    output = make_output(
        "hook",
        "    type: webhook\n    url: http://127.0.0.1:9/\n"
        "    secret_headers: {Authorization: {env: FALCO_ROUTER_UNSET_X}}",
    )
    with pytest.raises(OutputStartError, match="secret header Authorization unavailable"):
        await output.start()


def kafka_output(broker: TansuBroker, topic: str, timeout_s: float = 2.0) -> Output:
    return make_output(
        "audit",
        f"""    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: {topic}
    enable_idempotence: false
    request_timeout_s: {timeout_s}
    close_timeout_s: 1""",
    )


async def test_kafka_dead_broker_fails_batch_and_closes(tansu: TansuBroker) -> None:
    await tansu.create_topic("outage")
    output = kafka_output(tansu, "outage")
    await output.start()
    await tansu.stop()

    results = await output.send_batch([event(), event()])
    await output.close()

    assert [type(r) for r in results] == [RetriableError, RetriableError]


async def test_kafka_batch_keeps_order_of_one_key(tansu: TansuBroker) -> None:
    await tansu.create_topic("ordered", partitions=3)
    output = kafka_output(tansu, "ordered", timeout_s=5)
    await output.start()
    alerts = []
    for index in range(50):
        alert = event()
        alert.output_fields = {**alert.output_fields, "seq": index}
        alerts.append(alert)
    try:
        results = await output.send_batch(alerts)
    finally:
        await output.close()

    assert results == [None] * 50
    messages = await tansu.consume_all("ordered", 50)
    assert [m.value for m in messages] == [a.to_json() for a in alerts]


async def test_kafka_message_too_large_is_permanent(tansu: TansuBroker) -> None:
    await tansu.create_topic("small")
    output = make_output(
        "audit",
        f"""    type: kafka
    brokers: ["{tansu.bootstrap}"]
    topic: small
    enable_idempotence: false
    max_message_bytes: 1024""",
    )
    await output.start()
    try:
        results = await output.send_batch([event("C06")])
    finally:
        await output.close()

    assert isinstance(results[0], PermanentError)
    assert results[0].reason == "message_too_large"


async def test_kafka_gzip_round_trip(tansu: TansuBroker) -> None:
    await tansu.create_topic("packed")
    output = make_output(
        "audit",
        f"""    type: kafka
    brokers: ["{tansu.bootstrap}"]
    topic: packed
    enable_idempotence: false
    compression: gzip""",
    )
    await output.start()
    alert = event("C05")
    try:
        results = await output.send_batch([alert])
    finally:
        await output.close()

    assert results == [None]
    (message,) = await tansu.consume_all("packed", 1)
    assert message.value == alert.to_json()


@pytest.mark.skipif(has_zstd(), reason="the zstd codec is installed here")
async def test_kafka_missing_codec_fails_start() -> None:
    output = make_output("audit", '    type: kafka\n    brokers: ["127.0.0.1:9"]\n    topic: t\n    compression: zstd')

    with pytest.raises(OutputStartError, match="compression zstd needs a codec library"):
        await output.start()


def test_kafka_unknown_server_error_is_retried() -> None:
    # Brokers answer UNKNOWN_SERVER_ERROR while they restart; dead-lettering on it lost alerts in an outage.
    error = kafka_delivery_error(UnknownError())
    assert error.retriable
    assert error.reason == "broker_unavailable"


def test_kafka_invalid_topic_is_permanent() -> None:
    error = kafka_delivery_error(InvalidTopicError())
    assert not error.retriable
    assert error.reason == "rejected"
