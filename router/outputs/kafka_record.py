"""The Kafka record of one alert: key, value and headers, built without I/O.

The value is ``Event.to_json()`` unchanged, so consumers read the same alert JSON as every other
output, with integers of any size kept exact. The headers repeat a few fields so that consumers can
filter or route without parsing the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from router.event import MISSING, Event, dumps

ID_HEADER: Final = "falco-router-id"
"""Header that carries the alert id (``Event.id``, also the ``uuid`` key of the value): the same on every retry."""

RULE_HEADER: Final = "rule"
PRIORITY_HEADER: Final = "priority"
SOURCE_HEADER: Final = "source"
K8S_NAMESPACE_HEADER: Final = "k8s.namespace"
K8S_POD_HEADER: Final = "k8s.pod"
K8S_OWNER_HEADER: Final = "k8s.owner"
"""Kubernetes enrichment in headers (when known), so consumers can filter by workload without parsing."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One message to produce: the key (None for no key), the value and the headers in order."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def record_key(event: Event, key_field: str | None) -> bytes | None:
    """Return the message key: the value of ``key_field`` (strings as UTF-8, other values as JSON).

    Returns None when no key field is configured, or when the alert lacks the field or has it as null,
    so such alerts are spread over partitions rather than piled onto the partition of one fixed key.
    """
    if key_field is None:
        return None
    value: Any = event.get_field(key_field)
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return dumps(value)


def build_record(event: Event, key_field: str | None) -> KafkaRecord:
    """Return the Kafka record of one alert."""
    headers = [
        (RULE_HEADER, event.rule.encode("utf-8")),
        (PRIORITY_HEADER, event.priority_name.encode("utf-8")),
    ]
    if event.source is not None:
        headers.append((SOURCE_HEADER, event.source.encode("utf-8")))
    headers.append((ID_HEADER, event.id.encode("utf-8")))
    headers.extend(_k8s_headers(event.enrichment.get("k8s")))
    return KafkaRecord(key=record_key(event, key_field), value=event.to_json(), headers=headers)


def _k8s_headers(k8s: Any) -> list[tuple[str, bytes]]:
    if not isinstance(k8s, dict):
        return []
    headers = []
    if k8s.get("namespace"):
        headers.append((K8S_NAMESPACE_HEADER, str(k8s["namespace"]).encode("utf-8")))
    if k8s.get("pod"):
        headers.append((K8S_POD_HEADER, str(k8s["pod"]).encode("utf-8")))
    owner = k8s.get("owner")
    if isinstance(owner, dict) and owner.get("kind"):
        headers.append((K8S_OWNER_HEADER, f"{owner['kind']}/{owner.get('name')}".encode()))
    return headers
