"""The HTTP request of one alert, or of a batch of alerts, to a webhook, built without I/O.

Headers sent, besides the configured ones:

- ``Content-Type: application/json``; the body is ``Event.to_json()``. For a batch, the body is a JSON
  array of alerts (``application/json``) or one alert per line (``application/x-ndjson``).
- ``X-Event-Id``: the alert id, the same on every attempt, so the receiver can drop a repeat. For a
  batch, a UUID computed from the ids of its alerts in order (``batch_id``), so a retry of the same
  batch carries the same value. ``X-Event-Count`` then gives the number of alerts.
- With a signing key: ``X-Falco-Router-Timestamp`` (Unix seconds) and ``X-Falco-Router-Signature:
  sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>``, for a batch over the whole body. Including
  the timestamp lets the receiver reject a replayed request.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from router.event import Event

EVENT_ID_HEADER: Final = "X-Event-Id"
EVENT_COUNT_HEADER: Final = "X-Event-Count"
TIMESTAMP_HEADER: Final = "X-Falco-Router-Timestamp"
SIGNATURE_HEADER: Final = "X-Falco-Router-Signature"

BATCH_ID_NAMESPACE: Final = uuid.UUID("6f1d3a52-8c4e-4b0a-9e57-2d8f0c6b7a13")
"""Namespace of the name-based UUIDs that identify a batch, fixed so that receivers can recompute them."""

BatchFormat = Literal["json_array", "json_lines"]


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """Body and headers of one request."""

    body: bytes
    headers: dict[str, str]


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """Return the signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    digest = hmac.new(key, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def batch_id(events: Sequence[Event]) -> str:
    """Return the id of a batch: the version 5 UUID of its alert ids joined by commas, in order."""
    return str(uuid.uuid5(BATCH_ID_NAMESPACE, ",".join(event.id for event in events)))


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


def build_batch_request(
    events: Sequence[Event],
    headers: Mapping[str, str],
    *,
    body_format: BatchFormat,
    signing_key: bytes | None = None,
    now_s: int = 0,
) -> WebhookRequest:
    """Return the request of several alerts in ``body_format``, with the configured ``headers`` added."""
    alerts = [event.to_json() for event in events]
    out = dict(headers)
    if body_format == "json_lines":
        body = b"\n".join(alerts) + b"\n"
        out["Content-Type"] = "application/x-ndjson"
    else:
        body = b"[" + b",".join(alerts) + b"]"
        out["Content-Type"] = "application/json"
    out[EVENT_ID_HEADER] = batch_id(events)
    out[EVENT_COUNT_HEADER] = str(len(events))
    if signing_key is not None:
        out[TIMESTAMP_HEADER] = str(now_s)
        out[SIGNATURE_HEADER] = signature(signing_key, now_s, body)
    return WebhookRequest(body=body, headers=out)
