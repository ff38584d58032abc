"""An in-process output that records what it is given, with scriptable failures."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from router.event import Event, loads
from router.outputs.base import DeliveryError, Output


class CollectingOutput(Output):
    """Records delivered alerts; ``failures`` is a queue of errors raised by the next attempts."""

    type_name = "stdout"

    def __init__(self, name: str = "collect", notifies: bool = False) -> None:
        super().__init__(name, config=None)
        self.events: list[Event] = []
        self.attempts: list[str] = []
        self.failures: deque[DeliveryError] = deque()
        self.arrived = asyncio.Event()
        self.notifies = notifies  # type: ignore[misc]

    async def send(self, event: Event) -> None:
        self.attempts.append(event.id)
        if self.failures:
            raise self.failures.popleft()
        self.events.append(event)
        self.arrived.set()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Event]:
        """Wait until ``count`` alerts were delivered; fail the test with what arrived otherwise."""
        async with asyncio.timeout(timeout_s):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events

    def dicts(self) -> list[dict[str, Any]]:
        """Return the delivered alerts as outgoing JSON documents."""
        return [loads(e.to_json()) for e in self.events]
