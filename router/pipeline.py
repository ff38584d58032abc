"""The pipeline between the ingests and the output queues: stages, then routing, then fan-out.

Ingests call ``submit``, which only queues the alert, so the HTTP answer never waits for an output
(Falco's output thread blocks on it). One task runs the stages (enrichment, policy) and routing in
arrival order and puts each alert on the queue of every output it is routed to.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Sequence
from typing import Protocol

from router.event import Event
from router.logs import get_logger
from router.metrics import Metrics
from router.queue import Delivery, OutputQueue
from router.routing import Router


class Stage(Protocol):
    """An enrichment or policy stage: takes an event, returns it (changed or annotated).

    A stage that must wait (for example for a pod the watch has not delivered yet) returns an
    awaitable; the pipeline then finishes that alert in its own task so other alerts are not held up.
    """

    name: str

    def process(self, event: Event) -> Event | Awaitable[Event]:
        """Process one event."""


class Backpressure(Exception):
    """The router cannot take more alerts right now; the ingest answers 503 so the sender retries."""


class Pipeline:
    """Moves accepted alerts through the stages and routing onto the output queues."""

    def __init__(
        self,
        router: Router,
        queues: dict[str, OutputQueue],
        metrics: Metrics,
        stages: Sequence[Stage] = (),
        max_pending: int = 10_000,
    ) -> None:
        self.router = router
        self.queues = queues
        self.metrics = metrics
        self.stages = list(stages)
        self.log = get_logger("pipeline")
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_pending)
        self._waiting: set[asyncio.Task[None]] = set()
        self._busy = 0
        self.accepting = True
        self._reject_queues = [q for q in queues.values() if getattr(q, "overflow", "") == "reject"]
        # Looking up a labelled child costs more than the increment, so each route's counter is kept.
        self._routed = {route.name: metrics.alerts_routed.labels(route.name) for route in router.routes}

    def submit(self, events: Sequence[Event]) -> None:
        """Queue alerts for processing, all or none; raises ``Backpressure`` when there is no room."""
        if not self.accepting:
            raise Backpressure("the router is shutting down")
        if self._inbox.maxsize - self._inbox.qsize() < len(events):
            raise Backpressure("the pipeline inbox is full")
        for queue in self._reject_queues:
            if queue.is_full():
                raise Backpressure("an output queue with overflow: reject is full")
        for event in events:
            if event.priority is None:
                self.metrics.priority_unknown.inc()
            self._inbox.put_nowait(event)

    async def run(self) -> None:
        """Process alerts in arrival order until cancelled."""
        inbox = self._inbox
        while True:
            event = await inbox.get()
            self._busy += 1
            try:
                self._process(event)
                # Take what else is already queued without suspending: one await per burst rather
                # than one per alert.
                while not inbox.empty():
                    self._process(inbox.get_nowait())
            finally:
                self._busy -= 1

    def _process(self, event: Event) -> None:
        for index, stage in enumerate(self.stages):
            result = stage.process(event)
            if inspect.isawaitable(result):
                task = asyncio.create_task(self._finish_later(result, index + 1), name=f"stage-{stage.name}")
                self._waiting.add(task)
                task.add_done_callback(self._waiting.discard)
                return
            event = result
        self.dispatch(event)

    async def _finish_later(self, pending: Awaitable[Event], next_stage: int) -> None:
        event = await pending
        for stage in self.stages[next_stage:]:
            result = stage.process(event)
            event = await result if inspect.isawaitable(result) else result
        self.dispatch(event)

    def dispatch(self, event: Event) -> None:
        """Route one processed alert and put it on each selected output queue."""
        outputs, routes = self.router.select(event)
        if not routes:
            self.metrics.alerts_unrouted.inc()
            self.log.debug("alert_unrouted", alert_id=event.id, rule=event.rule)
            return
        for route in routes:
            self._routed[route].inc()
        for name in outputs:
            dropped = self.queues[name].put(Delivery(event))
            if dropped is not None:
                self.metrics.lost.labels(name, "queue_full").inc()
                self.log.error(
                    "alert_lost",
                    output=name,
                    reason="queue_full",
                    alert_id=dropped.event.id,
                    rule=dropped.event.rule,
                )

    def is_idle(self) -> bool:
        """Tell whether nothing is waiting in the pipeline or on any output queue."""
        return (
            self._inbox.empty()
            and self._busy == 0
            and not self._waiting
            and all(q.depth() == 0 for q in self.queues.values())
        )

    async def wait_idle(self, poll_s: float = 0.01) -> None:
        """Wait until every accepted alert has been delivered or given up on."""
        while not self.is_idle():
            await asyncio.sleep(poll_s)
