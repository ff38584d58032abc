"""Case C07 end to end: one kubectl exec, two alerts, one Slack message updated with the count.

The router runs with the dedup key (rule, hostname, container.id) and a 10 s window. Stopping the router
closes the open window, which sends the group's update, so the test does not wait for the window.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import orjson
import pytest

from router.app import RouterApp
from router.config import parse_config
from tests.support.data import cases, free_port
from tests.support.slack_server import WEBHOOK_PATH, SlackServer
from tests.support.tansu import TansuBroker

POLICY = """
dedup:
  - name: one-action
    key: [rule, hostname, container.id]
    window_s: 10
    distinct: [proc.cmdline]
"""


def config_text(tmp_path: Path, broker: TansuBroker, slack: SlackServer, slack_mode: str) -> str:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    if slack_mode == "web_api":
        slack_settings = f"token: {{env: C07_SLACK_TOKEN}}\n    channel: C0C07\n    base_url: {slack.api_url}"
    else:
        slack_settings = "webhook_url: {env: C07_SLACK_WEBHOOK}"
    return f"""
ingest:
  http:
    listen: 127.0.0.1:{free_port()}
outputs:
  siem:
    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: c07
    enable_idempotence: false  # the Tansu broker cannot start an idempotent producer
  soc:
    type: slack
    {slack_settings}
routes:
  - name: everything
    outputs: [siem, soc]
policy:
  files: [{policy}]
"""


async def run_c07(tmp_path: Path, tansu: TansuBroker, slack: SlackServer, slack_mode: str) -> list[dict]:
    await tansu.create_topic("c07")
    app = RouterApp(parse_config(config_text(tmp_path, tansu, slack, slack_mode), "c07.yaml"))
    await app.start()
    try:
        assert app.http is not None
        async with aiohttp.ClientSession() as http:
            for row in cases("C07"):
                async with http.post(f"http://127.0.0.1:{app.http.port}/", data=orjson.dumps(row["event"])) as answer:
                    assert answer.status == 200
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=10)
    return [json.loads(m.value) for m in await tansu.consume_all("c07", 2)]


@pytest.fixture
def slack_env(monkeypatch: pytest.MonkeyPatch, slack_server: SlackServer) -> None:
    monkeypatch.setenv("C07_SLACK_TOKEN", "xoxb-test")
    monkeypatch.setenv("C07_SLACK_WEBHOOK", slack_server.webhook_url)


@pytest.mark.usefixtures("slack_env")
async def test_c07_one_slack_message_updated_with_count(
    tmp_path: Path, tansu: TansuBroker, slack_server: SlackServer
) -> None:
    kafka = await run_c07(tmp_path, tansu, slack_server, "web_api")

    assert len(slack_server.posted) == 1
    assert len(slack_server.updates) == 1
    shown = json.dumps(slack_server.posted[0])
    assert "Repeated 2 times" in shown
    assert "sh -c command -v bash &gt;/dev/null &amp;&amp; exec bash || exec sh" in shown
    assert "`sh`" in shown
    # Kafka, the audit trail, keeps both raw alerts with the group id and running count.
    assert [a["output_fields"]["proc.cmdline"] for a in kafka] == [
        row["event"]["output_fields"]["proc.cmdline"] for row in cases("C07")
    ]
    assert [a["router"]["dedup"]["count"] for a in kafka] == [1, 2]
    assert kafka[0]["router"]["dedup"]["id"] == kafka[1]["router"]["dedup"]["id"] == kafka[0]["uuid"]


@pytest.mark.usefixtures("slack_env")
async def test_c07_incoming_webhook_posts_update_as_new_message(
    tmp_path: Path, tansu: TansuBroker, slack_server: SlackServer
) -> None:
    await run_c07(tmp_path, tansu, slack_server, "webhook")

    webhook_posts = [json.loads(r.body) for r in slack_server.requests if r.path == WEBHOOK_PATH]
    assert len(webhook_posts) == 2
    assert "Repeated 2 times" not in json.dumps(webhook_posts[0])
    assert "Repeated 2 times" in json.dumps(webhook_posts[1])
