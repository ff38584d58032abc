"""Slack output: post each alert with chat.postMessage (bot token) or an incoming webhook.

Translation of Slack responses::

    HTTP 429 or error "ratelimited"                  -> RetriableError("rate_limited", retry_after_s=Retry-After)
    HTTP 5xx, internal_error, service_unavailable ... -> RetriableError("server_error")
    connection failures                               -> RetriableError("connection_failed")
    no response within timeout_s                      -> RetriableError("timeout")
    invalid_blocks, msg_too_long, channel_not_found,
    invalid_auth and the other request errors         -> PermanentError(<Slack error code>)

Dedup: the first alert of a dedup group is posted and its message ts remembered (bounded); the group's
update, sent when its window closes, edits that message with chat.update so the channel shows one message
with the count and the distinct values. Without a remembered ts (incoming webhooks, or after a restart) the
update is posted as a new message.

The SDK's own retry handlers are turned off: the delivery loop retries, honouring Retry-After, so one
place decides and counts every retry. (The SDK's sync RateLimitErrorRetryHandler would also fail on the
async client.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Final

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from router.config.outputs import SlackOutputConfig
from router.event import Event
from router.outputs.base import DeliveryError, Output, OutputStartError, PermanentError, RetriableError
from router.outputs.slack_message import SlackOptions, build_message

# Slack error codes that a retry cannot fix, used as the error reason as they are (a fixed set).
PERMANENT_ERRORS: Final = frozenset(
    {
        "account_inactive",
        "action_prohibited",
        "channel_is_archived",
        "channel_not_found",
        "invalid_arguments",
        "invalid_attachments",
        "invalid_auth",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_payload",
        "invalid_token",
        "is_archived",
        "missing_scope",
        "msg_too_long",
        "no_service",
        "no_text",
        "not_authed",
        "not_in_channel",
        "posting_to_general_channel_denied",
        "restricted_action",
        "token_revoked",
        "too_many_attachments",
    }
)
RETRIABLE_ERRORS: Final = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# chat.update answers these when the message to edit is gone; the update is then posted as a new message.
UPDATE_TARGET_GONE: Final = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
# Messages of open dedup groups remembered for chat.update; the oldest are forgotten first.
POSTED_MESSAGES_MAX: Final = 10_000

# The SDK logs request URLs at debug level, and an incoming webhook URL is a secret.
_SDK_LOGGER = logging.getLogger("router.outputs.slack.sdk")
_SDK_LOGGER.setLevel(logging.WARNING)


def retry_after_s(headers: Any) -> float | None:
    """Return the Retry-After header in seconds, or None when absent or not a number of seconds."""
    if not headers:
        return None
    for name, value in dict(headers).items():
        if name.lower() == "retry-after":
            text = value[0] if isinstance(value, list) and value else value
            try:
                return max(float(text), 0.0)
            except (TypeError, ValueError):
                return None
    return None


def classify(status: int, error_code: str | None, headers: Any) -> DeliveryError | None:
    """Return the delivery error for a Slack response, or None when the message was posted."""
    if status == 429 or error_code == "ratelimited":
        return RetriableError("rate_limited", "Slack rate limit", retry_after_s=retry_after_s(headers))
    if status >= 500 or error_code in RETRIABLE_ERRORS:
        return RetriableError("server_error", f"HTTP {status} {error_code or ''}".rstrip())
    if error_code in PERMANENT_ERRORS:
        return PermanentError(error_code, f"HTTP {status}")
    if status >= 400 or error_code:
        return PermanentError("rejected", f"HTTP {status} {error_code or ''}".rstrip())
    return None


def _api_error(exc: SlackApiError) -> DeliveryError:
    failed = exc.response
    code = failed.get("error") if isinstance(failed.data, dict) else None
    if code in UPDATE_TARGET_GONE:
        return PermanentError(code, f"HTTP {failed.status_code}")
    return classify(failed.status_code, code, failed.headers) or PermanentError("rejected", "ok is false")


class SlackOutput(Output):
    """Posts each alert to Slack as a Block Kit message with a colour bar per priority."""

    type_name = "slack"
    notifies = True

    def __init__(self, name: str, config: SlackOutputConfig) -> None:
        super().__init__(name, config)
        self.config: SlackOutputConfig = config
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None
        self._webhook: AsyncWebhookClient | None = None
        self._posted: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._options = SlackOptions(
            channel=config.channel if config.token is not None else None,
            username=config.username,
            icon_emoji=config.icon_emoji,
            mention=config.mention,
        )

    async def start(self) -> None:
        secret = self.config.token if self.config.token is not None else self.config.webhook_url
        assert secret is not None, "the config requires a token or a webhook_url"
        try:
            value = secret.reveal()
        except LookupError as exc:
            what = "token" if self.config.token is not None else "webhook_url"
            raise OutputStartError(f"Slack {what} unavailable: {exc}") from exc
        # One session per output, so that connections to Slack are reused between alerts.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        timeout = max(1, round(self.config.timeout_s))
        if self.config.token is not None:
            self._web = AsyncWebClient(
                token=value,
                base_url=self.config.base_url,
                timeout=timeout,
                session=self._session,
                logger=_SDK_LOGGER,
                retry_handlers=[],
            )
        else:
            self._webhook = AsyncWebhookClient(
                url=value, timeout=timeout, session=self._session, logger=_SDK_LOGGER, retry_handlers=[]
            )

    async def send(self, event: Event) -> None:
        message = build_message(event, self._options)
        dedup = event.annotations.get("dedup")
        role = dedup.get("role") if isinstance(dedup, dict) else None
        try:
            async with asyncio.timeout(self.config.timeout_s):
                target = self._posted.get(str(dedup.get("id"))) if role == "update" and dedup else None
                error = await self._update(message, *target) if target is not None else None
                if target is None or (error is not None and error.reason in UPDATE_TARGET_GONE):
                    error = await self._post(message, remember=event.id if role == "first" else None)
        except TimeoutError as exc:
            raise RetriableError("timeout", f"Slack did not respond within {self.config.timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            raise RetriableError("connection_failed", type(exc).__name__) from exc
        if error is not None:
            raise error

    async def _post(self, message: dict[str, Any], remember: str | None = None) -> DeliveryError | None:
        if self._web is not None:
            try:
                response = await self._web.chat_postMessage(**message)
            except SlackApiError as exc:
                return _api_error(exc)
            if remember is not None and response.get("ts"):
                self._posted[remember] = (str(response.get("channel")), str(response.get("ts")))
                while len(self._posted) > POSTED_MESSAGES_MAX:
                    self._posted.popitem(last=False)
            return classify(response.status_code, None, response.headers)
        assert self._webhook is not None, "start() was not called"
        # An incoming webhook returns the error code as a plain-text body, such as "invalid_blocks".
        reply = await self._webhook.send_dict(message)
        code = None if reply.status_code == 200 else (reply.body or "").strip()[:64] or None
        return classify(reply.status_code, code, reply.headers)

    async def _update(self, message: dict[str, Any], channel: str, ts: str) -> DeliveryError | None:
        assert self._web is not None, "a message ts is only remembered for the Web API"
        update = {key: value for key, value in message.items() if key not in ("username", "icon_emoji")}
        update["channel"] = channel
        try:
            response = await self._web.chat_update(ts=ts, **update)
        except SlackApiError as exc:
            return _api_error(exc)
        return classify(response.status_code, None, response.headers)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
