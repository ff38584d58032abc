"""The gRPC ingest against a Falco stand-in (a real gRPC server) inside a running RouterApp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import router.sources.grpc
from router.app import RouterApp
from router.config import parse_config
from router.event import Event, loads, parse_alert
from router.outputs.base import Output
from router.sources.grpc import BATCH_MAX_ALERTS
from router.sources.grpc_convert import typed_value
from tests.support.data import corpus_lines
from tests.support.falco_grpc import FalcoStandIn, TlsFiles, make_tls_files, response_from_alert, stringify

# A guard against a hung test, not a measurement: every wait ends as soon as its condition holds.
WAIT_LIMIT_S = 30.0


class CaptureOutput(Output):
    """An output that keeps every alert it is given, blocking while ``gate`` is clear."""

    type_name = "capture"

    def __init__(self, name: str = "capture") -> None:
        super().__init__(name, None)
        self.events: list[Event] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, event: Event) -> None:
        await self.gate.wait()
        self.events.append(event)


async def wait_until(condition: Callable[[], bool]) -> None:
    # Polling, because the conditions read metrics, health and the stand-in, which signal no event.
    async with asyncio.timeout(WAIT_LIMIT_S):
        while not condition():
            await asyncio.sleep(0.02)


def router_yaml(address: str, *, method: str = "sub", tls: str = "", extra: str = "", queue: str = "") -> str:
    return f"""
ingest:
  http:
    enabled: false
  grpc:
    enabled: true
    address: "{address}"
    method: {method}
    poll_interval_s: 0.02
    reconnect_initial_s: 1
    reconnect_max_s: 2
    connect_timeout_s: 5
{extra}{tls}
outputs:
  capture:
    type: stdout
{queue}
routes:
  - name: everything
    internal: include  # Falco's own health alerts too
    outputs: [capture]
"""


def tls_yaml(ca: Path, cert: Path, key: Path) -> str:
    return f"""    tls:
      ca_file: "{ca}"
      cert_file: "{cert}"
      key_file: "{key}"
"""


@pytest.fixture
async def falco() -> AsyncIterator[FalcoStandIn]:
    stand_in = FalcoStandIn()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "falco.sock"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


async def start_router(yaml_text: str) -> tuple[RouterApp, CaptureOutput]:
    capture = CaptureOutput()
    app = RouterApp(parse_config(yaml_text, "test.yaml"), overrides={"capture": capture})
    await app.start()
    return app, capture


def corpus_responses(count: int | None = None) -> list[Any]:
    lines = corpus_lines()
    return [response_from_alert(loads(line)) for line in (lines if count is None else lines[:count])]


def grpc_component(app: RouterApp) -> Any:
    return app.health.get("ingest.grpc")


def log_events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_corpus_arrives_with_http_types(falco: FalcoStandIn, socket_path: Path) -> None:
    lines = corpus_lines()
    falco.enqueue(corpus_responses())
    address = await falco.start_unix(socket_path)
    app, capture = await start_router(router_yaml(address))
    try:
        await wait_until(lambda: len(capture.events) == len(lines))
    finally:
        await app.shutdown(grace_s=5)

    assert app.metrics.sample("alerts_received_total", transport="grpc") == len(lines)
    for line, received in zip(lines, capture.events, strict=True):
        http = parse_alert(loads(line))
        assert received.transport == "grpc"
        assert (received.rule, received.priority, received.time_raw) == (http.rule, http.priority, http.time_raw)
        assert (received.hostname, received.tags, received.source) == (http.hostname, http.tags, http.source)
        assert received.output == http.output
        assert sorted(received.output_fields) == sorted(http.output_fields)
        for key, value in http.output_fields.items():
            got = received.output_fields[key]
            if isinstance(value, str) and typed_value(value) != value:
                # A string that reads as a number, boolean or null: the map cannot keep its type.
                assert stringify(got) == value, key
            else:
                assert (got, type(got)) == (value, type(value)), key


async def test_sub_polls_for_alerts_queued_later(falco: FalcoStandIn, socket_path: Path) -> None:
    address = await falco.start_unix(socket_path)
    app, capture = await start_router(router_yaml(address))
    try:
        await wait_until(lambda: app.metrics.sample("ingest_connected", transport="grpc") == 1)
        falco.enqueue(corpus_responses(5))
        await wait_until(lambda: len(capture.events) == 5)
    finally:
        await app.shutdown(grace_s=5)
    # Falco drains a sub stream only after a client message, so the alerts queued after connecting
    # arrive only because the router kept sending requests on the stream.
    assert falco.sub_requests > 1


async def test_get_mode_drains_backlog_and_later_alerts(falco: FalcoStandIn, socket_path: Path) -> None:
    falco.enqueue(corpus_responses(10))
    address = await falco.start_unix(socket_path)
    app, capture = await start_router(router_yaml(address, method="get"))
    try:
        await wait_until(lambda: len(capture.events) == 10)
        falco.enqueue(corpus_responses(3))
        await wait_until(lambda: len(capture.events) == 13)
    finally:
        await app.shutdown(grace_s=5)
    assert falco.get_calls > 1
    assert falco.sub_requests == 0


async def test_shutdown_delivers_lingering_batch(
    falco: FalcoStandIn, socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A linger longer than the test, so the alerts read are still in the batch at shutdown. Falco
    # has removed them from its queue, so shutdown must hand them to the pipeline and deliver them.
    monkeypatch.setattr(router.sources.grpc, "BATCH_LINGER_S", 3600.0)
    falco.enqueue(corpus_responses(3))
    address = await falco.start_unix(socket_path)
    app, capture = await start_router(router_yaml(address))
    try:
        await wait_until(lambda: not falco.queue)
        await asyncio.sleep(0.2)  # lets the router read the three responses from the stream
        delivered_before_shutdown = len(capture.events)
    finally:
        await app.shutdown(grace_s=5)
    assert delivered_before_shutdown == 0
    assert [e.rule for e in capture.events] == [loads(line)["rule"] for line in corpus_lines()[:3]]
    assert app.metrics.sample("alerts_received_total", transport="grpc") == 3


async def test_restart_gap_reconnects_and_delivers(falco: FalcoStandIn, socket_path: Path) -> None:
    batch = corpus_responses()
    before = [batch[i % len(batch)] for i in range(100)]
    after = [batch[i % len(batch)] for i in range(100)]
    with capture_logs() as logs:
        falco.enqueue(before)
        address = await falco.start_unix(socket_path)
        app, capture = await start_router(router_yaml(address))
        try:
            await wait_until(lambda: len(capture.events) == 100)
            reconnects_before_gap = app.metrics.sample("ingest_reconnects_total", transport="grpc")

            await falco.stop()
            await wait_until(lambda: grpc_component(app).status == "degraded")
            health_in_gap = app.health.to_dict()
            connected_in_gap = app.metrics.sample("ingest_connected", transport="grpc")
            falco.enqueue(after)
            # At least two failed attempts, so the gap spans several reconnection delays.
            await wait_until(
                lambda: app.metrics.sample("ingest_reconnects_total", transport="grpc") >= reconnects_before_gap + 2
            )

            await falco.start_unix(socket_path)
            await wait_until(lambda: len(capture.events) == 200)
            router_stopped = app.stopped.is_set()
            status_after = grpc_component(app).status
            connected_after = app.metrics.sample("ingest_connected", transport="grpc")
        finally:
            await app.shutdown(grace_s=5)

    assert reconnects_before_gap == 0
    assert health_in_gap["status"] == "degraded"
    gap = health_in_gap["components"]["ingest.grpc"]
    assert gap["reason"] in {"stream_closed", "socket_missing", "unavailable"}, gap
    assert connected_in_gap == 0
    assert not router_stopped
    assert status_after == "ok"
    assert connected_after == 1
    assert len(log_events(logs, "ingest_disconnected")) == 1
    assert len(log_events(logs, "ingest_connected")) == 2
    assert log_events(logs, "falco_grpc_unavailable") == []
    assert [e.rule for e in capture.events[100:]] == [m.rule for m in after]


async def test_mutual_tls_delivers_alerts(falco: FalcoStandIn, tls_files: TlsFiles) -> None:
    falco.enqueue(corpus_responses(5))
    port = await falco.start_tls(tls_files)
    tls = tls_yaml(tls_files.ca, tls_files.client_cert, tls_files.client_key)
    app, capture = await start_router(router_yaml(f"127.0.0.1:{port}", tls=tls))
    try:
        await wait_until(lambda: len(capture.events) == 5)
    finally:
        await app.shutdown(grace_s=5)
    assert [e.transport for e in capture.events] == ["grpc"] * 5


async def test_untrusted_client_certificate_is_rejected(
    falco: FalcoStandIn, tls_files: TlsFiles, tmp_path: Path
) -> None:
    rogue = make_tls_files(tmp_path)  # a client certificate from a CA the stand-in does not trust
    falco.enqueue(corpus_responses(5))
    port = await falco.start_tls(tls_files)
    tls = tls_yaml(tls_files.ca, rogue.client_cert, rogue.client_key)
    with capture_logs() as logs:
        app, capture = await start_router(router_yaml(f"127.0.0.1:{port}", tls=tls))
        try:
            await wait_until(lambda: bool(log_events(logs, "ingest_disconnected")))
            component = grpc_component(app)
        finally:
            await app.shutdown(grace_s=5)
    assert component.status == "degraded"
    assert component.reason == "tls_failed", component.details
    assert log_events(logs, "ingest_disconnected")[0]["reason"] == "tls_failed"
    assert capture.events == []
    assert len(falco.queue) == 5


async def test_server_without_falco_api_logs_one_error(socket_path: Path) -> None:
    # A gRPC server without Falco's services returns UNIMPLEMENTED, like any address that is not Falco.
    other = FalcoStandIn(serve_outputs=False)
    address = await other.start_unix(socket_path)
    with capture_logs() as logs:
        app, _capture = await start_router(router_yaml(address))
        try:
            await wait_until(lambda: app.metrics.sample("ingest_reconnects_total", transport="grpc") >= 2)
            router_stopped = app.stopped.is_set()
        finally:
            await app.shutdown(grace_s=5)
            await other.stop()
    errors = log_events(logs, "falco_grpc_unavailable")
    assert len(errors) == 1
    assert "Falco 0.44 removed the gRPC server" in errors[0]["hint"]
    assert errors[0]["reason"] == "unimplemented"
    assert not router_stopped


async def test_missing_socket_logs_one_error(socket_path: Path) -> None:
    address = f"unix://{socket_path}"  # nothing listens there, as with Falco 0.44
    extra = "    unavailable_error_after_s: 1\n"
    with capture_logs() as logs:
        app, _capture = await start_router(router_yaml(address, extra=extra))
        try:
            await wait_until(lambda: app.metrics.sample("ingest_reconnects_total", transport="grpc") >= 3)
            component = grpc_component(app)
        finally:
            await app.shutdown(grace_s=5)
    assert len(log_events(logs, "falco_grpc_unavailable")) == 1
    assert len(log_events(logs, "ingest_disconnected")) == 1
    assert component.reason == "socket_missing"


def cycled_corpus(count: int) -> tuple[list[Any], list[str]]:
    # More alerts than the corpus has, as responses and as the rules in stream order.
    alerts = [loads(line) for line in corpus_lines()]
    chosen = [alerts[i % len(alerts)] for i in range(count)]
    return [response_from_alert(alert) for alert in chosen], [alert["rule"] for alert in chosen]


async def test_backpressure_holds_partial_batch_without_loss(falco: FalcoStandIn, socket_path: Path) -> None:
    # Fewer alerts than a batch: the linger timer hands them over and, on backpressure, retries.
    # The first 20 alerts fill the output queue to its bound, whatever batches they come in.
    queue = "    queue:\n      max_items: 20\n      overflow: reject\n"
    first, first_rules = cycled_corpus(20)
    second, second_rules = cycled_corpus(10)
    third, third_rules = cycled_corpus(10)
    address = await falco.start_unix(socket_path)
    with capture_logs() as logs:
        capture = CaptureOutput()
        capture.gate.clear()
        app = RouterApp(parse_config(router_yaml(address, queue=queue), "test.yaml"), overrides={"capture": capture})
        await app.start()
        try:
            falco.enqueue(first)
            await wait_until(lambda: app.metrics.sample("alerts_received_total", transport="grpc") == 20)
            # The output queue is over its bound now, so the next alerts meet backpressure.
            falco.enqueue(second)
            await wait_until(lambda: bool(log_events(logs, "ingest_backpressure")))
            # Queued while the router is held up: with polling paused, Falco gets no request and keeps
            # them. The pause spans many poll intervals, so a poller that kept going would drain them.
            await asyncio.sleep(0.2)  # lets a request written just before the pause reach the stand-in
            requests_at_pause = falco.sub_requests
            falco.enqueue(third)
            await asyncio.sleep(0.5)
            held_in_falco = len(falco.queue)
            requests_while_held = falco.sub_requests - requests_at_pause
            capture.gate.set()
            await wait_until(lambda: len(capture.events) == 40)
        finally:
            await app.shutdown(grace_s=5)
    assert requests_while_held == 0
    assert held_in_falco == 10
    assert len(log_events(logs, "ingest_backpressure_ended")) == 1
    assert app.metrics.sample_sum("output_lost_total") == 0
    # Alerts taken at once and alerts held through the backpressure are each counted once.
    assert app.metrics.sample("alerts_received_total", transport="grpc") == 40
    assert [e.rule for e in capture.events] == first_rules + second_rules + third_rules


async def test_backpressure_holds_full_batch_without_loss(falco: FalcoStandIn, socket_path: Path) -> None:
    # More alerts than two batches: after the first batch the output queue is full, so the reader
    # fills the next batch and waits with it.
    queue = "    queue:\n      max_items: 2\n      overflow: reject\n"
    first, first_rules = cycled_corpus(3 * BATCH_MAX_ALERTS)
    later, later_rules = cycled_corpus(10)
    falco.enqueue(first)
    address = await falco.start_unix(socket_path)
    with capture_logs() as logs:
        capture = CaptureOutput()
        capture.gate.clear()
        app = RouterApp(parse_config(router_yaml(address, queue=queue), "test.yaml"), overrides={"capture": capture})
        await app.start()
        try:
            await wait_until(lambda: bool(log_events(logs, "ingest_backpressure")))
            await asyncio.sleep(0.2)

            received_while_held = app.metrics.sample("alerts_received_total", transport="grpc")
            requests_at_pause = falco.sub_requests
            falco.enqueue(later)
            await asyncio.sleep(0.5)
            held_in_falco = len(falco.queue)
            requests_while_held = falco.sub_requests - requests_at_pause

            capture.gate.set()
            await wait_until(lambda: len(capture.events) == len(first) + len(later))
        finally:
            await app.shutdown(grace_s=5)
    # Reading stopped with a full batch held, before the stream was read to its end.
    assert received_while_held < len(first)
    assert requests_while_held == 0
    assert held_in_falco == len(later)
    assert app.metrics.sample_sum("output_lost_total") == 0
    assert app.metrics.sample("alerts_received_total", transport="grpc") == len(first) + len(later)
    assert [e.rule for e in capture.events] == first_rules + later_rules


def test_server_gone_mid_stream_is_stream_closed() -> None:
    import grpc  # noqa: PLC0415 - only this test builds RPC errors by hand

    from router.sources.grpc import _session_ended  # noqa: PLC0415 - private helper, tested directly

    closing = (
        (grpc.StatusCode.CANCELLED, "Cancelled"),
        (grpc.StatusCode.UNKNOWN, "Stream removed"),
        (grpc.StatusCode.INTERNAL, "Received RST_STREAM"),
    )
    for code, detail in closing:
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=detail)
        assert _session_ended(error, tls=False).reason == "stream_closed", code


async def test_shutdown_while_held_counts_lost_alerts(falco: FalcoStandIn, socket_path: Path) -> None:
    # The output never finishes and its queue rejects, so the reader keeps a full batch at shutdown,
    # with more alerts in the stream behind it. Falco cannot resend any of them: each one must be
    # delivered, or counted and logged as lost.
    queue = "    queue:\n      max_items: 2\n      overflow: reject\n"
    first, _ = cycled_corpus(3 * BATCH_MAX_ALERTS)
    falco.enqueue(first)
    address = await falco.start_unix(socket_path)
    with capture_logs() as logs:
        capture = CaptureOutput()
        capture.gate.clear()
        app = RouterApp(parse_config(router_yaml(address, queue=queue), "test.yaml"), overrides={"capture": capture})
        await app.start()
        try:
            await wait_until(lambda: bool(log_events(logs, "ingest_backpressure")))
            await asyncio.sleep(0.2)
        finally:
            await app.shutdown(grace_s=0.5)
    lost_at_ingest = app.metrics.sample("alerts_rejected_total", transport="grpc", reason="shutdown")
    logged = [e for e in log_events(logs, "alert_lost") if e["reason"] == "shutdown" and "output" not in e]
    received = app.metrics.sample("alerts_received_total", transport="grpc")
    # The held batch and what the stand-in had already written to the stream are read at shutdown.
    assert lost_at_ingest >= BATCH_MAX_ALERTS
    assert len(logged) == lost_at_ingest
    assert len({e["alert_id"] for e in logged}) == lost_at_ingest
    assert not falco.queue
    assert received + lost_at_ingest == len(first)
    assert app.metrics.sample_sum("output_lost_total", output="capture") == received


async def test_shutdown_reads_backlog_or_says_it_could_not(falco: FalcoStandIn, socket_path: Path) -> None:
    # A backlog still streaming at shutdown: with time enough, every alert Falco sent is read and
    # delivered; with almost none, the unread rest cannot be counted, so the router must log that.
    backlog, _ = cycled_corpus(20 * BATCH_MAX_ALERTS)
    address = await falco.start_unix(socket_path)
    app, capture = await start_router(router_yaml(address))
    falco.enqueue(backlog)
    await wait_until(lambda: len(capture.events) > 0)
    await app.shutdown(grace_s=20)
    assert not falco.queue
    assert len(capture.events) == len(backlog)

    falco.enqueue(backlog * 20)
    app, capture = await start_router(router_yaml(address))
    with capture_logs() as logs:
        await wait_until(lambda: len(capture.events) > 0)
        await app.shutdown(grace_s=0.02)
    incomplete = log_events(logs, "ingest_drain_incomplete")
    assert len(incomplete) == 1
    assert incomplete[0]["log_level"] == "error"
