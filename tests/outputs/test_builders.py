"""The pure payload builders of the Kafka, Slack and webhook outputs, checked against whole expected values."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from router.event import Event, parse_alert
from router.outputs.kafka_record import KafkaRecord, build_record
from router.outputs.slack_message import (
    FIELD_TEXT_MAX,
    SlackOptions,
    build_message,
    escape,
    truncate_escaped,
)
from router.outputs.webhook_request import WebhookRequest, build_request
from tests.support.data import cases


def alert(**changes: object) -> Event:
    document: dict[str, object] = {
        "hostname": "host-a",
        "output": "22:13:20.000000000: Warning shell (user=root)",
        "priority": "Warning",
        "rule": "Terminal shell in container",
        "source": "syscall",
        "tags": ["container", "shell"],
        "time": "2023-11-14T22:13:20.000000000Z",
        "output_fields": {"proc.tty": 34816, "user.name": "root", "k8s.ns.name": None, "fd.nameraw": True},
    }
    document.update(changes)
    event = parse_alert(document)
    event.id = "11111111-2222-3333-4444-555555555555"
    return event


def test_kafka_record_whole_value() -> None:
    event = alert()

    assert build_record(event, "hostname") == KafkaRecord(
        key=b"host-a",
        value=event.to_json(),
        headers=[
            ("rule", b"Terminal shell in container"),
            ("priority", b"Warning"),
            ("source", b"syscall"),
            ("falco-router-id", b"11111111-2222-3333-4444-555555555555"),
        ],
    )


def test_kafka_key_absent_field_gives_no_key() -> None:
    assert build_record(alert(), "k8s.pod.name").key is None


def test_kafka_key_null_field_gives_no_key() -> None:
    assert build_record(alert(), "k8s.ns.name").key is None


def test_kafka_key_int_field_as_json() -> None:
    assert build_record(alert(), "proc.tty").key == b"34816"


def test_kafka_no_key_field_gives_no_key() -> None:
    assert build_record(alert(), None).key is None


def test_kafka_record_without_source_has_no_source_header() -> None:
    document = dict(cases("C13")[0]["event"])
    del document["source"]
    names = [name for name, _ in build_record(parse_alert(document), "hostname").headers]

    assert names == ["rule", "priority", "falco-router-id"]


def field_texts(message: dict) -> list[dict]:
    """Return the field entries of every section of a Slack message, in order."""
    blocks = message["attachments"][0]["blocks"]
    return [field for block in blocks for field in block.get("fields", [])]


def test_slack_message_whole_value() -> None:
    message = build_message(alert(), SlackOptions(channel="#alerts", mention="<!here>"))

    assert message == {
        "channel": "#alerts",
        "text": "<!here> Warning: Terminal shell in container on host-a",
        "attachments": [
            {
                "color": "#f2c744",
                "blocks": [
                    {
                        "type": "section",
                        "text": {"type": "mrkdwn", "text": "<!here> *Warning* · `Terminal shell in container`"},
                    },
                    {
                        "type": "section",
                        "text": {"type": "mrkdwn", "text": "```22:13:20.000000000: Warning shell (user=root)```"},
                    },
                    {
                        "type": "section",
                        "fields": [
                            {"type": "mrkdwn", "text": "*proc.tty*\n`34816`"},
                            {"type": "mrkdwn", "text": "*user.name*\n`root`"},
                            {"type": "mrkdwn", "text": "*k8s.ns.name*\n`&lt;NA&gt;`"},
                            {"type": "mrkdwn", "text": "*fd.nameraw*\n`true`"},
                        ],
                    },
                    {
                        "type": "context",
                        "elements": [
                            {
                                "type": "mrkdwn",
                                "text": "host `host-a` · source `syscall` · tags `container, shell` "
                                "· time `2023-11-14T22:13:20.000000000Z` · id `11111111-2222-3333-4444-555555555555`",
                            }
                        ],
                    },
                ],
            }
        ],
    }


def test_slack_k8s_enrichment_shown_as_readable_rows() -> None:
    event = alert()
    event.enrichment["k8s"] = {
        "status": "hit",
        "namespace": "shop",
        "pod": "web-7f9c",
        "owner": {"kind": "Deployment", "name": "web"},
        "node": "node-1",
        "image": "registry.example/web:1.2",
        "labels": {"app": "<x>", "team": "payments"},
        "pod_deleted": False,
    }

    fields = field_texts(build_message(event, SlackOptions()))

    assert [f["text"] for f in fields[-5:]] == [
        "*k8s.pod*\n`shop/web-7f9c`",
        "*k8s.owner*\n`Deployment/web`",
        "*k8s.node*\n`node-1`",
        "*k8s.image*\n`registry.example/web:1.2`",
        "*k8s.labels*\n`app=&lt;x&gt;, team=payments`",
    ]


def test_slack_k8s_deleted_pod_says_so() -> None:
    event = alert()
    event.enrichment["k8s"] = {"status": "deleted", "namespace": "ns-batch", "pod": "job-a", "pod_deleted": True}

    fields = field_texts(build_message(event, SlackOptions()))

    assert fields[-1]["text"] == "*k8s.status*\n`deleted`"


def test_slack_other_enrichment_shown_as_json() -> None:
    event = alert()
    event.enrichment["cloud"] = {"region": "<eu>"}

    fields = field_texts(build_message(event, SlackOptions()))

    assert fields[-1]["text"] == '*enrichment.cloud*\n`{"region":"&lt;eu&gt;"}`'


def test_kafka_record_carries_k8s_headers() -> None:
    event = alert()
    event.enrichment["k8s"] = {"namespace": "shop", "pod": "web-7f9c", "owner": {"kind": "Deployment", "name": "web"}}

    headers = dict(build_record(event, "hostname").headers)

    assert headers["k8s.namespace"] == b"shop"
    assert headers["k8s.pod"] == b"web-7f9c"
    assert headers["k8s.owner"] == b"Deployment/web"


def test_slack_backtick_cannot_close_code_span() -> None:
    event = alert(output_fields={"proc.cmdline": "a` *bold* `b"})

    fields = field_texts(build_message(event, SlackOptions()))

    assert fields[0]["text"] == "*proc.cmdline*\n`a\u02cb *bold* \u02cbb`"


def test_slack_rule_with_markup_is_escaped() -> None:
    event = alert(rule="<!channel> rule")

    title = build_message(event, SlackOptions())["attachments"][0]["blocks"][0]["text"]["text"]

    assert title == "*Warning* · `&lt;!channel&gt; rule`"


def test_slack_unknown_priority_gets_grey_bar() -> None:
    message = build_message(alert(priority="Verbose"), SlackOptions())

    assert message["attachments"][0]["color"] == "#6b6b6b"


def test_slack_many_fields_stay_within_block_limit() -> None:
    fields = {f"field.{i}": "x" * 30 for i in range(700)}

    message = build_message(alert(output_fields=fields), SlackOptions())
    blocks = message["attachments"][0]["blocks"]
    shown = field_texts(message)
    marker = blocks[-2]["text"]["text"]
    texts = [b["text"]["text"] for b in blocks if "text" in b] + [f["text"] for f in shown]
    texts += [e["text"] for b in blocks for e in b.get("elements", [])]

    assert len(blocks) <= 50
    assert sum(map(len, texts)) <= 4000
    assert marker == f"…{700 - len(shown)} more fields not shown"
    assert all(not f["text"].endswith("``") for f in shown), "a shown value was cut to nothing"


def test_truncate_short_text_only_escapes() -> None:
    assert truncate_escaped("a<b>&c", 100) == "a&lt;b&gt;&amp;c"


def test_truncate_counts_dropped_characters() -> None:
    assert truncate_escaped("x" * 100, 40) == "x" * 18 + "…truncated (82 chars)"


def test_truncate_never_splits_an_entity() -> None:
    assert truncate_escaped("<" * 30, 40) == "&lt;" * 4 + "…truncated (26 chars)"


@given(st.text(max_size=3000), st.integers(min_value=30, max_value=2500))
def test_truncate_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    cut = truncate_escaped(text, limit)

    assert len(cut) <= limit
    kept = cut.split("…truncated (")[0] if cut != escape(text) else cut
    assert escape(text).startswith(kept)


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=5000), max_size=30))
def test_slack_message_within_text_limits(fields: dict[str, str]) -> None:
    blocks = build_message(alert(output_fields=fields), SlackOptions())["attachments"][0]["blocks"]

    texts = [f["text"] for b in blocks for f in b.get("fields", [])]
    texts += [b["text"]["text"] for b in blocks if "text" in b]
    texts += [e["text"] for b in blocks for e in b.get("elements", [])]
    assert sum(len(t) for t in texts) <= 4000
    assert all(len(t) <= FIELD_TEXT_MAX for t in texts)
    assert len(blocks) <= 50


@given(st.text(max_size=500))
def test_slack_never_sends_raw_angle_brackets_from_alert(value: str) -> None:
    message = build_message(alert(output_fields={"proc.cmdline": value}, rule=value or "r"), SlackOptions())

    assert "<" not in str(message)
    assert ">" not in str(message)


def test_webhook_request_whole_value() -> None:
    event = alert()

    assert build_request(event, {"X-Team": "sec"}) == WebhookRequest(
        body=event.to_json(),
        headers={
            "X-Team": "sec",
            "Content-Type": "application/json",
            "X-Event-Id": "11111111-2222-3333-4444-555555555555",
        },
    )


def test_webhook_signature_is_hmac_of_timestamp_and_body() -> None:
    event = alert()

    headers = build_request(event, {}, signing_key=b"k3y", now_s=1700000000).headers

    expected = hmac.new(b"k3y", b"1700000000." + event.to_json(), hashlib.sha256).hexdigest()
    assert headers["X-Falco-Router-Timestamp"] == "1700000000"
    assert headers["X-Falco-Router-Signature"] == f"sha256={expected}"
