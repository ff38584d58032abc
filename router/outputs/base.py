"""The contract between the delivery loop and an output, and the errors an output raises.

Exception tree::

    DeliveryError          an attempt failed; .reason is a short fixed label for metrics
    ├── RetriableError     try again later (5xx, 408, 429, timeouts, connection errors)
    └── PermanentError     retrying cannot help (4xx, invalid payload): dead-letter the alert
    OutputStartError       the output cannot start; the router refuses to start without it

Outputs raise and never log a failed delivery themselves: the delivery loop logs and counts it once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

from router.event import Event


class DeliveryError(Exception):
    """A delivery attempt failed."""

    retriable: ClassVar[bool] = False

    def __init__(self, reason: str, detail: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


class RetriableError(DeliveryError):
    """The attempt failed for a reason that may go away: retry with backoff."""

    retriable = True


class PermanentError(DeliveryError):
    """The attempt failed for a reason a retry cannot fix: dead-letter the alert."""


class OutputStartError(Exception):
    """An output could not start (bad credentials, unreachable broker at start-up, unwritable file)."""


class Output(abc.ABC):
    """One configured output instance. Subclasses build the payload with a pure function and send it."""

    type_name: ClassVar[str]
    notifies: ClassVar[bool] = False
    """True for outputs that page people (Slack, webhooks): allow-list and dedup hold alerts back from them."""
    max_batch: int = 1
    """How many alerts the delivery loop hands to ``send_batch`` at once. An output may set it per instance."""
    waits_on_io: bool = True
    """Whether ``send_batch`` can wait on I/O. Set False only for an output that never waits (a write to a
    local stream): the delivery loop then skips its attempt timeout (about 4 µs per attempt), so it could
    not cut a hung attempt of that output."""

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self.unavailable_reason: str | None = None
        """Set by ``start`` when the output started but its peer is not reachable yet (a short reason)."""

    async def start(self) -> None:  # noqa: B027 - optional hook, most outputs need no start-up work
        """Connect or open what the output needs; raise ``OutputStartError`` when it cannot."""

    @abc.abstractmethod
    async def send(self, event: Event) -> None:
        """Deliver one alert or raise a ``DeliveryError``."""

    async def send_batch(self, events: Sequence[Event]) -> list[DeliveryError | None]:
        """Deliver several alerts; return, per alert in order, None when delivered or the error."""
        results: list[DeliveryError | None] = []
        for event in events:
            try:
                await self.send(event)
            except DeliveryError as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources; must return within a bounded time even if the peer is gone."""
