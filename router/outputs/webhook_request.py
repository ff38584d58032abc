"""The HTTP request of one alert to a webhook, built without I/O.

Headers sent, besides the configured ones:

- ``Content-Type: application/json``; the body is ``Event.to_json()``.
- ``X-Event-Id``: the alert id, the same on every attempt, so the receiver can drop a repeat.
- With a signing key: ``X-Falco-Router-Timestamp`` (Unix seconds) and ``X-Falco-Router-Signature:
  sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>``. Including the timestamp lets the receiver
  reject a replayed request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from router.event import Event

EVENT_ID_HEADER: Final = "X-Event-Id"
TIMESTAMP_HEADER: Final = "X-Falco-Router-Timestamp"
SIGNATURE_HEADER: Final = "X-Falco-Router-Signature"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """Body and headers of one request."""

    body: bytes
    headers: dict[str, str]


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """Return the signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    digest = hmac.new(key, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def build_request(
    event: Event, headers: Mapping[str, str], *, signing_key: bytes | None = None, now_s: int = 0
) -> WebhookRequest:
    """Return the request of one alert; ``headers`` are the configured ones, secrets already read."""
    body = event.to_json()
    out = dict(headers)
    out["Content-Type"] = "application/json"
    out[EVENT_ID_HEADER] = event.id
    if signing_key is not None:
        out[TIMESTAMP_HEADER] = str(now_s)
        out[SIGNATURE_HEADER] = signature(signing_key, now_s, body)
    return WebhookRequest(body=body, headers=out)
