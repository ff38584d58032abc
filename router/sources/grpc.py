"""gRPC ingest: a client of Falco's ``falco.outputs.service`` (Falco 0.24 to 0.43; 0.44 removed it).

One task connects, probes Falco with ``falco.version.service/version``, then reads alerts with ``sub``
(one long-lived stream) or ``get`` (repeated drains) and hands each to the pipeline. Any failure ends
the session, and the task reconnects forever with capped, jittered exponential backoff.

Falco keeps one process-wide queue of alerts for gRPC and every ``sub`` or ``get`` call pops from it,
so two subscribers (two routers, or a router and another client) split the stream between them.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import TYPE_CHECKING, Any, Final

import grpc
import grpc.aio

from router.event import Event, InvalidAlert
from router.logs import get_logger
from router.pipeline import Backpressure, NotPersisted
from router.proto_gen.falco import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc
from router.sources.grpc_convert import TRANSPORT, event_from_response

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

    from router.config.ingest import GrpcIngestConfig
    from router.health import Health
    from router.metrics import Metrics
    from router.pipeline import Pipeline

COMPONENT: Final = "ingest.grpc"
MIN_RECONNECT_DELAY_S: Final = 1.0
"""Floor of the reconnection delay, so that at most one attempt a second reaches Falco."""
STILL_DISCONNECTED_LOG_S: Final = 300.0
"""Interval between repeated warnings while the ingest stays disconnected."""
BACKPRESSURE_RETRY_S: Final = 0.05
BATCH_MAX_ALERTS: Final = 64
"""Largest number of alerts handed to the pipeline at once."""
BATCH_LINGER_S: Final = 0.001
"""How long the first alert of a batch waits for more alerts before the batch goes to the pipeline."""
DRAIN_QUIET_S: Final = 0.2
"""At shutdown, how long the stream must stay quiet before reading stops (see ``GrpcIngest.drain``)."""

FALCO_044_HINT: Final = (
    "Falco 0.44 removed the gRPC server and gRPC output. On Falco 0.44 or later set ingest.grpc.enabled: false "
    "and configure Falco's http_output to post to the router's HTTP ingest; on 0.24 to 0.43 set grpc.enabled "
    "and grpc_output.enabled to true in falco.yaml"
)

# Falco sets no HTTP/2 keepalive and tolerates pings without data no more often than every 5 minutes
# (gRPC core's default), so the client pings less often than that. The ping detects a Falco host that
# vanished without closing the TCP connection.
_CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 360_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


class StreamEndedError(Exception):
    """The end of a session with Falco: ``reason`` is a short fixed label and the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Backoff:
    """Capped exponential backoff with equal jitter, never below ``MIN_RECONNECT_DELAY_S``."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count one more failure."""
        cap = min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return max(MIN_RECONNECT_DELAY_S, cap / 2 + random.uniform(0, cap / 2))

    def reset(self) -> None:
        """Start again from the initial delay (after a successful connection)."""
        self.failures = 0


class GrpcIngest:
    """Subscribes to Falco's gRPC output stream and submits each alert to the pipeline."""

    def __init__(self, config: GrpcIngestConfig, pipeline: Pipeline, metrics: Metrics, health: Health) -> None:
        self.config = config
        self.pipeline = pipeline
        self.metrics = metrics
        self.health = health
        self.log = get_logger(COMPONENT)
        self.connected = False
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._socket_path = unix_socket_path(config.address)
        self._unreachable_since: float | None = None
        self._unavailable_logged = False
        self._last_warning_at = 0.0
        self._failed_attempts = 0
        # Cleared while the pipeline pushes back, so the sub poller stops asking Falco for more.
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._held_since: float | None = None
        self._stopping = False
        self._last_read = 0.0  # time.monotonic() of the last response read, watched by drain()
        self._read_total = 0
        # Alerts read but not yet handed to the pipeline, and the timer that hands them over.
        self._batch: list[Event] = []
        self._linger: asyncio.TimerHandle | None = None
        # Looked up once and tallied: labels() and inc() each take a lock that would otherwise run per alert.
        self._received_total = metrics.tally(metrics.alerts_received.labels(TRANSPORT))

    async def run(self) -> None:
        """Connect, read and reconnect until cancelled."""
        self.metrics.ingest_connected.labels(TRANSPORT).set(0)
        self.health.set(COMPONENT, "degraded", reason="connecting", address=self.config.address)
        self.log.info("ingest_started", address=self.config.address, method=self.config.method)
        first_attempt = True
        try:
            while True:
                if not first_attempt:
                    self.metrics.ingest_reconnects.labels(TRANSPORT).inc()
                first_attempt = False
                try:
                    await self._session()
                    ended = StreamEndedError("stream_closed", "Falco closed the stream (restart or shutdown)")
                except StreamEndedError as exc:
                    ended = exc
                self._disconnected(ended)
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._cancel_linger()
            if self._batch:
                self._hand_over_at_stop(self._batch)
                self._batch = []

    async def _session(self) -> None:
        # A stat of a local path once per attempt; not worth a thread.
        if self._socket_path is not None and not os.path.exists(self._socket_path):  # noqa: ASYNC240
            raise StreamEndedError("socket_missing", f"unix socket {self._socket_path} does not exist")
        channel = self._open_channel()
        try:
            await self._probe(channel)
            if self.config.method == "sub":
                await self._subscribe(channel)
            else:
                await self._drain_repeatedly(channel)
        except grpc.aio.AioRpcError as exc:
            raise _session_ended(exc, tls=self._socket_path is None) from exc
        finally:
            await channel.close()

    def _open_channel(self) -> grpc.aio.Channel:
        if self._socket_path is not None:
            return grpc.aio.insecure_channel(self.config.address, options=_CHANNEL_OPTIONS)
        tls = self.config.tls
        assert tls is not None and tls.cert_file is not None and tls.key_file is not None  # config validation
        try:
            # Read on every attempt, so rotated certificates are picked up at the next reconnection.
            root = tls.ca_file.read_bytes() if tls.ca_file is not None else None
            key = tls.key_file.read_bytes()
            chain = tls.cert_file.read_bytes()
        except OSError as exc:
            raise StreamEndedError("tls_files_unreadable", f"cannot read {exc.filename}: {exc.strerror}") from exc
        credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
        options: list[tuple[str, Any]] = list(_CHANNEL_OPTIONS)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.aio.secure_channel(self.config.address, credentials, options=options)

    async def _probe(self, channel: grpc.aio.Channel) -> None:
        # The version call proves that the transport and mutual TLS work before the stream opens. A sub
        # stream on an empty queue stays silent whether or not it is connected.
        stub = version_pb2_grpc.serviceStub(channel)
        reply = await stub.version(version_pb2.request(), timeout=self.config.connect_timeout_s)
        self._connected(reply.version)

    async def _subscribe(self, channel: grpc.aio.Channel) -> None:
        stub = outputs_pb2_grpc.serviceStub(channel)
        if self._held_since is None and not self._stopping:
            # A batch held from the previous session keeps polling paused until the pipeline takes it.
            self._accepting.set()
        call = stub.sub()
        poller = asyncio.create_task(self._poll(call), name="ingest-grpc-poll")
        try:
            # Iteration stops at an OK end from Falco (a restart). An error status raises instead.
            await self._consume(call)
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            call.cancel()

    async def _poll(self, call: grpc.aio.StreamStreamCall) -> None:
        # Falco drains its queue to a sub stream only after each client message, so an empty request is
        # sent every poll interval, as client-go's OutputsWatch does.
        request = outputs_pb2.request()
        while True:
            await self._accepting.wait()
            await call.write(request)
            await asyncio.sleep(self.config.poll_interval_s)

    async def _drain_repeatedly(self, channel: grpc.aio.Channel) -> None:
        stub = outputs_pb2_grpc.serviceStub(channel)
        request = outputs_pb2.request()
        while not self._stopping:
            # get streams what is queued at that moment and ends with OK once the queue is empty.
            await self._consume(stub.get(request))
            await asyncio.sleep(self.config.poll_interval_s)
        await asyncio.Event().wait()  # stopping: no new call; drain() then cancels this task

    async def _consume(self, responses: AsyncIterable[outputs_pb2.response]) -> None:
        """Convert each response of one call and hand the alerts to the pipeline in batches.

        Each hand-over wakes the pipeline task and the output workers once and makes one write per
        output, so a batch costs less per alert than single alerts do (docs/benchmarks.md). A batch goes to the pipeline
        when it has ``BATCH_MAX_ALERTS`` alerts or ``BATCH_LINGER_S`` after its first alert. The linger
        adds at most that much to an alert's latency, small beside the ``poll_interval_s`` for which
        Falco itself keeps alerts queued between two polls.
        """
        try:
            async for message in responses:
                self._last_read = time.monotonic()
                self._read_total += 1
                event = self._convert(message)
                if event is None:
                    continue
                if self.pipeline.journal is not None:
                    # With a spool each alert waits until it is persisted, as with the HTTP ingest.
                    await self._submit([event])
                    continue
                self._batch.append(event)
                if len(self._batch) >= BATCH_MAX_ALERTS:
                    # Waits while the pipeline is full, so reading stops with at most one batch held.
                    self._cancel_linger()
                    batch, self._batch = self._batch, []
                    await self._submit(batch)
                elif self._linger is None:
                    self._linger = asyncio.get_running_loop().call_later(BATCH_LINGER_S, self._submit_lingering)
        finally:
            # The call ended, failed or was cancelled: hand over what was read without waiting for the
            # linger, because Falco has already removed those alerts from its queue.
            if self._linger is not None:
                self._cancel_linger()
                self._submit_lingering()

    def _convert(self, message: outputs_pb2.response) -> Event | None:
        try:
            return event_from_response(message)
        except InvalidAlert as exc:
            self.metrics.alerts_rejected.labels(TRANSPORT, "invalid").inc()
            self.log.warning("alert_rejected", reason="invalid", error=str(exc))
            return None

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _submit_lingering(self) -> None:
        # A timer callback cannot wait, so on backpressure the batch stays in place and the timer
        # retries. Meanwhile polling stops, and the reader stops too once the batch is full.
        self._linger = None
        try:
            self.pipeline.submit(self._batch)
        except Backpressure as exc:
            if self._stopping:
                self._report_lost(self._batch, str(exc))
                self._batch = []
                return
            self._backpressure_started(str(exc), self._batch[0])
            self._linger = asyncio.get_running_loop().call_later(BACKPRESSURE_RETRY_S, self._submit_lingering)
            return
        self._received_total.inc(len(self._batch))
        self._batch = []
        self._backpressure_ended()

    async def _submit(self, events: list[Event]) -> None:
        # Falco has already removed these alerts from its queue, so they are held here until the
        # pipeline takes them. Reading and polling stop meanwhile, so Falco keeps what it has not sent.
        while True:
            try:
                await self.pipeline.accept(events)
            except NotPersisted as exc:
                # Queued in memory already: retrying would queue them twice.
                self.log.warning("alert_not_persisted", error=str(exc), alert_id=events[0].id)
                break
            except Backpressure as exc:
                if self._stopping:
                    # No waiting while stopping: what the pipeline cannot take now is counted as lost.
                    self._report_lost(events, str(exc))
                    return
                self._backpressure_started(str(exc), events[0])
                try:
                    await asyncio.sleep(BACKPRESSURE_RETRY_S)
                except asyncio.CancelledError:
                    self._hand_over_at_stop(events)
                    raise
                continue
            break
        self._backpressure_ended()
        self._received_total.inc(len(events))

    async def drain(self, limit_s: float) -> None:
        """Stop asking Falco for alerts and read what it has already sent, for at most ``limit_s``.

        Falco removes an alert from its queue once written to the stream, so alerts still in the
        stream's buffers would vanish with the connection. Reading ends once the stream has been quiet
        for ``DRAIN_QUIET_S``; every alert read is handed to the pipeline or counted as lost. Alerts
        that Falco is still sending when ``limit_s`` runs out are never read, so they cannot be counted:
        that is logged as an error.
        """
        self._stopping = True
        self._accepting.clear()
        # Counted from now: a reader held up by backpressure resumes only after it reads _stopping.
        started = self._last_read = time.monotonic()
        read_before = self._read_total
        while time.monotonic() - self._last_read < DRAIN_QUIET_S:
            if time.monotonic() - started >= limit_s:
                self.log.error(
                    "ingest_drain_incomplete",
                    limit_s=round(limit_s, 3),
                    read_while_draining=self._read_total - read_before,
                    error="Falco was still sending when the shutdown time ran out; alerts it had already"
                    " sent and the router had not read are lost and not counted",
                )
                return
            await asyncio.sleep(DRAIN_QUIET_S / 4)

    def _hand_over_at_stop(self, events: list[Event]) -> None:
        """Give held alerts a last chance at stop; count and log each one the pipeline cannot take.

        Falco has already removed them from its queue and cannot resend them, so they must not vanish.
        """
        try:
            self.pipeline.submit(events)
        except Backpressure as exc:
            self._report_lost(events, str(exc))
            return
        self._received_total.inc(len(events))

    def _report_lost(self, events: list[Event], error: str) -> None:
        self.metrics.alerts_rejected.labels(TRANSPORT, "shutdown").inc(len(events))
        for event in events:
            self.log.error("alert_lost", reason="shutdown", error=error, alert_id=event.id, rule=event.rule)

    def _backpressure_started(self, reason: str, first_held: Event) -> None:
        if self._held_since is None:
            self._held_since = time.monotonic()
            self._accepting.clear()
            self.log.warning("ingest_backpressure", reason=reason, alert_id=first_held.id)

    def _backpressure_ended(self) -> None:
        if self._held_since is not None:
            if not self._stopping:
                self._accepting.set()
            self.log.info("ingest_backpressure_ended", waited_s=round(time.monotonic() - self._held_since, 3))
            self._held_since = None

    def _connected(self, falco_version: str) -> None:
        self.connected = True
        self._backoff.reset()
        self._unreachable_since = None
        self._unavailable_logged = False
        self._failed_attempts = 0
        self.metrics.ingest_connected.labels(TRANSPORT).set(1)
        self.health.set(COMPONENT, "ok", address=self.config.address, falco_version=falco_version)
        self.log.info(
            "ingest_connected", address=self.config.address, method=self.config.method, falco_version=falco_version
        )

    def _disconnected(self, ended: StreamEndedError) -> None:
        now = time.monotonic()
        was_connected = self.connected
        self.connected = False
        self._failed_attempts += 1
        self.metrics.ingest_connected.labels(TRANSPORT).set(0)
        self.health.set(COMPONENT, "degraded", reason=ended.reason, address=self.config.address, error=str(ended))

        if ended.reason == "unimplemented":
            self._log_unavailable(ended)
        elif ended.reason in {"socket_missing", "unavailable"}:
            if self._unreachable_since is None:
                self._unreachable_since = now
            elif now - self._unreachable_since >= self.config.unavailable_error_after_s:
                self._log_unavailable(ended)
        else:
            self._unreachable_since = None

        # One warning per transition and a reminder every STILL_DISCONNECTED_LOG_S; every attempt is debug.
        if was_connected or self._failed_attempts == 1:
            self._last_warning_at = now
            self.log.warning("ingest_disconnected", address=self.config.address, reason=ended.reason, error=str(ended))
        elif now - self._last_warning_at >= STILL_DISCONNECTED_LOG_S:
            self._last_warning_at = now
            self.log.warning(
                "ingest_still_disconnected",
                address=self.config.address,
                reason=ended.reason,
                error=str(ended),
                attempts=self._failed_attempts,
            )
        else:
            self.log.debug("ingest_connect_failed", address=self.config.address, reason=ended.reason, error=str(ended))

    def _log_unavailable(self, ended: StreamEndedError) -> None:
        if self._unavailable_logged:
            return
        self._unavailable_logged = True
        # An operator must act: no alert arrives on this ingest until Falco or the config changes.
        self.log.error(
            "falco_grpc_unavailable",
            address=self.config.address,
            reason=ended.reason,
            error=str(ended),
            hint=FALCO_044_HINT,
        )


def unix_socket_path(address: str) -> str | None:
    """Return the file path of a ``unix:`` address (``unix:///abs`` or ``unix:rel``), None for TCP."""
    if address.startswith("unix://"):
        return address[len("unix://") :]
    if address.startswith("unix:"):
        return address[len("unix:") :]
    return None


_TLS_FAILURE_MARKERS: Final = ("ssl", "handshake", "certificate", "tls", "socket closed")


def _session_ended(exc: grpc.aio.AioRpcError, *, tls: bool) -> StreamEndedError:
    code = exc.code()
    detail = f"{code.name}: {exc.details()}"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return StreamEndedError("unimplemented", detail)
    if code == grpc.StatusCode.UNAVAILABLE:
        # gRPC reports a failed TLS handshake as UNAVAILABLE too, and only the detail text tells it
        # apart from an absent server. With TLS 1.3 the server checks the client certificate after the
        # client has finished its side of the handshake, so a rejected certificate reaches the client
        # only as "Socket closed".
        # NOTE: on a TLS channel, a Falco that closes the socket while the connection is being set up
        # is reported as tls_failed too.
        lowered = detail.lower()
        if tls and any(marker in lowered for marker in _TLS_FAILURE_MARKERS):
            return StreamEndedError("tls_failed", detail)
        return StreamEndedError("unavailable", detail)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return StreamEndedError("timeout", detail)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        # Falco stops its gRPC server on every hot restart. Open streams then end as CANCELLED, or as
        # UNKNOWN ("Stream removed") or INTERNAL when the transport goes first.
        # NOTE: the last two are inferred from grpc-core's behaviour, and a server-side fault would be
        # reported as a closed stream too; the reconnection that follows is the same in both cases.
        return StreamEndedError("stream_closed", detail)
    return StreamEndedError("rpc_error", detail)
