"""The router's logs: library records become JSON lines, rate-limited; console output is escaped."""

from __future__ import annotations

import logging

from structlog.testing import capture_logs

from router.logs import LibraryLogHandler, escape_for_terminal


def library_record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", level, __file__, 1, message, args, None)


def test_library_record_becomes_fixed_event() -> None:
    handler = LibraryLogHandler()
    with capture_logs() as logs:
        handler.emit(library_record("Unable connect to node with id %s: %s", 111, "refused"))
    assert logs == [
        {
            "event": "library_log",
            "log_level": "error",
            "component": "library",
            "logger": "aiokafka",
            "message": "Unable connect to node with id 111: refused",
            "suppressed": 0,
        }
    ]


def test_repeated_library_message_rate_limited() -> None:
    handler = LibraryLogHandler(interval_s=3600.0)
    with capture_logs() as logs:
        for node in range(500):
            handler.emit(library_record("Unable connect to node with id %s", node))
    assert len(logs) == 1


def test_suppressed_count_reported_on_next_line() -> None:
    handler = LibraryLogHandler(interval_s=3600.0)
    with capture_logs() as logs:
        for _ in range(5):
            handler.emit(library_record("Got error produce response: %s", "NodeNotReadyError"))
        handler.interval_s = 0.0
        handler.emit(library_record("Got error produce response: %s", "NodeNotReadyError"))
    assert [entry["suppressed"] for entry in logs] == [0, 4]


def test_console_escapes_terminal_controls() -> None:
    event = escape_for_terminal(None, "info", {"event": "x", "rule": "a\x1b[31mred\u202e"})
    assert event["rule"] == "a\\u001b[31mred\\u202e"
