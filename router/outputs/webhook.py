"""Webhook output: send each alert as a JSON body to an HTTP endpoint, or several alerts per request.

With ``batch`` set, one request carries up to ``batch.max_alerts`` alerts, and its response decides
for all of them: a failed request is retried as a whole.

Classification of responses::

    2xx                                   delivered
    408, 429 (Retry-After honoured), 5xx  -> RetriableError("http_<status>")
    connection failures                   -> RetriableError("connection_failed")
    no response within timeout_s          -> RetriableError("timeout")
    301, 302, 303, 307, 308               -> PermanentError("redirect"); redirects are not followed, because
                                             following one could turn the POST into a GET that drops the body
    other 4xx and other statuses          -> PermanentError("http_<status>")
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final

import aiohttp
from yarl import URL

from router.config.outputs import WebhookOutputConfig
from router.event import Event
from router.outputs.base import DeliveryError, Output, OutputStartError, PermanentError, RetriableError
from router.outputs.slack import retry_after_s
from router.outputs.webhook_request import WebhookRequest, build_batch_request, build_request

REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def classify(status: int, headers: Mapping[str, str] | None = None) -> DeliveryError | None:
    """Return the delivery error for an HTTP status, or None when the alert was delivered."""
    if 200 <= status < 300:
        return None
    if status in REDIRECTS:
        location = next((v for k, v in (headers or {}).items() if k.lower() == "location"), "")
        return PermanentError("redirect", f"HTTP {status} to {location[:200]}; set url to the final address")
    if status in (408, 429) or status >= 500:
        return RetriableError(f"http_{status}", f"HTTP {status}", retry_after_s=retry_after_s(headers))
    return PermanentError(f"http_{status}", f"HTTP {status}")


class WebhookOutput(Output):
    """Sends each alert, or each batch of alerts, as one HTTP request over a reused connection pool."""

    type_name = "webhook"
    notifies = True

    def __init__(self, name: str, config: WebhookOutputConfig) -> None:
        super().__init__(name, config)
        self.config: WebhookOutputConfig = config
        if config.batch is not None:
            self.max_batch = config.batch.max_alerts
        # Parsed once: aiohttp would parse a string URL again on every request.
        self._url = URL(str(config.url))
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}
        self._signing_key: bytes | None = None
        self._server_name = config.tls.server_name if config.tls is not None else None

    async def start(self) -> None:
        headers = dict(self.config.headers)
        for header, secret in self.config.secret_headers.items():
            try:
                headers[header] = secret.reveal()
            except LookupError as exc:
                raise OutputStartError(f"secret header {header} unavailable: {exc}") from exc
        if self.config.signing_key is not None:
            try:
                self._signing_key = self.config.signing_key.reveal().encode("utf-8")
            except LookupError as exc:
                raise OutputStartError(f"signing_key unavailable: {exc}") from exc
        try:
            ssl_context = self.config.tls.ssl_context() if self.config.tls is not None else None
        except OSError as exc:
            raise OutputStartError(f"cannot load the TLS files: {exc}") from exc
        self._headers = headers
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)
        )

    async def send(self, event: Event) -> None:
        if self.config.batch is not None:
            (error,) = await self.send_batch([event])
            if error is not None:
                raise error
            return
        await self._post(build_request(event, self._headers, signing_key=self._signing_key, now_s=int(time.time())))

    async def send_batch(self, events: Sequence[Event]) -> list[DeliveryError | None]:
        """Send the alerts one request each or, with ``batch`` set, in one request that succeeds or fails for all."""
        if self.config.batch is None:
            return await super().send_batch(events)
        request = build_batch_request(
            events,
            self._headers,
            body_format=self.config.batch.format,
            signing_key=self._signing_key,
            now_s=int(time.time()),
        )
        try:
            await self._post(request)
        except DeliveryError as exc:
            return [exc] * len(events)
        return [None] * len(events)

    async def _post(self, request: WebhookRequest) -> None:
        assert self._session is not None, "start() was not called"
        try:
            async with self._session.request(
                self.config.method,
                self._url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                server_hostname=self._server_name,
            ) as response:
                await response.read()
                error = classify(response.status, response.headers)
        except TimeoutError as exc:
            raise RetriableError("timeout", f"no response within {self.config.timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            raise RetriableError("connection_failed", type(exc).__name__) from exc
        if error is not None:
            raise error

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
