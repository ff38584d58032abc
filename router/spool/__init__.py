"""The durable spool: accepted alerts and per-output deliveries kept on disk across outages and restarts.

Life of an alert with the spool on:

1. The ingest calls ``Pipeline.accept``, which writes the alert to the ``accepted`` table. The ingest
   responds only after the group commit that contains it.
2. After the stages and routing, ``Spool.routed`` deletes the accepted row and writes one delivery row
   per routed output, in one transaction.
3. Each output's ``SpoolQueue`` hands the rows to its delivery loop in sequence order and deletes each
   row once the alert is delivered or dead-lettered.

On start, ``Spool.resume`` sends accepted but unrouted alerts through the pipeline again, and every
queue continues from its oldest row. Delivery is at least once: an alert delivered just before a crash
and before its row was deleted is delivered again, with the same id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from router.config.outputs import QueueConfig
from router.config.spool import SpoolConfig
from router.event import Event
from router.logs import get_logger
from router.metrics import Metrics
from router.queue import Delivery, drop_reporter
from router.spool.codec import decode_event, encode_event
from router.spool.queue import SpoolQueue
from router.spool.store import SpoolError, SpoolStore

if TYPE_CHECKING:
    from router.pipeline import Pipeline

__all__ = ["Spool", "SpoolError", "SpoolQueue"]

# Accepted alerts read per query when they are resumed at start-up.
RESUME_PAGE_ITEMS = 500


class Spool:
    """The spool of one router process: the store, one queue per output, and the pipeline's journal."""

    def __init__(self, config: SpoolConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.log = get_logger("spool")
        self.store = SpoolStore(config.path, config.synchronous, config.max_dead_letters)
        self.queues: dict[str, SpoolQueue] = {}
        # The pipeline puts one event on every routed output in a row, so caching the last body
        # encodes each event once.
        self._cached_event: Event | None = None
        self._cached_body = b""

    def create_queue(self, output: str, config: QueueConfig) -> SpoolQueue:
        """Create the durable queue of one output."""
        queue = SpoolQueue(
            output,
            self.store,
            config,
            page_items=self.config.page_items,
            encode=self._body_of,
            report_drop=drop_reporter(self.metrics),
        )
        self.queues[output] = queue
        return queue

    def open(self) -> None:
        """Open the database and account for what an earlier process left; raises ``SpoolError``."""
        self.store.open()
        totals = self.store.output_totals()
        for output, (count, size) in totals.items():
            queue = self.queues.get(output)
            if queue is None:
                # NOTE: rows of an output removed from the config stay in the spool, and are delivered
                # only if an output of that name is configured again.
                self.log.warning("spool_output_unknown", output=output, alerts=count)
                continue
            queue.restore(count, size)
        self.store.start()
        pending = {name: totals.get(name, (0, 0))[0] for name in self.queues}
        self.log.info("spool_opened", path=str(self.config.path), pending=pending)

    async def close(self) -> None:
        """Commit the writes still queued and close the database."""
        await self.store.close()

    async def resume(self, pipeline: Pipeline) -> int:
        """Send alerts accepted but not routed before the last stop through the pipeline again, in order."""
        after = 0
        resumed = 0
        while True:
            rows = await self.store.read_accepted(after, RESUME_PAGE_ITEMS)
            if not rows:
                break
            for seq, body in rows:
                after = seq
                try:
                    event = decode_event(body)
                except (ValueError, KeyError, TypeError) as exc:
                    self.log.error("alert_lost", reason="unreadable", error=str(exc), seq=seq)
                    continue
                await pipeline.resubmit(event)
                resumed += 1
        if resumed:
            self.log.info("spool_resumed", alerts=resumed)
        return resumed

    # The pipeline's journal

    async def accepted(self, events: Sequence[Event]) -> None:
        """Write accepted alerts and wait for the commit; raises ``SpoolError``."""
        rows = [(event.id, encode_event(event)) for event in events]
        await self.store.commit_accepted(rows)

    def routed(self, event: Event, placed: Sequence[tuple[str, Delivery]]) -> None:
        """Replace the accepted row of a routed alert by its delivery rows, in one transaction."""
        rows = []
        for output, delivery in placed:
            if output in self.queues:
                rows.append((delivery.seq, output, event.id, self._body_of(delivery)))
        self.store.submit_routing(event.id, rows)

    def update_gauges(self) -> None:
        """Export each queue's size in bytes."""
        for name, queue in self.queues.items():
            self.metrics.spool_bytes.labels(name).set(queue.size_bytes)

    def _body_of(self, delivery: Delivery) -> bytes:
        if delivery.event is not self._cached_event:
            self._cached_event = delivery.event
            self._cached_body = encode_event(delivery.event)
        return self._cached_body
