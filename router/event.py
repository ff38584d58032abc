"""The one event model that both transports (HTTP JSON and gRPC) normalise to.

An ``Event`` keeps what Falco sent exactly (the ``time`` string, the priority spelling, the JSON type of
every ``output_fields`` value, integers past 2^63 included) and carries what the router adds beside it:
an id, flags, Kubernetes enrichment and policy annotations. ``Event.to_json`` writes the outgoing alert:
Falco's keys unchanged, plus ``uuid`` (the key falcosidekick consumers already read), ``enrichment`` and
``router``.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from router.priority import Priority, parse_priority

MISSING: Final = object()
"""Returned by ``Event.get_field`` for a field the event does not carry (distinct from a JSON null)."""

# Flags set during normalisation; the outgoing alert lists them under router.flags.
FLAG_PRIORITY_UNKNOWN: Final = "priority_unknown"
FLAG_UTF8_REPAIRED: Final = "utf8_repaired"

_FALCO_KEYS: Final = frozenset(("hostname", "output", "output_fields", "priority", "rule", "source", "tags", "time"))

# RFC 3339 as Falco writes it (9 fractional digits and "Z"), also accepting fewer or more digits and a
# numeric offset. Python 3.10's fromisoformat rejects more than 6 digits, so the time is parsed by hand.
_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,  # \d would also match the digits of other scripts
)

# orjson parses integers up to 2^64 - 1 exactly but silently turns longer ones into floats, so a body
# with a run of 20 or more digits is parsed by the standard library, which keeps any integer exact.
# The run is found by mapping every ASCII digit to "0" and everything else to a space, then searching
# for twenty zeros: two C passes, about 15 times faster than the regular expression \d{20} on a
# 1 KiB alert, which retries at each digit of every long number.
# Checking orjson's result for floats instead, and scanning only then, was measured slower
# (3.6 against 3.3 µs per corpus alert): the type checks cost more than the two C passes.
_DIGITS_AS_ZEROS: Final = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGITS: Final = b"0" * 20


# A random (version 4) UUID per alert. uuid.uuid4() makes one getrandom system call per id and builds a
# UUID object, which cost more than the rest of the alert's parsing. Ids are made 256 at a time from one
# os.urandom block instead, by slicing its hex digits, and handed out with list.pop, which is atomic, so
# threads never share an id. A forked child starts with an empty pool: it must not reuse its parent's ids.
_IDS_PER_BLOCK: Final = 256
_VARIANT_DIGIT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122 variant
_id_pool: list[str] = []
os.register_at_fork(after_in_child=_id_pool.clear)


def _id_block() -> list[str]:
    digits = os.urandom(16 * _IDS_PER_BLOCK).hex()
    # The 13th digit becomes the version (4) and the 17th takes the variant bits.
    return [
        f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-4{digits[i + 13 : i + 16]}-"
        f"{_VARIANT_DIGIT[digits[i + 16]]}{digits[i + 17 : i + 20]}-{digits[i + 20 : i + 32]}"
        for i in range(0, len(digits), 32)
    ]


def new_alert_id() -> str:
    """Return a new random UUID (version 4) in its canonical 36-character form."""
    try:
        return _id_pool.pop()
    except IndexError:
        _id_pool.extend(_id_block())
        return _id_pool.pop()


class InvalidAlert(ValueError):  # noqa: N818 - names the condition, as ValueError subclasses in parsers do
    """The input is not a Falco alert; the message is one line that says which key is wrong and why."""


@dataclass(slots=True, eq=False)
class Event:
    """One Falco alert, normalised, with what the router adds beside it."""

    rule: str
    priority: Priority | None
    priority_raw: str
    time_ns: int
    time_raw: str
    output: str
    output_fields: dict[str, Any]
    source: str | None = None
    hostname: str | None = None
    tags: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_alert_id)
    received_ns: int = field(default_factory=time.time_ns)
    transport: str = "http"
    flags: list[str] = field(default_factory=list)
    enrichment: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    _json_cache: bytes | None = None

    @property
    def time_utc(self) -> datetime:
        """Return the event time as an aware UTC datetime (microseconds, the rest truncated)."""
        seconds, nanos = divmod(self.time_ns, 1_000_000_000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)

    @property
    def priority_name(self) -> str:
        """Return Falco's spelling of the priority, or the raw spelling when it is unknown."""
        return self.priority.falco_name if self.priority is not None else self.priority_raw

    @property
    def is_internal(self) -> bool:
        """Tell whether this is one of Falco's own health alerts ("Falco internal: ...")."""
        return self.source == "internal" or self.rule.startswith("Falco internal:")

    def get_field(self, name: str) -> Any:
        """Return the value of a field by the name a match expression uses, or ``MISSING``.

        Top-level names (``rule``, ``priority``, ``source``, ``hostname``, ``tags``, ``output``) come
        first, then ``enrichment.…`` paths into the router's enrichment, then Falco's output_fields by
        their Falco names (``proc.cmdline``, ``proc.aname[2]``).
        """
        match name:
            case "rule":
                return self.rule
            case "priority":
                return self.priority_name
            case "source":
                return MISSING if self.source is None else self.source
            case "hostname":
                return MISSING if self.hostname is None else self.hostname
            case "tags":
                return MISSING if self.tags is None else self.tags
            case "output":
                return self.output
        if name.startswith("enrichment."):
            return _lookup_path(self.enrichment, name[len("enrichment.") :])
        return self.output_fields.get(name, MISSING)

    def to_dict(self) -> dict[str, Any]:
        """Return the outgoing alert: Falco's keys as received, then ``uuid``, enrichment and router data."""
        out: dict[str, Any] = {}
        if self.hostname is not None:
            out["hostname"] = self.hostname
        out["output"] = self.output
        out["output_fields"] = self.output_fields
        out["priority"] = self.priority_raw
        out["rule"] = self.rule
        if self.source is not None:
            out["source"] = self.source
        if self.tags is not None:
            out["tags"] = self.tags
        out["time"] = self.time_raw
        out.update(self.extra)
        out["uuid"] = self.id
        if self.enrichment:
            out["enrichment"] = self.enrichment
        router: dict[str, Any] = dict(self.annotations)
        if self.flags:
            router["flags"] = self.flags
        if router:
            out["router"] = router
        return out

    def to_json(self) -> bytes:
        """Return the outgoing alert as compact JSON bytes (cached: call after enrichment and policy)."""
        if self._json_cache is None:
            self._json_cache = dumps(self.to_dict())
        return self._json_cache

    def invalidate_json(self) -> None:
        """Drop the cached JSON after a stage changed the event."""
        self._json_cache = None


def _lookup_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def dumps(value: Any) -> bytes:
    """Serialise to compact JSON, keeping integers of any size exact."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # orjson rejects integers outside the 64-bit range; the standard library writes them exactly.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is too large for a double")
    return value


def loads(body: bytes | str) -> Any:
    """Parse JSON, keeping integers of any size exact (see ``_LONG_DIGITS``).

    Both parsers reject NaN, Infinity and numbers that overflow a double, as strict JSON requires, so
    nothing the router accepts makes its outputs write JSON that strict consumers reject.
    """
    raw = body.encode() if isinstance(body, str) else body
    if _LONG_DIGITS in raw.translate(_DIGITS_AS_ZEROS):
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    return orjson.loads(raw)


# Seconds since the epoch by time string without its fraction. Alerts of one burst share their second,
# and the calendar arithmetic and date check cost several times more than the match, so they run once
# per distinct second. Cleared when full, which bounds memory whatever times arrive.
_SECONDS_CACHE: dict[str, int] = {}
_SECONDS_CACHE_MAX: Final = 4096


def parse_time(text: str) -> int:
    """Parse an RFC 3339 time into nanoseconds since the epoch; digits past the ninth are truncated."""
    # Falco's own form, 2023-11-14T22:13:20.123456789Z, skips the regular expression once its second is
    # cached. The key is the one the full parse stores, which it stores only for a valid time.
    if len(text) == 30 and text[29] == "Z" and text[19] == ".":
        fraction = text[20:29]
        # isascii as well: isdigit alone accepts digits of other scripts, which int() would also read.
        if fraction.isdigit() and fraction.isascii():
            seconds = _SECONDS_CACHE.get(text[:20] + "Z")
            if seconds is not None:
                return seconds * 1_000_000_000 + int(fraction)
    return _parse_time(text)


def _parse_time(text: str) -> int:
    matched = _TIME_RE.fullmatch(text)
    if matched is None:
        raise InvalidAlert(f"time {text[:64]!r} is not an RFC 3339 timestamp such as 2023-11-14T22:13:20.123456789Z")
    fraction = matched.group(7)
    key = text if fraction is None else text[: matched.start(7)] + text[matched.end(7) :]
    seconds = _SECONDS_CACHE.get(key)
    if seconds is None:
        seconds = _epoch_seconds(matched, text)
        if len(_SECONDS_CACHE) >= _SECONDS_CACHE_MAX:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[key] = seconds
    nanos = int(((fraction or "") + "000000000")[:9])
    return seconds * 1_000_000_000 + nanos


def _epoch_seconds(matched: re.Match[str], text: str) -> int:
    year, month, day, hour, minute, second = (int(g) for g in matched.groups()[:6])
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        datetime(year, month, day, hour, minute, min(second, 59))  # rejects 2023-02-30 and the like
    except ValueError as exc:
        raise InvalidAlert(f"time {text[:64]!r} is not a valid date: {exc}") from exc
    if matched.group(9):
        offset = int(matched.group(10)) * 3600 + int(matched.group(11)) * 60
        seconds -= offset if matched.group(9) == "+" else -offset
    return seconds


def parse_alert(document: Any, *, transport: str = "http") -> Event:
    """Validate one decoded Falco JSON alert and return it as an ``Event``.

    Required: ``rule`` (non-empty string), ``priority`` (string), ``time`` (RFC 3339 string).
    ``output`` and ``output_fields`` may be absent, because Falco 0.41+ can leave either out. Unknown
    top-level keys (such as ``message`` from Falco 0.39+) are kept. A ``uuid`` set by an upstream
    falcosidekick is kept as ``router.upstream_uuid``, because ``uuid`` carries the router's own id,
    which receivers use to drop duplicates.
    """
    if not isinstance(document, dict):
        raise InvalidAlert(f"alert must be a JSON object, got {_json_type(document)}")

    rule = document.get("rule")
    if not isinstance(rule, str) or not rule:
        raise InvalidAlert(_expected("rule", rule, "a non-empty string"))

    priority_raw = document.get("priority")
    if not isinstance(priority_raw, str) or not priority_raw.strip():
        raise InvalidAlert(_expected("priority", priority_raw, "a Falco priority name such as Warning"))

    time_raw = document.get("time")
    if not isinstance(time_raw, str):
        raise InvalidAlert(_expected("time", time_raw, "an RFC 3339 string"))
    time_ns = parse_time(time_raw)

    output = document.get("output", "")
    if not isinstance(output, str):
        raise InvalidAlert(_expected("output", output, "a string"))

    output_fields = document.get("output_fields")
    if output_fields is None:
        output_fields = {}
    elif not isinstance(output_fields, dict):
        raise InvalidAlert(_expected("output_fields", output_fields, "a JSON object"))

    source = document.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidAlert(_expected("source", source, "a string"))

    hostname = document.get("hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise InvalidAlert(_expected("hostname", hostname, "a string"))

    tags = document.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise InvalidAlert(_expected("tags", tags, "a list of strings"))

    priority = parse_priority(priority_raw)
    event = Event(
        rule=rule,
        priority=priority,
        priority_raw=priority_raw,
        time_ns=time_ns,
        time_raw=time_raw,
        output=output,
        output_fields=output_fields,
        source=source,
        hostname=hostname,
        tags=tags,
        transport=transport,
    )
    if not document.keys() <= _FALCO_KEYS:  # most alerts carry no other key: skip the copy
        event.extra = {k: v for k, v in document.items() if k not in _FALCO_KEYS and k != "uuid"}
        upstream_uuid = document.get("uuid")
        if upstream_uuid is not None:
            event.annotations["upstream_uuid"] = upstream_uuid
    if priority is None:
        event.flags.append(FLAG_PRIORITY_UNKNOWN)
    return event


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _expected(key: str, value: Any, expected: str) -> str:
    if value is None:
        return f"{key} is missing: expected {expected}"
    if value == "":
        return f"{key} is empty: expected {expected}"
    return f"{key} is {_json_type(value)}: expected {expected}"
