"""An output that records what it receives, for tests through the real app and pipeline."""

from __future__ import annotations

from router.event import Event
from router.outputs.base import Output


class RecordingOutput(Output):
    """Stores every alert it is sent. ``notifies`` tells whether it plays Slack/webhook or Kafka."""

    type_name = "recording"

    def __init__(self, name: str, *, notifies: bool) -> None:
        super().__init__(name, None)
        self.received: list[Event] = []
        self._notifies = notifies

    @property  # type: ignore[misc, override]
    def notifies(self) -> bool:
        return self._notifies

    async def send(self, event: Event) -> None:
        self.received.append(event)


class Clock:
    """A settable clock in seconds, injected instead of time.time."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
