"""A Slack stand-in on 127.0.0.1: chat.postMessage, chat.update and an incoming-webhook path.

It checks the Block Kit limits Slack enforces and returns ``invalid_blocks`` or ``msg_too_long`` when
a message breaks them. It can be scripted to respond with 429 and Retry-After, a 5xx or an error code.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.support.http_server import RecordingServer

WEBHOOK_PATH = "/services/T000/B000/test-webhook"


@dataclass
class Fault:
    """One scripted response: an HTTP status, an optional Slack error code and optional Retry-After seconds."""

    status: int
    error: str | None = None
    retry_after_s: int | None = None


def limit_problem(message: dict[str, Any]) -> str | None:
    """Return the Slack error code a message would get for breaking a Block Kit limit, or None."""
    if len(message.get("text", "")) > 40_000:
        return "msg_too_long"
    blocks: list[dict[str, Any]] = list(message.get("blocks", []))
    for attachment in message.get("attachments", []):
        blocks.extend(attachment.get("blocks", []))
    if len(blocks) > 50:
        return "invalid_blocks"
    total = 0
    for block in blocks:
        texts = []
        if "text" in block:
            if len(block["text"]["text"]) > 3000:
                return "invalid_blocks"
            texts.append(block["text"]["text"])
        fields = block.get("fields", [])
        if len(fields) > 10 or any(len(f["text"]) > 2000 for f in fields):
            return "invalid_blocks"
        texts.extend(f["text"] for f in fields)
        texts.extend(e.get("text", "") for e in block.get("elements", []))
        total += sum(len(t) for t in texts)
    if total > 4000:
        return "msg_too_long"
    return None


class SlackServer(RecordingServer):
    """Records every call; ``posted`` contains the messages Slack would have shown."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: deque[Fault] = deque()
        self.posted: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []

    @property
    def api_url(self) -> str:
        """Return the Web API base URL, for the output's base_url setting."""
        return f"{self.base_url}/api/"

    @property
    def webhook_url(self) -> str:
        """Return the incoming webhook URL."""
        return f"{self.base_url}{WEBHOOK_PATH}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/api/chat.update", self._update)
        app.router.add_post(WEBHOOK_PATH, self._incoming_webhook)

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        """Respond to the next ``times`` calls with ``fault``."""
        self.faults.extend([fault] * times)

    async def _parse(self, request: web.Request) -> tuple[dict[str, Any], Fault | None]:
        recorded = await self.record(request)
        fault = self.faults.popleft() if self.faults else None
        return json.loads(recorded.body or b"{}"), fault

    @staticmethod
    def _api_error(fault: Fault) -> web.Response:
        headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else None
        if fault.status >= 500 and fault.error is None:
            return web.Response(status=fault.status, text="upstream failure", headers=headers)
        error = fault.error or ("ratelimited" if fault.status == 429 else "internal_error")
        return web.json_response({"ok": False, "error": error}, status=fault.status, headers=headers)

    async def _post_message(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "") != "Bearer xoxb-test":
            await self.record(request)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        message, fault = await self._parse(request)
        if fault is not None:
            return self._api_error(fault)
        if "channel" not in message:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        problem = limit_problem(message)
        if problem is not None:
            return web.json_response({"ok": False, "error": problem})
        self.posted.append(message)
        return web.json_response({"ok": True, "channel": message["channel"], "ts": f"{len(self.posted)}.000100"})

    async def _update(self, request: web.Request) -> web.Response:
        message, fault = await self._parse(request)
        if fault is not None:
            return self._api_error(fault)
        problem = limit_problem(message)
        if problem is not None:
            return web.json_response({"ok": False, "error": problem})
        # Replace the message with that ts, as the channel would show it; ts values are "<n>.000100".
        index = int(str(message.get("ts", "0")).split(".")[0]) - 1
        if not 0 <= index < len(self.posted):
            return web.json_response({"ok": False, "error": "message_not_found"})
        self.updates.append(message)
        self.posted[index] = message
        return web.json_response({"ok": True, "channel": message.get("channel"), "ts": message.get("ts")})

    async def _incoming_webhook(self, request: web.Request) -> web.Response:
        message, fault = await self._parse(request)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else None
            return web.Response(status=fault.status, text=fault.error or "error", headers=headers)
        problem = limit_problem(message)
        if problem is not None:
            return web.Response(status=400, text=problem)
        self.posted.append(message)
        return web.Response(text="ok")


@pytest.fixture
async def slack_server() -> Any:
    """A Slack stand-in for one test."""
    server = SlackServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
