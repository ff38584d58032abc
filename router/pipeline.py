"""The pipeline between the ingests and the output queues: stages, then routing, then fan-out.

Ingests call ``submit``, which only queues the alert, or ``accept``, which also waits for the spool's
commit, so the HTTP answer never waits for an output (Falco's output thread blocks on it). One task
runs the stages (enrichment, policy) and routing in arrival order and puts each alert on the queue of
every output it is routed to.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from router.event import Event
from router.logs import get_logger
from router.metrics import Metrics, Tally
from router.queue import Delivery, OutputQueue, drop_reporter
from router.routing import Plan, Router


class Stage(Protocol):
    """An enrichment or policy stage: takes an event, returns it (changed or annotated).

    A stage that must wait (for example for a pod the watch has not delivered yet) returns an
    awaitable; the pipeline then finishes that alert in its own task so other alerts are not held up.
    """

    name: str

    def process(self, event: Event) -> Event | Awaitable[Event]:
        """Process one event."""


class Backpressure(Exception):  # noqa: N818 - a flow-control signal that the ingest turns into 503
    """The router cannot take more alerts right now, so the ingest returns 503 for the sender to retry."""


class NotPersisted(Backpressure):
    """The alerts are queued in memory but the spool could not persist them, so a restart would lose them."""


class Journal(Protocol):
    """Durable record of accepted and routed alerts (the spool); without one, alerts live in memory."""

    async def accepted(self, events: Sequence[Event]) -> None:
        """Persist accepted alerts; return once they are committed, raise when they cannot be."""

    def routed(self, event: Event, placed: Sequence[tuple[str, Delivery]]) -> None:
        """Record the deliveries of a routed alert (none when it matched no route)."""


class Pipeline:
    """Moves accepted alerts through the stages and routing onto the output queues."""

    def __init__(
        self,
        router: Router,
        queues: dict[str, OutputQueue],
        metrics: Metrics,
        stages: Sequence[Stage] = (),
        max_pending: int = 10_000,
        *,
        journal: Journal | None = None,
    ) -> None:
        self.router = router
        self.queues = queues
        self.metrics = metrics
        self._report_drop = drop_reporter(metrics)
        self.stages = list(stages)
        self.journal = journal
        self.log = get_logger("pipeline")
        # A deque and two flags rather than an asyncio.Queue: its put_nowait and get_nowait cost about a
        # microsecond per alert, and the run loop takes whole bursts anyway.
        self._inbox: deque[Event] = deque()
        self._max_pending = max_pending
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._waiting: set[asyncio.Task[None]] = set()
        self._busy = 0
        self.accepting = True
        self._reject_queues = [q for q in queues.values() if getattr(q, "overflow", "") == "reject"]
        self.observers: list[Callable[[Event], None]] = []
        """Called with each processed alert before routing; they read it and must not change or block it."""
        self.notifying: frozenset[str] = frozenset()
        """Outputs that page people; the policy annotations hold alerts back from them (see routing.held_back)."""
        # Looking up a labelled child and taking its lock cost more than the count, so each route has a
        # tally. The router can be replaced on reload, so they are added on first use, not all up front.
        self._routed: dict[str, Tally] = {}

    def submit(self, events: Sequence[Event]) -> None:
        """Queue alerts for processing, all or none; raises ``Backpressure`` when there is no room."""
        if not self.accepting:
            raise Backpressure("the router is shutting down")
        if self._max_pending - len(self._inbox) < len(events):
            raise Backpressure("the pipeline inbox is full")
        for queue in self._reject_queues:
            if queue.is_full():
                raise Backpressure("an output queue with overflow: reject is full")
        for event in events:
            if event.priority is None:
                self.metrics.priority_unknown.inc()
        self._inbox.extend(events)
        self._arrived.set()

    async def accept(self, events: Sequence[Event]) -> None:
        """Queue alerts like ``submit``, then wait until the journal has persisted them.

        Raises ``Backpressure`` when there is no room, and ``NotPersisted`` when the journal cannot write:
        then the alerts are already queued and may still be delivered, so a sender that retries may cause
        a duplicate.
        """
        # Processing here when nothing is queued ahead would save the run task's wake-up, but the HTTP
        # response would then wait for the stages and routing. With one connection, as Falco sends, the
        # router served 4,480 alerts/s that way against 4,940-5,110 without, so the work comes after.
        self.submit(events)
        if self.journal is not None:
            try:
                await self.journal.accepted(events)
            except Exception as exc:
                raise NotPersisted(f"the spool cannot persist the alert: {exc}") from exc

    async def resubmit(self, event: Event) -> None:
        """Queue an alert already persisted by the journal (resumed after a restart), waiting for room."""
        while len(self._inbox) >= self._max_pending:
            self._room.clear()
            await self._room.wait()
        self._inbox.append(event)
        self._arrived.set()

    async def run(self) -> None:
        """Process alerts in arrival order until cancelled."""
        inbox = self._inbox
        while True:
            if not inbox:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            self._busy += 1
            try:
                # The whole burst without suspending: one await per burst rather than one per alert.
                while inbox:
                    self._process(inbox.popleft())
            finally:
                self._busy -= 1
                self._room.set()

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
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # a faulty observer must not stop the alert from being delivered
                self.log.exception("observer_failed", observer=getattr(observer, "__qualname__", repr(observer)))
        if event.annotations.get("test") is True:
            # The synthetic alert of POST /test checks every output, whatever the routes and policy say.
            plan = Plan(routes=["test"], outputs=list(self.queues))
        else:
            plan = self.router.plan(event, self.notifying)
        if not plan.routes:
            self.metrics.alerts_unrouted.inc()
            self.log.debug("alert_unrouted", alert_id=event.id, rule=event.rule)
            if self.journal is not None:
                self.journal.routed(event, ())
            return
        for route in plan.routes:
            tally = self._routed.get(route)
            if tally is None:
                tally = self._routed[route] = self.metrics.tally(self.metrics.alerts_routed.labels(route))
            tally.inc()
        for name, reason in plan.held.items():
            self.metrics.policy_held_back.labels(name, reason).inc()
        placed: list[tuple[str, Delivery]] = []
        for name in plan.outputs:
            delivery = Delivery(event)
            placed.append((name, delivery))
            dropped = self.queues[name].put(delivery)
            if dropped is not None:
                self._report_drop(name, "queue_full", dropped.event.id, dropped.event.rule)
        if self.journal is not None:
            self.journal.routed(event, placed)

    def is_idle(self) -> bool:
        """Tell whether nothing is waiting in the pipeline or on any output queue."""
        return (
            not self._inbox
            and self._busy == 0
            and not self._waiting
            and all(q.depth() == 0 for q in self.queues.values())
        )

    async def wait_idle(self, poll_s: float = 0.01) -> None:
        """Wait until every accepted alert has been delivered or given up on."""
        # Polled: idleness spans the inbox, stage tasks and every output queue, which share no event.
        while not self.is_idle():  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
