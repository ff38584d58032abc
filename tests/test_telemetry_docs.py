"""docs/telemetry.md lists every log event the code writes, with fields it really logs, and every metric."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from tests.support.data import PROJECT_ROOT

PAGE = PROJECT_ROOT / "docs" / "telemetry.md"
LEVELS = frozenset({"debug", "info", "warning", "error", "exception"})
# Keys every log line carries or that loggers bind once for a component.
BOUND = frozenset({"output", "component"})


def logged_events() -> dict[str, set[str]]:
    """Return each event name written by router/ with the keyword fields its calls pass."""
    events: dict[str, set[str]] = {}
    for path in (PROJECT_ROOT / "router").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and re.fullmatch(r"[a-z][a-z0-9_]+", node.args[0].value)
            ):
                events.setdefault(node.args[0].value, set()).update(k.arg for k in node.keywords if k.arg)
    return events


def documented_rows() -> dict[str, str]:
    rows = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\| `([a-z0-9_]+)` \| (debug|info|warning|error)", line)
        if found:
            rows[found.group(1)] = line
    return rows


def test_every_logged_event_is_documented() -> None:
    missing = sorted(set(logged_events()) - set(documented_rows()))
    assert missing == [], f"add these events to docs/telemetry.md: {missing}"


def test_every_documented_event_is_logged() -> None:
    stale = sorted(set(documented_rows()) - set(logged_events()))
    assert stale == [], f"docs/telemetry.md lists events the code no longer writes: {stale}"


def test_documented_fields_are_logged() -> None:
    events = logged_events()
    for event, row in documented_rows().items():
        meaning = row.split("|")[4]
        for field in re.findall(r"`([a-z_]+)`", meaning):
            assert field in events[event] | BOUND, f"{event}: docs/telemetry.md names field {field!r}, not logged"


def test_metrics_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "docs" / "gen_telemetry.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
