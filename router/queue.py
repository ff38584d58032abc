"""Per-output queues. Each output has its own, so a slow output falls behind without delaying others.

``MemoryQueue`` is bounded and applies the configured overflow policy. A durable queue implements the
same ``OutputQueue`` protocol.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from router.event import Event


@dataclass(slots=True, eq=False)
class Delivery:
    """One alert on its way to one output."""

    event: Event
    attempts: int = 0
    first_error_ns: int = 0
    seq: int = 0
    last_reason: str = ""


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


class MemoryQueue:
    """A bounded in-memory FIFO; what it holds is lost if the process dies."""

    durable = False

    def __init__(self, max_items: int, overflow: str) -> None:
        self.max_items = max_items
        self.overflow = overflow
        self._items: deque[Delivery] = deque()
        self._in_flight: list[Delivery] = []
        self._ready = asyncio.Event()

    def is_full(self) -> bool:
        return len(self._items) + len(self._in_flight) >= self.max_items

    def put(self, delivery: Delivery) -> Delivery | None:
        dropped = None
        if self.is_full():
            if self.overflow == "reject":
                # The pipeline checks is_full() before accepting an alert, so this is a race with
                # another producer; keep the alert rather than drop it, the bound is soft by one batch.
                pass
            elif self._items:
                dropped = self._items.popleft()
        self._items.append(delivery)
        self._ready.set()
        return dropped

    async def get_batch(self, max_items: int) -> list[Delivery]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        count = min(max_items, len(self._items))
        batch = [self._items.popleft() for _ in range(count)]
        self._in_flight.extend(batch)
        return batch

    def done(self, deliveries: list[Delivery]) -> None:
        finished = set(map(id, deliveries))
        self._in_flight = [d for d in self._in_flight if id(d) not in finished]

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
