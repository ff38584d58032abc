"""A webhook receiver on 127.0.0.1 and a minimal webhook output for the spool tests.

``PostOutput`` replaces ``router.outputs.webhook`` until that module is merged. It posts the outgoing
alert as JSON and classifies failures as the output contract requires: connection errors, 5xx, 408 and
429 are retriable, and other 4xx are permanent. It lives under tests/ so that no production
config can select it.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.event import Event
from router.outputs.base import Output, OutputStartError, PermanentError, RetriableError

ALERT_ID_HEADER = "X-Falco-Router-Alert-Id"


def webhook_module_available() -> bool:
    """Tell whether the production webhook output is in this checkout."""
    return importlib.util.find_spec("router.outputs.webhook") is not None


class PostOutput(Output):
    """POST each alert to ``config.url``."""

    type_name = "webhook"
    notifies = True

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        try:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        except RuntimeError as exc:
            raise OutputStartError(str(exc)) from exc

    async def send(self, event: Event) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: event.id}
        try:
            async with self._session.post(str(self.config.url), data=event.to_json(), headers=headers) as response:
                await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetriableError("connection", repr(exc)) from exc
        if status < 300:
            return
        retry_after_s = float(retry_after) if retry_after and retry_after.isdigit() else None
        if status >= 500 or status in (408, 429):
            raise RetriableError(f"http_{status}", retry_after_s=retry_after_s)
        raise PermanentError(f"http_{status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


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
