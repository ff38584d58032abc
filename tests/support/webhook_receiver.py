"""A webhook receiver on 127.0.0.1 that records requests and responds with a scripted status sequence."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from aiohttp import web

from tests.support.http_server import RecordingServer

RECEIVER_PATH = "/hook"


class WebhookReceiver(RecordingServer):
    """Responds 200 unless scripted; ``delivered`` contains the requests that got a 2xx."""

    def __init__(self) -> None:
        super().__init__()
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.failing_status: int | None = None
        self.delivered: list[Any] = []

    @property
    def url(self) -> str:
        """Return the receiver URL."""
        return f"{self.base_url}{RECEIVER_PATH}"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", RECEIVER_PATH, self._receive)

    def answer_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Respond to the next ``times`` requests with ``status``."""
        self.script.extend([(status, headers or {})] * times)

    def fail_until_recovered(self, status: int = 503) -> None:
        """Respond to every request with ``status`` until ``recover`` is called."""
        self.failing_status = status

    def recover(self) -> None:
        """Respond 200 again."""
        self.failing_status = None

    async def _receive(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        if self.script:
            status, headers = self.script.popleft()
        elif self.failing_status is not None:
            status, headers = self.failing_status, {}
        else:
            status, headers = 200, {}
        if 200 <= status < 300:
            self.delivered.append(recorded)
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def webhook_receiver() -> Any:
    """A webhook receiver for one test."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
