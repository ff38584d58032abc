"""The spool's record of one event: everything needed to rebuild it identically after a restart.

The record keeps Falco's keys as received plus what the router added (id, received time, transport,
flags, enrichment, policy annotations), so a resumed alert leaves with the same ``uuid`` and body.
"""

from __future__ import annotations

from typing import Any

from router.event import Event, dumps, loads, parse_alert

_FORMAT = 1


def encode_event(event: Event) -> bytes:
    """Serialise an event for the spool."""
    falco: dict[str, Any] = {
        "output": event.output,
        "output_fields": event.output_fields,
        "priority": event.priority_raw,
        "rule": event.rule,
        "time": event.time_raw,
    }
    if event.hostname is not None:
        falco["hostname"] = event.hostname
    if event.source is not None:
        falco["source"] = event.source
    if event.tags is not None:
        falco["tags"] = event.tags
    record = {
        "v": _FORMAT,
        "falco": {**event.extra, **falco},
        "id": event.id,
        "received_ns": event.received_ns,
        "transport": event.transport,
        "flags": event.flags,
        "enrichment": event.enrichment,
        "annotations": event.annotations,
    }
    return dumps(record)


def decode_event(body: bytes) -> Event:
    """Rebuild an event from ``encode_event`` output; raises ``ValueError`` on a record it cannot read."""
    record = loads(body)
    if not isinstance(record, dict) or record.get("v") != _FORMAT:
        raise ValueError(f"unknown spool record format {record.get('v') if isinstance(record, dict) else None!r}")
    event = parse_alert(record["falco"], transport=record["transport"])
    event.id = record["id"]
    event.received_ns = record["received_ns"]
    event.flags = list(record["flags"])
    event.enrichment = record["enrichment"]
    event.annotations = record["annotations"]
    return event
