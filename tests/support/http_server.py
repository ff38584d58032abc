"""A small aiohttp server on 127.0.0.1 that records every request, shared by the Slack and webhook stand-ins."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.data import free_port


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float = field(default_factory=time.monotonic)
    """When it arrived (monotonic clock), to check gaps such as a Retry-After being honoured."""


class RecordingServer:
    """Base of the stand-ins: runs an aiohttp application on 127.0.0.1:port and records requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        """Return http://127.0.0.1:port."""
        return f"http://127.0.0.1:{self.port}"

    async def record(self, request: web.Request) -> RecordedRequest:
        """Read and record one request."""
        recorded = RecordedRequest(request.method, request.path, dict(request.headers), await request.read())
        self.requests.append(recorded)
        return recorded

    async def start(self) -> None:
        """Start listening."""
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
