"""Routes with match expressions, internal alert handling and per-output policy decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.config import ConfigError, parse_config
from router.policy.dedup import fingerprint
from router.routing import Router, held_back
from tests.policy.alerts import alert

_CONFIG = """
outputs:
  siem: {type: stdout}
  pager: {type: stdout}
routes:
  - name: shells
    outputs: [pager]
    match: {field: proc.cmdline, glob: "sh*"}
  - name: audit
    outputs: [siem]
    suppressed: drop
  - name: audit-marked
    outputs: [siem]
    match: "proc.name == bash"
  - name: ops
    outputs: [siem]
    internal: include
"""


def _router() -> Router:
    return Router(parse_config(_CONFIG, "t.yaml").routes)


def test_route_match_selects_alert() -> None:
    plan = _router().plan(alert(), notifying={"pager"})
    assert plan.routes == ["shells", "audit", "ops"]


def test_route_match_rejects_alert() -> None:
    plan = _router().plan(alert({"proc.cmdline": "curl x"}), notifying={"pager"})
    assert "shells" not in plan.routes


def test_internal_alert_only_on_including_route() -> None:
    internal = alert(rule="Falco internal: syscall event drop", source="internal")
    assert _router().plan(internal, notifying={"pager"}).routes == ["ops"]


def test_suppressed_alert_held_from_pager() -> None:
    event = alert()
    event.annotations["suppressed"] = {"entries": ["e"]}
    plan = _router().plan(event, notifying={"pager"})
    assert plan.held["pager"] == "allow_list"


def test_suppressed_alert_reaches_siem_when_any_route_marks() -> None:
    event = alert({"proc.name": "bash"})
    event.annotations["suppressed"] = {"entries": ["e"]}
    plan = _router().plan(event, notifying={"pager"})
    assert plan.outputs == ["siem"]


def test_suppressed_alert_dropped_when_all_routes_drop() -> None:
    event = alert(tags=["x"])
    event.annotations["suppressed"] = {"entries": ["e"]}
    router = Router(parse_config(_CONFIG.replace("    internal: include\n", "    suppressed: drop\n"), "t").routes)
    plan = router.plan(event, notifying={"pager"})
    assert plan.held["siem"] == "allow_list"


@pytest.mark.parametrize(
    ("role", "notifies", "expected"),
    [("first", True, None), ("repeat", True, "dedup"), ("repeat", False, None), ("update", False, "dedup_update")],
)
def test_dedup_roles_per_output_kind(role: str, notifies: bool, expected: str | None) -> None:
    event = alert()
    event.annotations["dedup"] = {"role": role}
    assert held_back(event, notifies=notifies, mark_suppressed=True) == expected


def test_invalid_route_match_is_config_problem() -> None:
    text = _CONFIG.replace('glob: "sh*"', 'regex: "(["')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "routes.0.match"
    assert problem.line == 8
    assert "regex: invalid regular expression" in problem.message


@given(value=st.integers(min_value=-(2**70), max_value=2**70))
def test_fingerprint_same_for_number_and_text(value: int) -> None:
    keys = ["proc.tty", "rule"]
    assert fingerprint(alert({"proc.tty": value}), keys) == fingerprint(alert({"proc.tty": str(value)}), keys)
