"""HTTP ingest: the contract Falco's http_output and falcosidekick users already rely on.

POST an alert (any path but the service paths) and get 200 with an empty body once it is queued, or
400 with a one-line reason. Also ``/healthz``, ``/readyz``, ``/ping``, ``/metrics`` and ``POST /test``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from router.config.ingest import split_address
from router.event import FLAG_UTF8_REPAIRED, Event, InvalidAlert, parse_alert
from router.logs import get_logger
from router.pipeline import Backpressure
from router.sources.decode import decode_body

if TYPE_CHECKING:
    from router.config.ingest import HttpIngestConfig
    from router.health import Health
    from router.metrics import Metrics
    from router.pipeline import Pipeline

TRANSPORT = "http"
REFUSED_LOG_INTERVAL_S = 10.0
_SERVICE_PATHS = ("/healthz", "/readyz", "/ping", "/metrics")


class HttpIngest:
    """The aiohttp application and server of the HTTP ingest."""

    def __init__(self, config: HttpIngestConfig, pipeline: Pipeline, metrics: Metrics, health: Health) -> None:
        self.config = config
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health
        self.log = get_logger("ingest.http")
        self._received_total = metrics.tally(metrics.alerts_received.labels(TRANSPORT))
        self._runner: web.AppRunner | None = None
        self._refused = 0
        self._refused_logged_at = -REFUSED_LOG_INTERVAL_S
        self.port: int | None = None

    def build_app(self) -> web.Application:
        """Return the aiohttp application (also used directly by tests)."""
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_post("/test", self.test_alert)
        # Any other path takes alerts, as falcosidekick does, but the service paths are GET only.
        for path in _SERVICE_PATHS:
            app.router.add_post(path, self.not_an_ingest_path)
        app.router.add_post("/{path:.*}", self.receive)
        return app

    async def start(self) -> None:
        """Start listening; raises ``OSError`` when the address is taken."""
        host, port = split_address(self.config.listen)
        # shutdown_timeout bounds the wait for requests in flight at shutdown (aiohttp waits 60 s by default).
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        ssl_context = self.config.tls.ssl_context() if self.config.tls else None
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.health.set("ingest.http", "ok", listen=f"{host}:{self.port}")
        self.log.info("ingest_started", listen=f"{host}:{self.port}", tls=self.config.tls is not None)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def receive(self, request: web.Request) -> web.Response:
        """Accept one alert, a JSON array of alerts or JSON lines; 200 once all are queued."""
        if request.path.rstrip("/").lower() in _SERVICE_PATHS:
            # A probe with a trailing slash or another case is a misconfigured probe, not an alert.
            return await self.not_an_ingest_path(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject("too_large", f"body is larger than {self.config.max_body_bytes} bytes", status=413)
        try:
            decoded = decode_body(body)
            events = [parse_alert(doc, transport=TRANSPORT) for doc in decoded.documents]
        except InvalidAlert as exc:
            return self._reject("invalid", str(exc))
        for repair in decoded.repairs:
            self.metrics.alerts_repaired.labels(repair).inc(len(events))
            for event in events:
                event.flags.append(FLAG_UTF8_REPAIRED)
        return await self._accept(events)

    async def not_an_ingest_path(self, request: web.Request) -> web.Response:
        """Refuse alerts posted to a service path, which is a sender misconfiguration."""
        self.metrics.alerts_rejected.labels(TRANSPORT, "wrong_path").inc()
        return web.Response(
            status=405, text=f"{request.path} takes GET only; post alerts to /\n", headers={"Allow": "GET"}
        )

    async def test_alert(self, _request: web.Request) -> web.Response:
        """Queue a synthetic alert that goes to every output, so an operator can check them end to end.

        Routes and policy do not apply to it (falcosidekick's test alert also bypasses its minimum
        priority), so a Debug alert still reaches an output whose routes start at warning.
        """
        now_ns = time.time_ns()
        seconds, nanos = divmod(now_ns, 1_000_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
        event = parse_alert(
            {
                "output": "This is a test from falco-router",
                "priority": "Debug",
                "rule": "Test rule",
                "source": "falco_router",
                "time": stamp,
                "output_fields": {"proc.name": "falco-router", "evt.time": now_ns},
                "tags": ["test"],
            },
            transport=TRANSPORT,
        )
        event.annotations["test"] = True
        return await self._accept([event])

    async def _accept(self, events: list[Event]) -> web.Response:
        # With the spool on, accept returns after the commit that contains these alerts.
        try:
            await self.pipeline.accept(events)
        except Backpressure as exc:
            self.metrics.alerts_rejected.labels(TRANSPORT, "backpressure").inc(len(events))
            self._log_refused(str(exc), len(events))
            return web.Response(status=503, text=f"{exc}; retry later\n", headers={"Retry-After": "1"})
        self._received_total.inc(len(events))
        return web.Response(status=200)

    def _log_refused(self, reason: str, alerts: int) -> None:
        # Falco's http_output does not resend after a 503, so each refused alert may be lost; logged at
        # most once per REFUSED_LOG_INTERVAL_S with the count, because refusals come in bursts.
        self._refused += alerts
        now = time.monotonic()
        if now - self._refused_logged_at < REFUSED_LOG_INTERVAL_S:
            return
        self.log.error("ingest_refused", reason=reason, alerts=self._refused, status=503)
        self._refused = 0
        self._refused_logged_at = now

    def _reject(self, reason: str, message: str, status: int = 400) -> web.Response:
        self.metrics.alerts_rejected.labels(TRANSPORT, reason).inc()
        self.log.debug("alert_rejected", reason=reason, error=message)
        return web.Response(status=status, text=message + "\n")

    async def healthz(self, _request: web.Request) -> web.Response:
        """Liveness and detail: 200 while the process works, also when an output is degraded."""
        return web.Response(body=orjson.dumps(self.health.to_dict()), content_type="application/json")

    async def readyz(self, _request: web.Request) -> web.Response:
        """Readiness: 503 while shutting down, so a Service stops sending alerts here."""
        ready = self.health.accepting and self.pipeline.accepting
        document: dict[str, Any] = {"ready": ready}
        return web.Response(status=200 if ready else 503, body=orjson.dumps(document), content_type="application/json")

    async def ping(self, _request: web.Request) -> web.Response:
        """falcosidekick's legacy liveness path."""
        return web.Response(text="pong\n")

    async def metrics_page(self, _request: web.Request) -> web.Response:
        """Prometheus metrics."""
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")
