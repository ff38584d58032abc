"""Per-output queues. Each output has its own, so a slow output falls behind without delaying others.

``MemoryQueue`` is bounded and applies the configured overflow policy. A durable queue implements the
same ``OutputQueue`` protocol.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from router.event import Event
from router.logs import get_logger
from router.metrics import Metrics


@dataclass(slots=True, eq=False)
class Delivery:
    """One alert on its way to one output."""

    event: Event
    attempts: int = 0
    first_error_ns: int = 0
    seq: int = 0
    last_reason: str = ""
    size_bytes: int = 0
    """Bytes of the alert's JSON, counted against a memory queue's max_bytes."""


class OutputQueue(Protocol):
    """What the pipeline and the delivery loop need from an output's queue."""

    durable: bool
    """True when what the queue holds survives a restart (the spool)."""

    def is_full(self) -> bool:
        """Tell whether the next ``put`` would overflow."""

    def put(self, delivery: Delivery) -> Delivery | None:
        """Enqueue; on overflow with drop_oldest return the dropped delivery (the caller counts it)."""

    async def get_batch(self, max_items: int) -> list[Delivery]:
        """Wait for at least one delivery and take up to ``max_items`` in order."""

    def done(self, deliveries: list[Delivery]) -> None:
        """Forget deliveries that were delivered or given up on."""

    def retrying(self, deliveries: list[Delivery]) -> None:
        """Record that these in-flight deliveries failed and stay queued (their attempts grew)."""

    def dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        """Keep an alert the output gave up on; ``done`` is called for it afterwards."""

    def depth(self) -> int:
        """Return how many deliveries are queued or in flight."""

    def oldest_ns(self) -> int | None:
        """Return when the oldest queued or in-flight alert was received."""


MEMORY_QUEUE_MAX_BYTES = 32 * 1024 * 1024
"""Bytes of alert JSON a memory queue holds when ``max_bytes`` is not set; about three times that in RAM."""

DropReporter = Callable[[str, str, str, str], None]
"""Called with (output, reason, alert id, rule) for each alert a queue drops."""


def drop_reporter(metrics: Metrics) -> DropReporter:
    """Return the one function that counts and logs a dropped alert, shared by every kind of queue."""
    log = get_logger("queue")

    def report(output: str, reason: str, alert_id: str, rule: str) -> None:
        metrics.lost.labels(output, reason).inc()
        log.error("alert_lost", output=output, reason=reason, alert_id=alert_id, rule=rule)

    return report


class MemoryQueue:
    """A FIFO bounded in items and in bytes of alert JSON; what it holds is lost if the process dies."""

    durable = False

    def __init__(
        self,
        max_items: int,
        overflow: str,
        *,
        max_bytes: int | None = None,
        name: str = "",
        report_drop: DropReporter | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes if max_bytes is not None else MEMORY_QUEUE_MAX_BYTES
        self.overflow = overflow
        self.name = name
        self._report_drop = report_drop
        self._items: deque[Delivery] = deque()
        self._in_flight: list[Delivery] = []
        self._bytes = 0
        self._ready = asyncio.Event()

    def is_full(self) -> bool:
        return len(self._items) + len(self._in_flight) >= self.max_items or self._bytes >= self.max_bytes

    def put(self, delivery: Delivery) -> Delivery | None:
        """Enqueue; with drop_oldest, drop the oldest queued alerts until this one fits.

        The first dropped delivery is returned for the caller to report; a large alert can need more
        drops, which go to ``report_drop``. With reject the alert is kept even over the bound: the
        pipeline checks ``is_full`` before it accepts alerts, so only a race gets here, and the bound is
        soft by one batch rather than an alert lost.
        """
        size = delivery.size_bytes = len(delivery.event.to_json())
        dropped: Delivery | None = None
        items = self._items
        if not items:
            # The delivery loop waits only on an empty queue, so only the first alert needs to wake it.
            self._ready.set()
        elif self.overflow != "reject":
            while items and self._over_limit(size):
                victim = self._items.popleft()
                self._bytes -= victim.size_bytes
                if dropped is None:
                    dropped = victim
                elif self._report_drop is not None:
                    self._report_drop(self.name, "queue_full", victim.event.id, victim.event.rule)
        items.append(delivery)
        self._bytes += size
        return dropped

    def _over_limit(self, incoming: int) -> bool:
        count = len(self._items) + len(self._in_flight)
        return count >= self.max_items or self._bytes + incoming > self.max_bytes

    async def get_batch(self, max_items: int) -> list[Delivery]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        count = min(max_items, len(self._items))
        batch = [self._items.popleft() for _ in range(count)]
        self._in_flight.extend(batch)
        return batch

    def done(self, deliveries: list[Delivery]) -> None:
        if len(deliveries) == len(self._in_flight):
            # The usual case, a whole batch delivered: what is done is always in flight, so all of it is.
            self._in_flight = []
        else:
            finished = set(map(id, deliveries))
            self._in_flight = [d for d in self._in_flight if id(d) not in finished]
        self._bytes -= sum([d.size_bytes for d in deliveries])

    def retrying(self, deliveries: list[Delivery]) -> None:
        """Do nothing: the attempts live on the in-memory deliveries."""

    def dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        """Do nothing: without a spool a dead letter is only logged and counted."""

    def depth(self) -> int:
        return len(self._items) + len(self._in_flight)

    def oldest_ns(self) -> int | None:
        candidates = [d.event.received_ns for d in self._in_flight[:1]]
        if self._items:
            candidates.append(self._items[0].event.received_ns)
        return min(candidates) if candidates else None
