"""Decode an ingest request body into alert documents: one JSON object, a JSON array, or JSON lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from router.event import InvalidAlert, loads

REPAIR_INVALID_UTF8 = "invalid_utf8"


@dataclass(slots=True)
class DecodedBody:
    """The alert documents found in a body, and the repairs made to read it."""

    documents: list[Any]
    repairs: list[str] = field(default_factory=list)


def decode_body(body: bytes) -> DecodedBody:
    """Decode a body; raises ``InvalidAlert`` with a one-line reason.

    Invalid UTF-8 is repaired rather than rejected: each invalid byte becomes U+FFFD and the alert is
    flagged. Falco before 0.39 could put raw bytes from file names into alerts, and a security alert
    must not be lost over one byte.
    """
    repairs: list[str] = []
    stripped = body.strip()
    if not stripped:
        raise InvalidAlert("body is empty: expected a JSON alert")
    # ASCII is valid UTF-8, and the check runs without building a str, so most alerts skip the decode.
    if not stripped.isascii():
        try:
            stripped.decode("utf-8")
        except UnicodeDecodeError:
            stripped = stripped.decode("utf-8", errors="replace").encode("utf-8")
            repairs.append(REPAIR_INVALID_UTF8)

    if stripped[:1] not in (b"{", b"["):
        raise InvalidAlert(
            "body is not a JSON object or array: Falco must send JSON alerts (set json_output: true in falco.yaml)"
        )
    try:
        document = loads(stripped)
    except (orjson.JSONDecodeError, ValueError) as whole_error:
        if b"\n" not in stripped:
            raise InvalidAlert(f"body is not valid JSON: {_short(whole_error)}") from whole_error
        return DecodedBody(_decode_lines(stripped), repairs)
    if isinstance(document, list):
        if not document:
            raise InvalidAlert("body is an empty JSON array: expected at least one alert")
        return DecodedBody(document, repairs)
    return DecodedBody([document], repairs)


def _decode_lines(body: bytes) -> list[Any]:
    documents = []
    for number, raw_line in enumerate(body.split(b"\n"), start=1):
        line = raw_line.strip()
        if not line:
            continue
        try:
            documents.append(loads(line))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise InvalidAlert(f"line {number} is not valid JSON: {_short(exc)}") from exc
    return documents


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
