"""A webhook receiver on 127.0.0.1 for the spool tests, which record alert ids across router restarts."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from aiohttp import web


class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that records the alert ids it accepted.

    The first requests get the ``statuses``, one each, and later requests get 200.
    """

    def __init__(self, port: int = 0, statuses: list[int] | None = None) -> None:
        self.port = port
        self.statuses = list(statuses or [])
        self.accepted: list[str] = []
        self.attempted: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def duplicates(self) -> dict[str, int]:
        """Return the ids accepted more than once, with their counts."""
        return {alert_id: n for alert_id, n in Counter(self.accepted).items() if n > 1}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if self.port == 0:
            server: Any = site._server
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.attempted.append(body["uuid"])
        if self.statuses:
            return web.Response(status=self.statuses.pop(0), headers={"Retry-After": "0"})
        self.accepted.append(body["uuid"])
        self.bodies.append(body)
        return web.Response(status=200)
