"""The Slack message of one alert (Block Kit inside a coloured attachment), built without I/O.

Every value that comes from an alert is untrusted, so ``&``, ``<`` and ``>`` are sent as ``&amp;``,
``&lt;`` and ``&gt;``. Text such as ``<!channel>``, ``<@U…>`` or ``<https://…|label>`` in an alert is
then shown as typed and never becomes a mention or a link. Values are also put in code spans, where Slack applies
no ``*bold*``, ``_italic_`` or ``~strike~`` formatting. A backtick inside a value would end the code
span, so it is shown as its look-alike U+02CB (modifier letter grave accent). Only the operator's
configured ``mention`` is sent as written.

Slack limits kept (https://api.slack.com/reference/block-kit/blocks): section text ≤ 3000 characters,
section field text ≤ 2000, at most 10 fields per section and 50 blocks per message. The router also
keeps the text of all blocks together within 4000 characters. A value cut to fit ends with
"…truncated (N chars)", where N counts the characters of the value left out. Cuts fall between
characters, never inside one or inside an ``&amp;``-style entity.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

from router.event import Event, dumps
from router.priority import Priority

SECTION_TEXT_MAX: Final = 3000
FIELD_TEXT_MAX: Final = 2000
FIELDS_PER_SECTION: Final = 10
BLOCKS_MAX: Final = 50
TOTAL_TEXT_MAX: Final = 4000
FALLBACK_TEXT_MAX: Final = 4000
TITLE_VALUE_MAX: Final = 300
"""Escaped characters of the rule name shown in the title."""
CONTEXT_VALUE_MAX: Final = 200
"""Escaped characters of each of hostname, source, tags and time."""
OUTPUT_TEXT_MAX: Final = 1000
"""Escaped characters of Falco's output sentence shown under the title."""
DEDUP_SUMMARY_MAX: Final = 1500
DEDUP_VALUE_MAX: Final = 300
FIELD_VALUE_MIN: Final = 24
"""Characters each field value keeps at least; fields that would get less are left out and counted."""

NULL_TEXT: Final = "<NA>"
"""Text shown for a JSON null: Falco's own spelling of a value it could not resolve."""

COLORS: Final[dict[Priority | None, str]] = {
    Priority.EMERGENCY: "#7b0000",
    Priority.ALERT: "#b00020",
    Priority.CRITICAL: "#e01e1e",
    Priority.ERROR: "#f05a28",
    Priority.WARNING: "#f2c744",
    Priority.NOTICE: "#2eb67d",
    Priority.INFORMATIONAL: "#36a3eb",
    Priority.DEBUG: "#9aa5b1",
    None: "#6b6b6b",
}
"""Colour bar per priority; None is an unknown priority spelling."""

_ESCAPES: Final = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    # Bidirectional overrides would make a value read differently from what it is, so they are shown
    # as their code point instead.
    **{chr(c): f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)},
}
_BACKTICK_LOOKALIKE: Final = "\u02cb"


@dataclass(frozen=True, slots=True)
class SlackOptions:
    """Operator settings that shape the message."""

    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    mention: str | None = None


def escape(text: str) -> str:
    """Return ``text`` with ``&``, ``<``, ``>`` and bidirectional overrides escaped for Slack."""
    return "".join(_escaped_units(text))


def value_text(value: Any) -> str:
    """Return a field value as Falco wrote it: strings as is, null as <NA>, other JSON values as JSON."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, str):
        return value
    return dumps(value).decode("utf-8")


def _escaped_units(text: str) -> list[str]:
    """Return the escaped form of each character, so that a cut can never split an entity."""
    return [_ESCAPES.get(char, char) for char in text]


def truncate_escaped(text: str, max_chars: int) -> str:
    """Return ``text`` escaped and, when longer than ``max_chars``, cut with a "…truncated (N chars)" marker."""
    units = _escaped_units(text)
    ends = list(accumulate(len(u) for u in units))
    if not ends or ends[-1] <= max_chars:
        return "".join(units)
    # Room is kept for the longest marker this value can need, so the real marker always fits.
    longest_marker = len(f"…truncated ({len(units)} chars)")
    kept = bisect_right(ends, max_chars - longest_marker)
    if max_chars < longest_marker:
        return f"…truncated ({len(units)} chars)"[:max_chars]
    return "".join(units[:kept]) + f"…truncated ({len(units) - kept} chars)"


def code_block(escaped: str) -> str:
    """Return already escaped text as an mrkdwn code block, with backticks replaced by a look-alike."""
    return "```" + escaped.replace("`", _BACKTICK_LOOKALIKE) + "```"


def code_span(escaped: str) -> str:
    """Return already escaped text as an mrkdwn code span, with backticks replaced by a look-alike."""
    return "`" + escaped.replace("`", _BACKTICK_LOOKALIKE) + "`"


def _value_caps(lengths: list[int], budget: int) -> int | None:
    """Return the largest per-value cap that fits ``budget`` in total, or None when all fit uncapped."""
    if sum(lengths) <= budget:
        return None
    low, high = 0, max(lengths)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(n, middle) for n in lengths) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def k8s_rows(k8s: dict[str, Any]) -> list[tuple[str, str]]:
    """Return readable rows for the Kubernetes enrichment: workload, owner, node, image, labels, status."""
    rows: list[tuple[str, str]] = []
    if k8s.get("pod"):
        rows.append(("k8s.pod", f"{k8s.get('namespace')}/{k8s['pod']}"))
    elif k8s.get("namespace"):
        rows.append(("k8s.namespace", str(k8s["namespace"])))
    owner = k8s.get("owner")
    if isinstance(owner, dict) and owner.get("kind"):
        rows.append(("k8s.owner", f"{owner['kind']}/{owner.get('name')}"))
    for key in ("node", "image", "service_account"):
        if k8s.get(key):
            rows.append((f"k8s.{key}", str(k8s[key])))
    labels = k8s.get("labels")
    if isinstance(labels, dict) and labels:
        rows.append(("k8s.labels", ", ".join(f"{k}={v}" for k, v in labels.items())))
    status = k8s.get("status")
    if status not in (None, "hit") or k8s.get("pod_deleted"):
        rows.append(("k8s.status", "deleted" if k8s.get("pod_deleted") else str(status)))
    return rows


def _fields(event: Event) -> list[tuple[str, str]]:
    """Return (label, raw value text) of every output field, then of the router's enrichment."""
    rows = [(name, value_text(value)) for name, value in event.output_fields.items()]
    for name, value in event.enrichment.items():
        if name == "k8s" and isinstance(value, dict):
            rows.extend(k8s_rows(value))
        else:
            rows.append((f"enrichment.{name}", value_text(value)))
    return rows


def _rows_that_fit(labels: list[str], budget: int, max_rows: int) -> int:
    """Return how many rows fit ``budget`` with at least FIELD_VALUE_MIN characters per value.

    When some rows are left out, room is kept for the section that says how many.
    """
    count = min(len(labels), max_rows)
    marker_room = len("…99999 more fields not shown")
    while count:
        reserve = marker_room if count < len(labels) else 0
        needed = sum(len(label) + 2 + FIELD_VALUE_MIN for label in labels[:count])
        if needed <= budget - reserve:
            break
        count -= 1
    return count


def _field_blocks(rows: list[tuple[str, str]], budget: int, max_blocks: int) -> list[dict[str, Any]]:
    """Return section blocks of up to 10 fields each, every value escaped, in a code span and within limits.

    Alerts with more fields than fit the block or text limits show the first ones and say how many were
    left out, rather than shrinking every value to nothing.
    """
    labels = [f"*{truncate_escaped(name, 200)}*\n" for name, _ in rows]
    shown = _rows_that_fit(labels, budget, (max_blocks - 1) * FIELDS_PER_SECTION)
    hidden = len(rows) - shown
    if hidden:
        budget -= len(f"…{hidden} more fields not shown")
    rows, labels = rows[:shown], labels[:shown]
    # Two characters per value for the backticks of its code span.
    overhead = sum(len(label) + 2 for label in labels)
    value_budget = max(budget - overhead, 0)
    lengths = [sum(len(u) for u in _escaped_units(raw)) for _, raw in rows]
    cap = _value_caps(lengths, value_budget)
    texts: list[str] = []
    for label, (_, raw) in zip(labels, rows, strict=True):
        limit = FIELD_TEXT_MAX - len(label) - 2
        if cap is not None:
            limit = min(limit, cap)
        texts.append(label + code_span(truncate_escaped(raw, max(limit, 0))))
    blocks: list[dict[str, Any]] = []
    for start in range(0, len(texts), FIELDS_PER_SECTION):
        chunk = texts[start : start + FIELDS_PER_SECTION]
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": t} for t in chunk]})
    if hidden:
        blocks.append(_section(f"…{hidden} more fields not shown"))
    return blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context_parts(event: Event) -> Iterable[str]:
    if event.hostname is not None:
        yield "host " + code_span(truncate_escaped(event.hostname, CONTEXT_VALUE_MAX))
    if event.source is not None:
        yield "source " + code_span(truncate_escaped(event.source, CONTEXT_VALUE_MAX))
    if event.tags:
        yield "tags " + code_span(truncate_escaped(", ".join(event.tags), CONTEXT_VALUE_MAX))
    yield "time " + code_span(truncate_escaped(event.time_raw, CONTEXT_VALUE_MAX))
    # The alert id, also in Kafka and webhook bodies as uuid, lets an analyst find the same alert there.
    yield "id " + code_span(truncate_escaped(event.id, CONTEXT_VALUE_MAX))


def title_text(event: Event, mention: str | None) -> str:
    """Return the title line: the operator's mention (unescaped), the priority and the rule (escaped)."""
    priority = truncate_escaped(event.priority_name, 40)
    title = f"*{priority}* · {code_span(truncate_escaped(event.rule, TITLE_VALUE_MAX))}"
    return f"{mention} {title}" if mention else title


def fallback_text(event: Event, mention: str | None) -> str:
    """Return the plain ``text`` Slack shows in notifications and where blocks cannot be shown."""
    host = f" on {event.hostname}" if event.hostname is not None else ""
    body = truncate_escaped(f"{event.priority_name}: {event.rule}{host}", FALLBACK_TEXT_MAX - 200)
    return f"{mention} {body}" if mention else body


def dedup_summary_text(dedup: dict[str, Any]) -> str:
    """Return the summary of a closed dedup group: how often the alert repeated and the distinct values.

    Values come from alerts, so they are escaped and put in code spans like every other field.
    """
    count = dedup.get("count", 0)
    window = dedup.get("window_s")
    within = f" within {window:g} s" if isinstance(window, int | float) else ""
    rule = code_span(truncate_escaped(str(dedup.get("rule", "")), 80))
    lines = [f"*Repeated {count} times*{within} (dedup rule {rule})"]
    budget = DEDUP_SUMMARY_MAX - len(lines[0])
    for name, values in (dedup.get("distinct") or {}).items():
        shown = ", ".join(code_span(truncate_escaped(value_text(v), DEDUP_VALUE_MAX)) for v in values)
        line = f"{code_span(truncate_escaped(name, 80))}: {shown}"
        if len(line) + 1 > budget:
            lines.append("…more distinct values not shown")
            break
        lines.append(line)
        budget -= len(line) + 1
    if dedup.get("distinct_truncated"):
        lines.append("…more distinct values were seen than the dedup rule keeps")
    return "\n".join(lines)


def build_message(event: Event, options: SlackOptions) -> dict[str, Any]:
    """Return the chat.postMessage (or incoming webhook) payload of one alert.

    Under the title come the dedup summary of an update (``router.dedup.role == "update"``) and Falco's
    output sentence, then the fields and a context line.
    """
    title = _section(title_text(event, options.mention))
    context_text = " · ".join(_context_parts(event))
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": context_text}]}
    head = [title]
    dedup = event.annotations.get("dedup")
    if isinstance(dedup, dict) and dedup.get("role") == "update":
        head.append(_section(dedup_summary_text(dedup)))
    if event.output:
        # Falco's own sentence about the alert; for internal alerts such as a hot restart failure it is
        # the only place the reason is given.
        head.append(_section(code_block(truncate_escaped(event.output, OUTPUT_TEXT_MAX))))
    used = sum(len(block["text"]["text"]) for block in head) + len(context_text)
    fields = _field_blocks(_fields(event), TOTAL_TEXT_MAX - used, BLOCKS_MAX - 1 - len(head))
    blocks = [*head, *fields, context]

    message: dict[str, Any] = {
        "text": fallback_text(event, options.mention),
        "attachments": [{"color": COLORS.get(event.priority, COLORS[None]), "blocks": blocks}],
    }
    if options.channel is not None:
        message["channel"] = options.channel
    if options.username is not None:
        message["username"] = options.username
    if options.icon_emoji is not None:
        message["icon_emoji"] = options.icon_emoji
    return message
