"""Structured logging: structlog, one JSON object per line on stderr, fixed snake_case event names.

Alert fields are attacker-controlled. The JSON renderer escapes every control character; the console
renderer would pass escape sequences to a terminal, so string values are escaped first.
"""

from __future__ import annotations

import logging
import re
import sys
import time
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
    _route_library_logs()


LIBRARY_LOG_INTERVAL_S = 60.0
"""A library message with the same text template is written at most once per this interval."""


class LibraryLogHandler(logging.Handler):
    """Write standard-library log records (aiokafka, grpc, asyncio) as the router's own JSON lines.

    Libraries repeat themselves during an outage (aiokafka logs every failed connection), so each message
    template passes at most once per ``LIBRARY_LOG_INTERVAL_S``; the next line that passes says how many
    were suppressed in between.
    """

    def __init__(self, interval_s: float = LIBRARY_LOG_INTERVAL_S) -> None:
        super().__init__(level=logging.WARNING)
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self.log = get_logger("library")

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) >= 1024:  # bounds memory whatever the libraries log
            self._last.clear()
        self._last[key] = now
        message = record.getMessage()[:2000]
        suppressed = self._suppressed.pop(key, 0)
        if record.levelno >= logging.ERROR:
            self.log.error("library_log", logger=record.name, message=message, suppressed=suppressed)
        else:
            self.log.warning("library_log", logger=record.name, message=message, suppressed=suppressed)


def _route_library_logs() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, LibraryLogHandler):
            root.removeHandler(handler)
    root.addHandler(LibraryLogHandler())
    root.setLevel(logging.WARNING)


def get_logger(component: str) -> Any:
    """Return a logger bound to a component name (ingest.http, output.kafka, ...)."""
    return structlog.get_logger().bind(component=component)
