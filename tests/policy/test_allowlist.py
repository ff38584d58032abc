"""Allow-list: matching, order independence, expiry, and suppression per output through the real app."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from router.app import RouterApp
from router.config import parse_config
from router.config.policy import AllowListEntry, PolicyConfig
from router.event import parse_alert
from router.policy.allowlist import AllowList
from router.policy.engine import PolicyEngine
from router.policy.index import anchor
from tests.policy.alerts import alert
from tests.policy.recording import Clock, RecordingOutput
from tests.support.data import corpus_lines

TODAY = dt.date(2023, 11, 14)


def _entry(name: str, match: Any, expires: dt.date | None = None) -> AllowListEntry:
    return AllowListEntry(name=name, match=match, reason="known", owner="team-a", expires=expires)


def test_matching_entries_sorted_by_name() -> None:
    allow_list = AllowList.compile(
        [_entry("zeta", "proc.name == sh"), _entry("alpha", 'rule == "Terminal shell in container"')], TODAY
    )
    assert [e.name for e in allow_list.matching(alert())] == ["alpha", "zeta"]


def test_rule_index_keeps_other_rules_out() -> None:
    allow_list = AllowList.compile([_entry("a", {"all": ["rule == Other", "proc.name == sh"]})], TODAY)
    assert allow_list.matching(alert()) == []


def test_anchor_prefers_rule_condition() -> None:
    expression = {"all": ["proc.name == sh", {"field": "rule", "in": ["A", "B"]}]}
    assert anchor(expression) == ("rule", frozenset({"A", "B"}))


def test_anchor_only_from_conditions_that_must_hold() -> None:
    assert anchor({"any": ["rule == A", "proc.name == sh"]}) is None
    assert anchor({"not": "rule == A"}) is None
    assert anchor("rule != A") is None


def test_anchor_uses_canonical_values() -> None:
    assert anchor({"field": "proc.tty", "in": [34816, "1"]}) == ("proc.tty", frozenset({"34816", "1"}))


def test_index_finds_entry_anchored_on_list_field() -> None:
    allow_list = AllowList.compile([_entry("shell-tag", {"field": "tags", "equals": "shell"})], TODAY)
    assert [e.name for e in allow_list.matching(alert())] == ["shell-tag"]


def test_entry_suppresses_through_expiry_day() -> None:
    allow_list = AllowList.compile([_entry("a", "proc.name == sh", expires=TODAY)], TODAY)
    assert len(allow_list.matching(alert())) == 1


def test_expired_entry_stops_suppressing() -> None:
    allow_list = AllowList.compile([_entry("a", "proc.name == sh", expires=TODAY)], TODAY)
    expired = allow_list.set_today(TODAY + dt.timedelta(days=1))
    assert [e.name for e in expired] == ["a"]
    assert allow_list.matching(alert()) == []


_CONDITIONS = [
    "proc.name == sh",
    "proc.name == bash",
    'rule == "Terminal shell in container"',
    {"field": "proc.cmdline", "glob": "sh*"},
    {"field": "proc.tty", ">": 100},
    {"priority": ">= warning"},
    {"all": ["rule == Other", "proc.name == sh"]},
    {"not": {"field": "container.id", "startswith": "1a"}},
]


@settings(max_examples=60)
@given(
    chosen=st.lists(st.sampled_from(range(len(_CONDITIONS))), min_size=1, max_size=8),
    order=st.randoms(use_true_random=False),
    name=st.sampled_from(["sh", "bash", "zsh"]),
    cmdline=st.sampled_from(["sh", "bash -i", "curl x"]),
    tty=st.sampled_from([0, "34816", 5]),
)
def test_allow_list_result_independent_of_order(
    chosen: list[int], order: Any, name: str, cmdline: str, tty: object
) -> None:
    entries = [_entry(f"e{i}-{c}", _CONDITIONS[c]) for i, c in enumerate(chosen)]
    shuffled = list(entries)
    order.shuffle(shuffled)
    event = alert({"proc.name": name, "proc.cmdline": cmdline, "proc.tty": tty})
    forward = [e.name for e in AllowList.compile(entries, TODAY).matching(event)]
    backward = [e.name for e in AllowList.compile(shuffled, TODAY).matching(event)]
    assert forward == backward


def _engine(tmp_path: Path, text: str, clock: Clock) -> PolicyEngine:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return PolicyEngine.from_files(PolicyConfig(files=[path], watch=False), clock=clock)


_EXPIRING = """
allow_list:
  - name: old-debug-shells
    match: "proc.name == sh"
    reason: debugging session
    owner: team-a
    expires: 2023-11-14
"""


def test_expiry_logged_once_per_day(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2023, 11, 15, 1, tzinfo=dt.UTC).timestamp())
    with capture_logs() as logs:
        engine = _engine(tmp_path, _EXPIRING, clock)
        engine.tick()
        clock.now += 3600
        engine.tick()
        clock.now += 86400
        engine.tick()
    warnings = [log for log in logs if log["event"] == "allowlist_entry_expired"]
    assert [w["entry"] for w in warnings] == ["old-debug-shells", "old-debug-shells"]
    assert all(w["log_level"] == "warning" for w in warnings)


def test_expiry_exposed_in_metric_and_health(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2023, 11, 15, 1, tzinfo=dt.UTC).timestamp())
    engine = _engine(tmp_path, _EXPIRING, clock)
    assert engine.metrics.sample("policy_allowlist_expired", entry="old-debug-shells") == 1
    health = engine.health.get("policy")
    assert health is not None
    assert health.details["allow_list_expired"] == ["old-debug-shells"]


def test_suppression_counted_per_entry(tmp_path: Path) -> None:
    engine = _engine(tmp_path, _EXPIRING, Clock(dt.datetime(2023, 11, 14, tzinfo=dt.UTC).timestamp()))
    event = engine.process(alert())
    assert event.to_dict()["router"]["suppressed"] == {"entries": ["old-debug-shells"]}
    assert engine.metrics.sample("policy_suppressed_total", entry="old-debug-shells") == 1


_APP = """
outputs:
  siem: {type: stdout}
  pager: {type: stdout}
routes:
  - name: shells
    outputs: [siem, pager]
    suppressed: %s
policy:
  files: [%s]
  watch: false
"""

_KNOWN_SHELLS = """
allow_list:
  - name: known-shells
    match: {field: proc.cmdline, glob: "sh -c clear*"}
    reason: the demo pod opens this shell every minute
    owner: team-a
"""


async def _deliver(tmp_path: Path, mode: str) -> tuple[RecordingOutput, RecordingOutput]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_KNOWN_SHELLS)
    siem = RecordingOutput("siem", notifies=False)
    pager = RecordingOutput("pager", notifies=True)
    app = RouterApp(parse_config(_APP % (mode, policy), "t.yaml"), overrides={"siem": siem, "pager": pager})
    await app.start(ingest=False)
    try:
        app.pipeline.submit([parse_alert(json.loads(corpus_lines()[0]))])
        app.pipeline.submit([alert()])
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=1)
    return siem, pager


async def test_suppressed_alert_kept_from_notifying_output(tmp_path: Path) -> None:
    _, pager = await _deliver(tmp_path, "mark")
    assert [e.output_fields["proc.cmdline"] for e in pager.received] == ["sh"]


async def test_suppressed_alert_marked_for_siem(tmp_path: Path) -> None:
    siem, _ = await _deliver(tmp_path, "mark")
    marks = [e.annotations.get("suppressed") for e in siem.received]
    assert marks == [{"entries": ["known-shells"]}, None]


async def test_suppressed_alert_dropped_when_route_says_drop(tmp_path: Path) -> None:
    siem, _ = await _deliver(tmp_path, "drop")
    assert [e.output_fields["proc.cmdline"] for e in siem.received] == ["sh"]
