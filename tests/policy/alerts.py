"""Alerts for the policy tests, built through the real parser."""

from __future__ import annotations

import copy
from typing import Any

from router.event import Event, parse_alert

BASE: dict[str, Any] = {
    "hostname": "host-a",
    "output": "A shell was spawned in a container with an attached terminal",
    "priority": "Notice",
    "rule": "Terminal shell in container",
    "source": "syscall",
    "tags": ["container", "shell"],
    "time": "2023-11-14T22:13:20.000000000Z",
    "output_fields": {
        "container.id": "1a2b3c4d5e6f",
        "proc.cmdline": "sh",
        "proc.name": "sh",
        "proc.tty": 34816,
        "k8s.ns.name": "ns-a",
        "k8s.pod.name": "pod-a",
    },
}


def alert(fields: dict[str, Any] | None = None, **top: Any) -> Event:
    """Return a parsed alert: BASE with top-level keys and output_fields replaced."""
    document = copy.deepcopy(BASE)
    document.update(top)
    if fields is not None:
        document["output_fields"] = {**document["output_fields"], **fields}
    return parse_alert(document)


def grpc_form(event_document: dict[str, Any]) -> dict[str, Any]:
    """Return the document as the gRPC stream delivers it: every output_fields value a string, null as "null"."""
    document = copy.deepcopy(event_document)
    fields = document.get("output_fields") or {}
    for key, value in fields.items():
        if value is None:
            fields[key] = "null"
        elif isinstance(value, bool):
            fields[key] = "true" if value else "false"
        else:
            fields[key] = str(value)
    return document
