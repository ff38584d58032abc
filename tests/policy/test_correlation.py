"""Correlation: sequence, threshold and distinct windows, bounded state, and incidents through the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router.app import RouterApp
from router.config import parse_config
from router.config.policy import CorrelationRule
from router.event import Event
from router.policy.correlation import CorrelationState
from tests.policy.alerts import alert
from tests.policy.recording import RecordingOutput

SHELL = {"field": "rule", "equals": "Terminal shell in container"}
DOWNLOAD = {"field": "rule", "equals": "Download tool"}
WRITE = {"field": "rule", "equals": "Write below etc"}


def _rule(kind: str, **fields: Any) -> CorrelationState:
    config = {
        "name": f"{kind}-rule",
        "kind": kind,
        "key": ["container.id"],
        "window_s": 60,
        "incident": {"rule": "Incident", "priority": "critical"},
        **fields,
    }
    return CorrelationState(CorrelationRule.model_validate(config))


def test_sequence_fires_on_last_step() -> None:
    state = _rule("sequence", steps=[SHELL, DOWNLOAD])
    shell = alert()
    download = alert(rule="Download tool")
    assert state.process(shell, 0.0) is None
    incident = state.process(download, 59.9)
    assert incident is not None
    assert incident.annotations["incident"]["alert_ids"] == [shell.id, download.id]
    assert incident.rule == "Incident"
    assert incident.priority_name == "Critical"


def test_sequence_out_of_order_does_not_fire() -> None:
    state = _rule("sequence", steps=[SHELL, DOWNLOAD])
    assert state.process(alert(rule="Download tool"), 0.0) is None
    assert state.process(alert(), 1.0) is None


def test_sequence_step_at_window_end_does_not_fire() -> None:
    state = _rule("sequence", steps=[SHELL, DOWNLOAD])
    state.process(alert(), 0.0)
    assert state.process(alert(rule="Download tool"), 60.0) is None


def test_sequence_restarts_from_later_first_step() -> None:
    state = _rule("sequence", steps=[SHELL, DOWNLOAD])
    state.process(alert(), 0.0)
    later = alert()
    state.process(later, 50.0)
    incident = state.process(alert(rule="Download tool"), 100.0)
    assert incident is not None
    assert incident.annotations["incident"]["alert_ids"][0] == later.id


def test_sequence_of_three_steps_needs_all() -> None:
    state = _rule("sequence", steps=[SHELL, DOWNLOAD, WRITE])
    state.process(alert(), 0.0)
    assert state.process(alert(rule="Download tool"), 1.0) is None
    assert state.process(alert(rule="Write below etc"), 2.0) is not None


def test_sequence_keys_do_not_mix() -> None:
    state = _rule("sequence", steps=[SHELL, DOWNLOAD])
    state.process(alert({"container.id": "a"}), 0.0)
    assert state.process(alert({"container.id": "b"}, rule="Download tool"), 1.0) is None


def test_threshold_fires_at_count() -> None:
    state = _rule("threshold", match=SHELL, count=3)
    assert state.process(alert(), 0.0) is None
    assert state.process(alert(), 1.0) is None
    assert state.process(alert(), 2.0) is not None


def test_threshold_forgets_alerts_past_window() -> None:
    state = _rule("threshold", match=SHELL, count=2)
    state.process(alert(), 0.0)
    assert state.process(alert(), 60.0) is None


def test_distinct_counts_different_values() -> None:
    state = _rule("distinct", match=SHELL, count=3, distinct_field="k8s.pod.name", key=["rule"])
    assert state.process(alert({"k8s.pod.name": "a"}), 0.0) is None
    assert state.process(alert({"k8s.pod.name": "a"}), 1.0) is None
    assert state.process(alert({"k8s.pod.name": "b"}), 2.0) is None
    incident = state.process(alert({"k8s.pod.name": "c"}), 3.0)
    assert incident is not None
    assert len(incident.annotations["incident"]["alert_ids"]) == 3


def test_state_bounded_by_max_keys() -> None:
    state = _rule("threshold", match=SHELL, count=5, max_keys=10)
    for index in range(25):
        state.process(alert({"container.id": f"c{index}"}), 0.0)
    assert len(state.tracks) == 10
    assert state.evicted == 15


def test_expire_drops_keys_past_window() -> None:
    state = _rule("threshold", match=SHELL, count=5)
    state.process(alert({"container.id": "a"}), 0.0)
    state.process(alert({"container.id": "b"}), 30.0)
    assert state.expire(60.0) == 1
    assert list(state.tracks) != []


@given(offsets=st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), min_size=1, max_size=25))
def test_threshold_fires_only_with_count_inside_window(offsets: list[float]) -> None:
    """Property: an incident joins exactly ``count`` alerts whose times span less than the window."""
    state = _rule("threshold", match=SHELL, count=3)
    times: dict[str, float] = {}
    for now in sorted(offsets):
        event = alert()
        times[event.id] = now
        incident = state.process(event, now)
        if incident is not None:
            joined = [times[i] for i in incident.annotations["incident"]["alert_ids"]]
            assert len(joined) == 3
            assert max(joined) - min(joined) < 60


_APP = """
outputs:
  siem: {type: stdout}
routes:
  - name: all
    outputs: [siem]
policy:
  files: [%s]
  watch: false
"""

_POLICY = """
correlation:
  - name: shell-then-download
    kind: sequence
    key: [container.id]
    window_s: 300
    steps:
      - {field: rule, equals: Terminal shell in container}
      - {field: rule, equals: Download tool}
    incident: {rule: Shell then download in container, priority: critical}
"""


async def test_incident_routed_like_any_alert(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_POLICY)
    siem = RecordingOutput("siem", notifies=False)
    app = RouterApp(parse_config(_APP % policy, "t.yaml"), overrides={"siem": siem})
    await app.start(ingest=False)
    try:
        app.pipeline.submit([alert(), alert(rule="Download tool")])
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=1)
    rules = [event.rule for event in siem.received]
    assert rules == ["Terminal shell in container", "Download tool", "Shell then download in container"]
    incident: Event = siem.received[-1]
    assert incident.to_dict()["router"]["incident"]["alert_ids"] == [e.id for e in siem.received[:2]]


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["shell", "download"]), st.floats(min_value=0, max_value=5, allow_nan=False)),
        min_size=1,
        max_size=20,
    )
)
def test_sequence_incident_joins_ordered_steps_in_window(steps: list[tuple[str, float]]) -> None:
    """Property: an incident joins a shell then a download whose times span less than the window."""
    state = _rule("sequence", steps=[SHELL, DOWNLOAD], window_s=3)
    now = 0.0
    seen: dict[str, tuple[str, float]] = {}
    for kind, gap in steps:
        now += gap
        event = alert() if kind == "shell" else alert(rule="Download tool")
        seen[event.id] = (kind, now)
        incident = state.process(event, now)
        if incident is None:
            continue
        joined = [seen[i] for i in incident.annotations["incident"]["alert_ids"]]
        assert [step for step, _ in joined] == ["shell", "download"]
        assert joined[1][1] - joined[0][1] < 3


@given(containers=st.lists(st.integers(min_value=0, max_value=50), max_size=60))
def test_correlation_keys_never_exceed_max(containers: list[int]) -> None:
    state = _rule("threshold", match=SHELL, count=100, max_keys=7)
    for index, container in enumerate(containers):
        state.process(alert({"container.id": f"c{container}"}), float(index))
        assert len(state.tracks) <= 7
