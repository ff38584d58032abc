"""Structured logging: structlog, one JSON object per line on stderr, fixed snake_case event names.

Alert fields are attacker-controlled. The JSON renderer escapes every control character; the console
renderer would pass escape sequences to a terminal, so string values are escaped first.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import structlog

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_control(value: str) -> str:
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def escape_for_terminal(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Escape control and bidirectional-override characters in string values (console output only)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = _escape_control(value)
    return event_dict


def _orjson_dumps(value: Any, default: Any = None) -> str:
    return orjson.dumps(value, default=default or str).decode()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog for the process; call once at start-up (again on reload to change the level)."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "console":
        processors += [escape_for_terminal, structlog.dev.ConsoleRenderer(colors=False)]
    else:
        processors += [structlog.processors.JSONRenderer(serializer=_orjson_dumps)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(component: str) -> Any:
    """Return a logger bound to a component name (ingest.http, output.kafka, ...)."""
    return structlog.get_logger().bind(component=component)
