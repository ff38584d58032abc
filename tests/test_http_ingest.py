"""HTTP ingest: falcosidekick's contract, bulk bodies, and every kind of bad input."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from router.app import RouterApp
from router.event import loads
from tests.support.collect import CollectingOutput
from tests.support.data import cases, corpus_lines
from tests.support.router import ONE_OUTPUT, base_url, running_router

GOOD = corpus_lines()[0].encode()


@pytest.fixture
async def collected() -> CollectingOutput:
    return CollectingOutput()


@pytest.fixture
async def app(collected: CollectingOutput) -> AsyncIterator[RouterApp]:
    async with running_router(ONE_OUTPUT, {"collect": collected}) as app:
        yield app


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, app: RouterApp, body: bytes | io.BytesIO, path: str = "/"
) -> tuple[int, str]:
    async with http.post(base_url(app) + path, data=body, headers={"Content-Type": "application/json"}) as answer:
        return answer.status, await answer.text()


async def test_alert_accepted_with_empty_body(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    status, text = await post(http, app, GOOD)
    assert status == 200
    assert text == ""
    delivered = await collected.wait_for(1)
    assert delivered[0].rule == loads(GOOD)["rule"]


async def test_every_corpus_alert_delivered_once(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    for line in corpus_lines():
        status, _ = await post(http, app, line.encode())
        assert status == 200
    delivered = await collected.wait_for(40)
    assert len(delivered) == 40
    assert [e.to_dict()["output_fields"] for e in delivered] == [
        loads(line).get("output_fields", {}) for line in corpus_lines()
    ]


async def test_any_path_accepted_like_falcosidekick(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    status, _ = await post(http, app, GOOD, path="/falco/events")
    assert status == 200
    await collected.wait_for(1)


async def test_json_array_accepted(app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput) -> None:
    body = b"[" + b",".join(line.encode() for line in corpus_lines()[:5]) + b"]"
    status, _ = await post(http, app, body)
    assert status == 200
    assert len(await collected.wait_for(5)) == 5


async def test_json_lines_accepted(app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput) -> None:
    body = "\n".join(corpus_lines()[:3]).encode() + b"\n"
    status, _ = await post(http, app, body)
    assert status == 200
    assert len(await collected.wait_for(3)) == 3


BAD_BODIES = [
    pytest.param(b"{not json", "body is not valid JSON", id="invalid-json"),
    pytest.param(b"", "body is empty", id="empty"),
    pytest.param(b"22:13:20.123: Warning text alert", "set json_output: true", id="text-output"),
    pytest.param(b'"hello"', "body is not a JSON object or array", id="json-string"),
    pytest.param(b'{"priority":"Warning","time":"2023-11-14T22:13:20Z"}', "rule is missing", id="missing-rule"),
    pytest.param(b'{"rule":"r","time":"2023-11-14T22:13:20Z"}', "priority is missing", id="missing-priority"),
    pytest.param(b'{"rule":"r","priority":"Warning"}', "time is missing", id="missing-time"),
    pytest.param(
        b'{"rule":["r"],"priority":"Warning","time":"2023-11-14T22:13:20Z"}', "rule is an array", id="wrong-type"
    ),
    pytest.param(
        b'{"rule":"r","priority":"Warning","time":"2023-11-14T22:13:20Z","output_fields":"x"}',
        "output_fields is a string",
        id="fields-type",
    ),
    pytest.param(b"[]", "empty JSON array", id="empty-array"),
    pytest.param(
        b'{"rule":"r","priority":"Warning","time":"2023-11-14T22:13:20Z"}\n{bad',
        "line 2 is not valid JSON",
        id="bad-json-line",
    ),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
async def test_bad_input_rejected_with_reason_and_counted(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput, body: bytes, reason: str
) -> None:
    status, text = await post(http, app, body)
    assert status == 400
    assert reason in text
    assert text.count("\n") == 1
    assert app.metrics.sample("alerts_rejected_total", transport="http", reason="invalid") == 1
    # The daemon keeps serving after the bad request.
    assert (await post(http, app, GOOD))[0] == 200
    await collected.wait_for(1)


async def test_bulk_with_one_bad_alert_queues_nothing(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    body = b"[" + GOOD + b',{"rule":"r"}]'
    status, _ = await post(http, app, body)
    assert status == 400
    assert (await post(http, app, GOOD))[0] == 200
    await collected.wait_for(1)
    assert len(collected.events) == 1


async def test_ten_megabyte_body_rejected_with_413(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    document = loads(GOOD)
    document["output_fields"]["proc.cmdline"] = "A" * 10_000_000
    status, text = await post(http, app, io.BytesIO(orjson.dumps(document)))
    assert status == 413
    assert "larger than 1048576 bytes" in text
    assert app.metrics.sample("alerts_rejected_total", transport="http", reason="too_large") == 1
    assert (await post(http, app, GOOD))[0] == 200
    await collected.wait_for(1)


async def test_invalid_utf8_repaired_flagged_and_counted(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    document = loads(GOOD)
    document["output_fields"]["fd.name"] = "PLACEHOLDER"
    body = orjson.dumps(document).replace(b"PLACEHOLDER", b"/tmp/\xff\xfe.txt")
    status, _ = await post(http, app, body)
    assert status == 200
    event = (await collected.wait_for(1))[0]
    assert event.output_fields["fd.name"] == "/tmp/\ufffd\ufffd.txt"
    assert "utf8_repaired" in event.flags
    assert app.metrics.sample("alerts_repaired_total", reason="invalid_utf8") == 1


async def test_unknown_priority_delivered_and_counted(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    verbose = next(r["event"] for r in cases("C03") if r["event"]["priority"] == "Verbose")
    assert (await post(http, app, orjson.dumps(verbose)))[0] == 200
    event = (await collected.wait_for(1))[0]
    assert event.priority_raw == "Verbose"
    assert app.metrics.sample("priority_unknown_total") == 1


async def test_null_fields_accepted(app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput) -> None:
    assert (await post(http, app, orjson.dumps(cases("C01")[0]["event"])))[0] == 200
    event = (await collected.wait_for(1))[0]
    assert loads(event.to_json())["output_fields"]["user.name"] is None


async def test_healthz_reports_ok(app: RouterApp, http: aiohttp.ClientSession) -> None:
    async with http.get(base_url(app) + "/healthz") as answer:
        assert answer.status == 200
        document = await answer.json()
    assert document["status"] == "ok"
    assert document["components"]["output.collect"]["status"] == "ok"


async def test_ping_answers_pong(app: RouterApp, http: aiohttp.ClientSession) -> None:
    async with http.get(base_url(app) + "/ping") as answer:
        assert await answer.text() == "pong\n"


async def test_metrics_count_received_and_delivered(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    await post(http, app, GOOD)
    await collected.wait_for(1)
    async with http.get(base_url(app) + "/metrics") as answer:
        text = await answer.text()
    assert 'falco_router_alerts_received_total{transport="http"} 1.0' in text
    assert 'falco_router_output_delivered_total{output="collect"} 1.0' in text


async def test_test_endpoint_sends_synthetic_alert(
    app: RouterApp, http: aiohttp.ClientSession, collected: CollectingOutput
) -> None:
    async with http.post(base_url(app) + "/test") as answer:
        assert answer.status == 200
    event = (await collected.wait_for(1))[0]
    assert event.rule == "Test rule"


async def test_shutdown_answers_503_and_readyz_fails(app: RouterApp, http: aiohttp.ClientSession) -> None:
    app.pipeline.accepting = False
    app.health.accepting = False
    with capture_logs() as logs:
        status, text = await post(http, app, GOOD)
        assert (await post(http, app, GOOD))[0] == 503
    assert status == 503
    assert "shutting down" in text
    refused = [entry for entry in logs if entry["event"] == "ingest_refused"]
    assert len(refused) == 1, "repeated refusals are logged once per interval"
    assert refused[0]["log_level"] == "error"
    async with http.get(base_url(app) + "/readyz") as answer:
        assert answer.status == 503


async def test_rejected_alert_logged_at_debug_without_body(app: RouterApp, http: aiohttp.ClientSession) -> None:
    with capture_logs() as logs:
        await post(http, app, b'{"rule":"<!channel>","priority":"Warning"}')
    rejected = [entry for entry in logs if entry["event"] == "alert_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["log_level"] == "debug"
    assert rejected[0]["reason"] == "invalid"


async def test_test_alert_reaches_output_outside_routes(http: aiohttp.ClientSession) -> None:
    config = ONE_OUTPUT.replace("    outputs: [collect]", "    min_priority: critical\n    outputs: [collect]")
    collected = CollectingOutput()
    async with running_router(config, {"collect": collected}) as app:
        async with http.post(base_url(app) + "/test") as answer:
            assert answer.status == 200
        event = (await collected.wait_for(1))[0]
    assert event.priority_name == "Debug"
    assert loads(event.to_json())["router"]["test"] is True


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/ping", "/metrics", "/healthz/", "/Metrics"])
async def test_post_to_service_path_rejected(app: RouterApp, http: aiohttp.ClientSession, path: str) -> None:
    status, text = await post(http, app, GOOD, path=path)
    assert status == 405
    assert "post alerts to /" in text
    assert app.metrics.sample("alerts_rejected_total", transport="http", reason="wrong_path") == 1
