"""``SpoolQueue``: an output's queue kept in the spool, with only a page of it in memory.

Deliveries are numbered by the spool's sequence and leave in that order. The queue keeps at most
``page_items`` deliveries in memory. Once that page is full, new deliveries exist only as spool rows
(the queue is "spilled") and are read back one page at a time, so memory stays bounded however long
an output is down.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from router.config.outputs import QueueConfig
from router.queue import Delivery
from router.spool import store as ops
from router.spool.codec import decode_event
from router.spool.store import SpoolStore

DropReporter = Callable[[str, str, str, str], None]
"""Called with (output, reason, alert id, rule) for a loss the queue cannot return from ``put``."""


class SpoolQueue:
    """One output's durable queue."""

    durable = True

    def __init__(
        self,
        name: str,
        store: SpoolStore,
        config: QueueConfig,
        *,
        page_items: int,
        encode: Callable[[Delivery], bytes],
        report_drop: DropReporter,
    ) -> None:
        self.name = name
        self.max_items = config.max_items
        self.max_bytes = config.max_bytes
        self.overflow = config.overflow
        self.page_items = page_items
        self._store = store
        self._encode = encode
        self._report_drop = report_drop
        self._page: deque[Delivery] = deque()
        self._in_flight: list[Delivery] = []
        self._sizes: dict[int, int] = {}
        self._count = 0
        self._bytes = 0
        # Rows with seq in (_loaded_seq, _last_put_seq] may wait on disk only while _spilled is true.
        self._spilled = False
        self._loaded_seq = 0
        self._last_put_seq = 0
        # Drops decided while the page was empty; applied to the next rows read from disk.
        self._drop_debt = 0
        self._ready = asyncio.Event()

    def restore(self, count: int, size_bytes: int) -> None:
        """Account for deliveries left in the spool by an earlier process; they are read on demand."""
        self._count = count
        self._bytes = size_bytes
        self._spilled = count > 0
        self._ready.set()

    @property
    def size_bytes(self) -> int:
        """Body bytes of the deliveries this queue holds."""
        return self._bytes

    def memory_items(self) -> int:
        """Return the number of deliveries in memory: at most ``page_items`` plus one batch."""
        return len(self._page) + len(self._in_flight)

    def is_full(self) -> bool:
        if self._count >= self.max_items:
            return True
        return self.max_bytes is not None and self._bytes >= self.max_bytes

    def put(self, delivery: Delivery) -> Delivery | None:
        """Number and enqueue a delivery; the spool row is written by ``Spool.routed``.

        On overflow with drop_oldest the oldest delivery is dropped and returned, so the caller reports it.
        A large alert under ``max_bytes`` can need more drops, and those go to ``report_drop``.
        """
        size = len(self._encode(delivery))
        delivery.seq = self._store.next_seq()
        dropped: Delivery | None = None
        if self.overflow == "drop_oldest":
            while self._count and self._over_limit(size):
                victim = self._drop_oldest()
                if victim is None:
                    break
                if dropped is None:
                    dropped = victim
                else:
                    self._report_drop(self.name, "queue_full", victim.event.id, victim.event.rule)
        self._count += 1
        self._bytes += size
        self._last_put_seq = delivery.seq
        if not self._spilled and len(self._page) < self.page_items:
            self._page.append(delivery)
            self._sizes[delivery.seq] = size
            self._loaded_seq = delivery.seq
        else:
            self._spilled = True
        self._ready.set()
        return dropped

    def _over_limit(self, incoming_bytes: int) -> bool:
        if self._count - self._drop_debt >= self.max_items:
            return True
        return self.max_bytes is not None and self._bytes + incoming_bytes > self.max_bytes

    def _drop_oldest(self) -> Delivery | None:
        if not self._page:
            if self._spilled and self._drop_debt < self._count:
                # The oldest waiting alert is on disk; drop it when its page is read.
                self._drop_debt += 1
            return None
        victim = self._page.popleft()
        self._forget([victim])
        self._store.submit_delete([victim.seq], "drop")
        return victim

    async def get_batch(self, max_items: int) -> list[Delivery]:
        while not self._page:
            if self._spilled:
                await self._read_page()
                continue
            self._ready.clear()
            await self._ready.wait()
        count = min(max_items, len(self._page))
        batch = [self._page.popleft() for _ in range(count)]
        self._in_flight.extend(batch)
        return batch

    async def _read_page(self) -> None:
        # Rows put before this point may still sit in the writer's queue; wait for their commit.
        await self._store.barrier()
        last_put = self._last_put_seq
        rows = await self._store.read_page(self.name, self._loaded_seq, self.page_items)
        for row in rows:
            self._loaded_seq = max(self._loaded_seq, row.seq)
            try:
                event = decode_event(row.body)
            except (ValueError, KeyError, TypeError) as exc:
                self._discard_row(row.seq, len(row.body), str(exc))
                continue
            delivery = Delivery(event, attempts=row.attempts, seq=row.seq)
            if self._drop_debt:
                self._drop_debt -= 1
                self._sizes[row.seq] = len(row.body)
                self._forget([delivery])
                self._store.submit_delete([row.seq], "drop")
                self._report_drop(self.name, "queue_full", event.id, event.rule)
                continue
            self._sizes[row.seq] = len(row.body)
            self._page.append(delivery)
        if not rows or (len(rows) < self.page_items and self._loaded_seq >= last_put):
            if not rows and self._loaded_seq < last_put:
                # Only a failed spool write (logged by the writer) leaves a put row missing on disk.
                self._loaded_seq = last_put
            self._spilled = self._loaded_seq < self._last_put_seq

    def _discard_row(self, seq: int, size: int, error: str) -> None:
        # Kept as a dead letter so an operator can inspect the bytes; the alert id is in the row.
        self._count -= 1
        self._bytes -= size
        self._store.submit(
            ops.move_to_dead_letters(
                seq, "unreadable", error, attempts=0, dead_ns=time.time_ns(), keep=self._store.max_dead_letters
            ),
            "dead_letter",
            reads_seq=seq,
        )
        self._report_drop(self.name, "unreadable", f"seq:{seq}", "")

    def done(self, deliveries: list[Delivery]) -> None:
        finished = {d.seq for d in deliveries}
        self._in_flight = [d for d in self._in_flight if d.seq not in finished]
        self._forget(deliveries)
        self._store.submit_delete(finished, "delivered")

    def _forget(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._count -= 1
            self._bytes -= self._sizes.pop(delivery.seq, 0)

    def retrying(self, deliveries: list[Delivery]) -> None:
        self._store.submit(ops.set_attempts([(d.attempts, d.seq) for d in deliveries]), "attempts")

    def dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        self._store.submit(
            ops.move_to_dead_letters(
                delivery.seq,
                reason,
                error,
                attempts=delivery.attempts,
                dead_ns=time.time_ns(),
                keep=self._store.max_dead_letters,
            ),
            "dead_letter",
            reads_seq=delivery.seq,
        )

    def depth(self) -> int:
        return self._count

    def oldest_ns(self) -> int | None:
        candidates = [d.event.received_ns for d in self._in_flight[:1]]
        if self._page:
            candidates.append(self._page[0].event.received_ns)
        return min(candidates) if candidates else None
