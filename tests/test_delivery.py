"""The delivery loop: retries, Retry-After, dead letters, order, isolation between outputs."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from router import delivery
from router.event import Event, loads, parse_alert
from router.outputs.base import PermanentError, RetriableError
from tests.support.collect import CollectingOutput
from tests.support.data import corpus_lines
from tests.support.router import running_router

TWO_OUTPUTS = """
ingest:
  http:
    listen: 127.0.0.1:{port}
outputs:
  flaky:
    type: stdout
    retry: {initial_backoff_s: 0.01, max_backoff_s: 0.05, max_attempts: 4}
  steady:
    type: stdout
routes:
  - name: everything
    internal: include  # Falco's own health alerts too
    outputs: [flaky, steady]
"""


def alerts(count: int) -> list:
    lines = corpus_lines()
    return [parse_alert(loads(lines[i % len(lines)])) for i in range(count)]


async def test_retriable_failure_retried_until_delivered_once() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("http_503"), RetriableError("http_503")])
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        event = alerts(1)[0]
        app.pipeline.submit([event])
        await flaky.wait_for(1)
    assert [e.id for e in flaky.events] == [event.id]
    assert flaky.attempts == [event.id] * 3
    assert app.metrics.sample("output_retries_total", output="flaky", reason="http_503") == 2


async def test_permanent_failure_dead_lettered_without_retry() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.append(PermanentError("http_400", "bad request"))
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        with capture_logs() as logs:
            first, second = alerts(2)
            app.pipeline.submit([first, second])
            await flaky.wait_for(1)
    assert [e.id for e in flaky.events] == [second.id]
    assert flaky.attempts.count(first.id) == 1
    assert app.metrics.sample("output_lost_total", output="flaky", reason="http_400") == 1
    lost = [entry for entry in logs if entry["event"] == "alert_lost"]
    assert len(lost) == 1
    assert lost[0]["log_level"] == "error"
    assert lost[0]["alert_id"] == first.id


async def test_retries_exhausted_counted_as_lost() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("timeout")] * 4)
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        first, second = alerts(2)
        app.pipeline.submit([first, second])
        await flaky.wait_for(1)
    assert flaky.attempts.count(first.id) == 4
    assert app.metrics.sample("output_lost_total", output="flaky", reason="retries_exhausted") == 1


async def test_retry_after_honoured() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.append(RetriableError("rate_limited", retry_after_s=0.3))
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        with capture_logs() as logs:
            app.pipeline.submit(alerts(1))
            await flaky.wait_for(1)
    retry = next(entry for entry in logs if entry["event"] == "delivery_retry")
    assert retry["retry_in_s"] >= 0.3


async def test_failing_output_does_not_delay_the_other() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("connection_refused")] * 3)
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        batch = alerts(20)
        app.pipeline.submit(batch)
        await steady.wait_for(20)
        assert len(flaky.events) < 20
        await flaky.wait_for(20)
    assert [e.id for e in flaky.events] == [e.id for e in batch]


async def test_order_kept_across_retries() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("http_503")] * 2)
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        batch = alerts(50)
        for event in batch:
            app.pipeline.submit([event])
            await asyncio.sleep(0)
        await flaky.wait_for(50)
    assert [e.id for e in flaky.events] == [e.id for e in batch]


async def test_health_reports_failing_output_then_recovers() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("http_503")] * 2)
    async with running_router(
        TWO_OUTPUTS.replace("initial_backoff_s: 0.01", "initial_backoff_s: 0.2"), {"flaky": flaky, "steady": steady}
    ) as app:
        app.pipeline.submit(alerts(1))
        async with asyncio.timeout(5):
            while (health := app.health.get("output.flaky")) is None or health.status != "failing":
                await asyncio.sleep(0.005)
        assert app.health.status == "degraded"
        await flaky.wait_for(1)
        assert app.health.get("output.flaky").status == "ok"  # type: ignore[union-attr]


async def test_batch_given_up_keeps_output_failing() -> None:
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([PermanentError("invalid_auth", "token revoked")] * 2)
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        with capture_logs() as logs:
            app.pipeline.submit(alerts(1))
            await steady.wait_for(1)
            async with asyncio.timeout(5):
                while app.metrics.sample_sum("output_lost_total", output="flaky") < 1:
                    await asyncio.sleep(0.005)
            health = app.health.get("output.flaky")
            assert health is not None
            assert health.status == "failing"
            assert health.reason == "invalid_auth"
            assert app.metrics.sample("output_up", output="flaky") == 0
            app.pipeline.submit(alerts(1))
            async with asyncio.timeout(5):
                while app.metrics.sample_sum("output_lost_total", output="flaky") < 2:
                    await asyncio.sleep(0.005)
            assert app.health.get("output.flaky").status == "failing"  # type: ignore[union-attr]
            app.pipeline.submit(alerts(1))
            await flaky.wait_for(1)
    assert app.health.get("output.flaky").status == "ok"  # type: ignore[union-attr]
    # Recovery is logged once, by the delivery that worked, and never while alerts were given up on.
    events = [entry["event"] for entry in logs]
    assert events.count("output_recovered") == 1
    assert events.index("output_recovered") > max(i for i, e in enumerate(events) if e == "alert_lost")


async def test_default_retry_outlasts_long_outage() -> None:
    config = TWO_OUTPUTS.replace(", max_attempts: 4", "")
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("http_503")] * 60)
    async with running_router(config, {"flaky": flaky, "steady": steady}) as app:
        event = alerts(1)[0]
        app.pipeline.submit([event])
        await flaky.wait_for(1, timeout_s=30)
    assert [e.id for e in flaky.events] == [event.id]
    assert app.metrics.sample_sum("output_lost_total", output="flaky") == 0


async def test_queue_depth_gauge_current_during_backoff() -> None:
    config = TWO_OUTPUTS.replace(
        "initial_backoff_s: 0.01, max_backoff_s: 0.05", "initial_backoff_s: 5, max_backoff_s: 5"
    )
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.append(RetriableError("http_503"))
    async with running_router(config, {"flaky": flaky, "steady": steady}) as app:
        app.pipeline.submit(alerts(1))
        await steady.wait_for(1)
        app.pipeline.submit(alerts(30))
        await steady.wait_for(31)
        assert app.metrics.sample("output_queue_depth", output="flaky") == 31
        assert app.metrics.sample("output_oldest_undelivered_seconds", output="flaky") > 0


class HangingClose(CollectingOutput):
    """An output whose close never returns, like a producer waiting for a dead broker."""

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_shutdown_fits_grace_period_with_hanging_output() -> None:
    flaky, steady = HangingClose("flaky"), CollectingOutput("steady")
    flaky.failures.extend([RetriableError("connection_refused")] * 1000)
    config = TWO_OUTPUTS.replace(", max_attempts: 4", "")
    async with running_router(config, {"flaky": flaky, "steady": steady}) as app:
        app.pipeline.submit(alerts(3))
        await steady.wait_for(3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with capture_logs() as logs:
            await app.shutdown(grace_s=2.0)
        elapsed = loop.time() - started
    # The margin is wide on purpose: the bound checks that closing is inside the grace period, not speed.
    assert elapsed < 3.5, f"shutdown took {elapsed:.1f} s for a 2 s grace period"
    assert any(entry["event"] == "output_close_failed" and entry["output"] == "flaky" for entry in logs)
    assert app.metrics.sample("output_lost_total", output="flaky", reason="shutdown") == 3


async def test_memory_queue_byte_limit_drops_and_counts_oldest() -> None:
    size = len(alerts(1)[0].to_json())
    config = TWO_OUTPUTS.replace(
        "    retry: {initial_backoff_s: 0.01",
        f"    queue: {{max_bytes: {size * 5}}}\n"
        "    retry: {initial_backoff_s: 5, max_backoff_s: 5, max_attempts: 4}  #",
    )
    flaky, steady = CollectingOutput("flaky"), CollectingOutput("steady")
    flaky.failures.append(RetriableError("http_503"))
    async with running_router(config, {"flaky": flaky, "steady": steady}) as app:
        batch = [alerts(1)[0] for _ in range(12)]
        with capture_logs() as logs:
            app.pipeline.submit(batch)
            await steady.wait_for(12)
        depth = app.metrics.sample("output_queue_depth", output="flaky")
        lost = app.metrics.sample("output_lost_total", output="flaky", reason="queue_full")
    assert depth <= 6, "more alerts queued than max_bytes allows (one may be in flight)"
    assert lost == 12 - depth
    dropped = [e["alert_id"] for e in logs if e["event"] == "alert_lost"]
    ids = [e.id for e in batch]
    # The oldest queued alerts go first; alert 0 may already be in flight, so the run starts at 0 or 1.
    assert dropped in (ids[: int(lost)], ids[1 : 1 + int(lost)])


class _HangingOutput(CollectingOutput):
    """Hangs on its first attempt, as an output whose own timeout failed would."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.hang = True

    async def send(self, event: Event) -> None:
        if self.hang:
            self.hang = False
            self.attempts.append(event.id)
            await asyncio.sleep(3600)
        await super().send(event)


async def test_hung_attempt_cut_by_safety_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "ATTEMPT_TIMEOUT_S", 0.05)
    hanging, steady = _HangingOutput("flaky"), CollectingOutput("steady")
    async with running_router(TWO_OUTPUTS, {"flaky": hanging, "steady": steady}) as app:
        event = alerts(1)[0]
        app.pipeline.submit([event])
        await hanging.wait_for(1)
    assert hanging.attempts == [event.id, event.id]
    assert app.metrics.sample("output_retries_total", output="flaky", reason="timeout") == 1


class _YieldingOutput(CollectingOutput):
    """Yields to the event loop once per alert, where a pending timeout would cancel it."""

    async def send(self, event: Event) -> None:
        await asyncio.sleep(0)
        await super().send(event)


async def test_output_that_never_waits_skips_safety_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # A zero timeout fails every attempt that goes through it (checked by the first half).
    monkeypatch.setattr(delivery, "ATTEMPT_TIMEOUT_S", 0.0)
    probe, steady = _YieldingOutput("flaky"), CollectingOutput("steady")
    async with running_router(TWO_OUTPUTS, {"flaky": probe, "steady": steady}) as app:
        app.pipeline.submit(alerts(1))
        await steady.wait_for(1)
        for _ in range(100):
            if app.metrics.sample("output_retries_total", output="flaky", reason="timeout"):
                break
            await asyncio.sleep(0.01)
        assert app.metrics.sample("output_retries_total", output="flaky", reason="timeout") >= 1

    flaky, steady = _YieldingOutput("flaky"), CollectingOutput("steady")
    flaky.waits_on_io = False
    async with running_router(TWO_OUTPUTS, {"flaky": flaky, "steady": steady}) as app:
        app.pipeline.submit(alerts(3))
        await flaky.wait_for(3)
    assert len(flaky.attempts) == 3
    assert app.metrics.sample("output_retries_total", output="flaky", reason="timeout") == 0
