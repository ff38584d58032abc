"""The delivery loop of one output: take alerts from its queue, send, retry with backoff, give up loudly.

This is the one place that logs and counts a failed delivery. Retries go to the head of the queue, so
alerts leave in the order they arrived and a dead endpoint gets one probe per backoff interval rather
than a request per alert. The loop is the output's circuit breaker: closed while deliveries succeed,
open while it waits out a backoff, half_open while the head-of-line probe is in flight.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from router.health import Health
from router.logs import get_logger
from router.metrics import Metrics
from router.outputs.base import DeliveryError, Output, RetriableError
from router.queue import Delivery, OutputQueue

# Upper bound on a Retry-After we honour, so a wrong header cannot park an output for hours.
MAX_RETRY_AFTER_S = 600.0
# Safety net over the output's own timeouts: _attempt cancels an attempt that runs longer than this.
ATTEMPT_TIMEOUT_S = 120.0
BREAKER_STATES = ("closed", "open", "half_open")


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Return the delay before retry number ``failures`` (1-based): exponential, capped, jittered.

    The jitter keeps between half and all of the exponential delay, so routers restarted together do
    not retry in lockstep.
    """
    exponential = min(max_s, initial_s * (2 ** min(failures - 1, 30)))
    return float(exponential * rng.uniform(0.5, 1.0))


class OutputWorker:
    """Runs the delivery loop of one output."""

    def __init__(self, output: Output, queue: OutputQueue, retry: Any, metrics: Metrics, health: Health) -> None:
        self.output = output
        self.queue = queue
        self.retry = retry
        self.metrics = metrics
        self.health = health
        self.log = get_logger(f"output.{output.type_name}").bind(output=output.name)
        self._rng = random.Random()
        self._failures = 0
        self._breaker = ""
        self._breaker_gauges = {name: metrics.breaker_state.labels(output.name, name) for name in BREAKER_STATES}
        self._up = metrics.output_up.labels(output.name)
        if output.unavailable_reason is None:
            self.health.set(self._component, "ok", breaker="closed")
            self._up.set(1)
            self._set_breaker("closed")
        else:
            # The output started without its peer (a broker still down): failing until a delivery works.
            self._failures = 1
            self.health.set(self._component, "failing", output.unavailable_reason, breaker="open")
            self._up.set(0)
            self._set_breaker("open")
        # Labelled children looked up once: per-alert .labels() calls cost more than the update itself.
        self._delivered_total = metrics.tally(metrics.delivered.labels(output.name))
        self._latency = metrics.delivery_latency.labels(output.name)
        # Read at scrape time, so the gauges stay current while the loop sleeps in a backoff.
        metrics.queue_depth.labels(output.name).set_function(queue.depth)
        metrics.oldest_age.labels(output.name).set_function(self._oldest_age_s)

    @property
    def _component(self) -> str:
        return f"output.{self.output.name}"

    async def run(self) -> None:
        """Deliver forever; cancelled by the app on shutdown."""
        while True:
            batch = await self.queue.get_batch(self.output.max_batch)
            await self._deliver(batch)

    def _set_breaker(self, state: str) -> None:
        self._breaker = state
        for name, gauge in self._breaker_gauges.items():
            gauge.set(1 if name == state else 0)

    async def _deliver(self, batch: list[Delivery]) -> None:
        pending = batch
        while pending:
            if self._failures:
                self._set_breaker("half_open")
            results = await self._attempt(pending)
            if not any(results):
                # The usual case, the whole batch delivered: no per-alert sorting.
                self._count_delivered(pending)
                self.queue.done(pending)
                self._recovered()
                return
            delivered, retry, last_error, retry_after = self._sort_results(pending, results)
            if not retry:
                if delivered or last_error is None:
                    self._recovered()
                    return
                # Every alert of the batch was given up on, so the output still fails. The failure count is
                # kept, so the next alert starts at the current backoff rather than from the beginning.
                self._still_failing(last_error)
                if last_error.retriable:
                    await asyncio.sleep(self._next_delay(0.0))
                else:
                    self._failures += 1  # counted, so the next delivery logs output_recovered
                return
            self.queue.retrying(retry)
            delay = self._next_delay(retry_after)
            first = retry[0]
            self.log.warning(
                "delivery_retry",
                reason=first.last_reason,
                alerts=len(retry),
                attempt=first.attempts,
                retry_in_s=round(delay, 3),
                alert_id=first.event.id,
            )
            self._set_breaker("open")
            self.health.set(self._component, "failing", first.last_reason, retry_in_s=round(delay, 3), breaker="open")
            self._up.set(0)
            await asyncio.sleep(delay)
            pending = retry

    def _sort_results(
        self, pending: list[Delivery], results: list[DeliveryError | None]
    ) -> tuple[int, list[Delivery], DeliveryError | None, float]:
        """Count the delivered, give up on what cannot be retried, and return what is left to retry.

        Returns (alerts delivered, deliveries to retry, the last error, the longest Retry-After).
        """
        delivered: list[Delivery] = []
        finished: list[Delivery] = []
        retry: list[Delivery] = []
        retry_after = 0.0
        last_error: DeliveryError | None = None
        for delivery, error in zip(pending, results, strict=True):
            if error is None:
                delivered.append(delivery)
                continue
            delivery.attempts += 1
            last_error = error
            if not error.retriable:
                self._give_up(delivery, error.reason, error)
                finished.append(delivery)
            elif self._exhausted(delivery):
                self._give_up(delivery, "retries_exhausted", error)
                finished.append(delivery)
            else:
                delivery.last_reason = error.reason
                retry.append(delivery)
                retry_after = max(retry_after, error.retry_after_s or 0.0)
                self.metrics.retries.labels(self.output.name, error.reason).inc()
        self._count_delivered(delivered)
        self.queue.done(delivered + finished)
        return len(delivered), retry, last_error, retry_after

    def _count_delivered(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        # One clock read and one histogram update per batch: the alerts of a batch were acknowledged by the
        # same attempt.
        now_ns = time.time_ns()
        for delivery in deliveries:
            delivery.attempts += 1
        self._latency.observe_many([(now_ns - d.event.received_ns) / 1e9 for d in deliveries])
        self._delivered_total.inc(len(deliveries))

    def _next_delay(self, retry_after: float) -> float:
        self._failures += 1
        delay = backoff_delay(self._failures, self.retry.initial_backoff_s, self.retry.max_backoff_s, self._rng)
        return max(delay, min(retry_after, MAX_RETRY_AFTER_S))

    def _recovered(self) -> None:
        if self._failures:
            self.log.info("output_recovered", after_failures=self._failures)
        self._failures = 0
        # Only on a change: under a trickle of alerts each alert is its own batch, and setting four gauges
        # and the health record to the values they already had showed in py-spy profiles.
        if self._breaker != "closed":
            self._set_breaker("closed")
            self.health.set(self._component, "ok", breaker="closed")
            self._up.set(1)

    def _still_failing(self, error: DeliveryError) -> None:
        self._set_breaker("open")
        self.health.set(self._component, "failing", error.reason, breaker="open")
        self._up.set(0)

    async def _attempt(self, pending: list[Delivery]) -> list[DeliveryError | None]:
        events = [d.event for d in pending]
        if not self.output.waits_on_io:
            return await self.output.send_batch(events)
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                return await self.output.send_batch(events)
        except TimeoutError:
            return [RetriableError("timeout", f"timed out after {ATTEMPT_TIMEOUT_S:.0f} s")] * len(pending)

    def _exhausted(self, delivery: Delivery) -> bool:
        age_s = (time.time_ns() - delivery.event.received_ns) / 1e9
        return bool(delivery.attempts >= self.retry.max_attempts or age_s >= self.retry.max_age_s)

    def _give_up(self, delivery: Delivery, reason: str, error: DeliveryError) -> None:
        self.queue.dead_letter(delivery, reason, str(error))
        self.metrics.lost.labels(self.output.name, reason).inc()
        self.log.error(
            "alert_lost",
            reason=reason,
            error=str(error),
            attempts=delivery.attempts,
            alert_id=delivery.event.id,
            rule=delivery.event.rule,
        )

    def _oldest_age_s(self) -> float:
        oldest = self.queue.oldest_ns()
        return max((time.time_ns() - oldest) / 1e9, 0.0) if oldest else 0.0
