"""Dedup: fingerprints, window edges, bounded state, and case C07 through the real app."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router.app import RouterApp
from router.config import parse_config
from router.config.policy import DedupRule, PolicyConfig
from router.event import Event, parse_alert
from router.policy.dedup import DedupState, fingerprint
from router.policy.engine import PolicyEngine
from tests.policy.alerts import BASE, alert, grpc_form
from tests.policy.recording import Clock, RecordingOutput
from tests.support.data import cases

KEY = ["rule", "hostname", "container.id"]


def _rule(**overrides: Any) -> DedupRule:
    return DedupRule.model_validate({"name": "default", "key": KEY, "window_s": 10, **overrides})


def test_fingerprint_ignores_key_order() -> None:
    event = alert()
    reordered = ["container.id", "rule", "hostname"]
    assert fingerprint(event, KEY) == fingerprint(event, reordered)


def test_fingerprint_same_for_grpc_form() -> None:
    document = {**BASE, "output_fields": {**BASE["output_fields"], "user.name": None, "proc.pid": 7}}
    keys = ["proc.tty", "user.name", "proc.pid", "container.id"]
    json_event = parse_alert(copy.deepcopy(document))
    grpc_event = parse_alert(grpc_form(document), transport="grpc")
    assert fingerprint(json_event, keys) == fingerprint(grpc_event, keys)


def test_fingerprint_tells_missing_from_null() -> None:
    assert fingerprint(alert({"user.name": None}), ["user.name"]) != fingerprint(alert(), ["user.name"])


def test_first_alert_goes_out_as_first() -> None:
    state = DedupState(_rule())
    annotation = state.process(alert(), 100.0, [].append)
    assert annotation["role"] == "first"
    assert annotation["count"] == 1


def test_repeat_inside_window_is_folded() -> None:
    state = DedupState(_rule())
    first = alert()
    state.process(first, 100.0, [].append)
    annotation = state.process(alert(), 109.999, [].append)
    assert annotation["role"] == "repeat"
    assert annotation["count"] == 2
    assert annotation["id"] == first.id


def test_alert_at_window_end_starts_new_group() -> None:
    state = DedupState(_rule())
    state.process(alert(), 100.0, [].append)
    annotation = state.process(alert(), 110.0, [].append)
    assert annotation["role"] == "first"


def test_closing_group_with_repeats_emits_update() -> None:
    state = DedupState(_rule(distinct=["proc.cmdline"]))
    updates: list[Event] = []
    first = alert({"proc.cmdline": "sh -c x"})
    state.process(first, 100.0, updates.append)
    state.process(alert({"proc.cmdline": "sh"}), 101.0, updates.append)
    state.expire(109.9, updates.append)
    assert updates == []
    state.expire(110.0, updates.append)
    assert len(updates) == 1
    dedup = updates[0].annotations["dedup"]
    assert dedup["role"] == "update"
    assert dedup["final"] is True
    assert dedup["count"] == 2
    assert dedup["id"] == first.id
    assert dedup["distinct"] == {"proc.cmdline": ["sh -c x", "sh"]}


def test_group_without_repeats_emits_nothing() -> None:
    state = DedupState(_rule())
    updates: list[Event] = []
    state.process(alert(), 100.0, updates.append)
    state.expire(200.0, updates.append)
    assert updates == []
    assert state.groups == {}


def test_distinct_values_are_capped() -> None:
    state = DedupState(_rule(distinct=["proc.cmdline"], max_distinct=2))
    updates: list[Event] = []
    for index in range(4):
        state.process(alert({"proc.cmdline": f"cmd {index}"}), 100.0 + index, updates.append)
    state.close_all(updates.append)
    dedup = updates[0].annotations["dedup"]
    assert dedup["distinct"]["proc.cmdline"] == ["cmd 0", "cmd 1"]
    assert dedup["distinct_truncated"] is True
    assert dedup["count"] == 4


def test_max_keys_closes_oldest_group() -> None:
    state = DedupState(_rule(max_keys=2))
    updates: list[Event] = []
    for index in range(3):
        state.process(alert({"container.id": f"c{index}"}), 100.0, updates.append)
    assert len(state.groups) == 2
    assert state.evicted == 1


@given(
    offsets=st.lists(st.floats(min_value=0, max_value=40, allow_nan=False), min_size=1, max_size=30),
    window=st.floats(min_value=0.5, max_value=15, allow_nan=False),
)
def test_every_alert_counted_once_across_windows(offsets: list[float], window: float) -> None:
    """Property: firsts plus folded repeats equal the alerts seen, and each group spans less than a window."""
    state = DedupState(_rule(window_s=window))
    updates: list[Event] = []
    firsts = 0
    starts: dict[str, float] = {}
    for now in sorted(offsets):
        annotation = state.process(alert(), now, updates.append)
        if annotation["role"] == "first":
            firsts += 1
            starts[annotation["id"]] = now
        else:
            assert now - starts[annotation["id"]] < window
    state.close_all(updates.append)
    folded = sum(update.annotations["dedup"]["count"] - 1 for update in updates)
    assert firsts + folded == len(offsets)


# Case C07 through the real app: one kubectl exec, two alerts 0.25 ms apart.

_APP_CONFIG = """
outputs:
  siem: {type: stdout}
  pager: {type: stdout}
routes:
  - name: all
    outputs: [siem, pager]
policy:
  files: [%s]
  watch: false
"""

_POLICY = """
dedup:
  - name: same-action
    key: [rule, hostname, container.id]
    window_s: 10
    distinct: [proc.cmdline]
"""


async def _run_c07(tmp_path: Path) -> tuple[RecordingOutput, RecordingOutput, Clock]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_POLICY)
    config = parse_config(_APP_CONFIG % policy, "test.yaml")
    siem = RecordingOutput("siem", notifies=False)
    pager = RecordingOutput("pager", notifies=True)
    app = RouterApp(config, overrides={"siem": siem, "pager": pager})
    assert app.policy is not None
    clock = Clock()
    app.policy.clock = clock
    await app.start(ingest=False)
    try:
        for row in cases("C07"):
            app.pipeline.submit([parse_alert(row["event"])])
        await app.pipeline.wait_idle()
        clock.now += 10
        app.policy.tick()
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=1)
    return siem, pager, clock


async def test_case_c07_kafka_gets_both_raw_alerts(tmp_path: Path) -> None:
    siem, _, _ = await _run_c07(tmp_path)
    expected = [row["event"]["output_fields"]["proc.cmdline"] for row in cases("C07")]
    assert [e.output_fields["proc.cmdline"] for e in siem.received] == expected
    assert [e.annotations["dedup"]["count"] for e in siem.received] == [1, 2]
    assert siem.received[0].annotations["dedup"]["id"] == siem.received[1].annotations["dedup"]["id"]


async def test_case_c07_pager_gets_first_and_update(tmp_path: Path) -> None:
    _, pager, _ = await _run_c07(tmp_path)
    roles = [e.annotations["dedup"]["role"] for e in pager.received]
    assert roles == ["first", "update"]
    groups = {e.annotations["dedup"]["id"] for e in pager.received}
    assert len(groups) == 1


async def test_case_c07_update_lists_count_and_cmdlines(tmp_path: Path) -> None:
    _, pager, _ = await _run_c07(tmp_path)
    update = pager.received[-1].to_dict()["router"]["dedup"]
    assert update["count"] == 2
    assert update["final"] is True
    expected = [row["event"]["output_fields"]["proc.cmdline"] for row in cases("C07")]
    assert update["distinct"]["proc.cmdline"] == expected


def test_fingerprint_keeps_number_like_ids_apart() -> None:
    """Container ids such as 0000000e0001 must not be read as the number 0."""
    first = alert({"container.id": "0000000e0001"})
    second = alert({"container.id": "000000000e01"})
    assert fingerprint(first, KEY) != fingerprint(second, KEY)


def test_engine_counts_updates(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_POLICY)
    updates: list[Event] = []
    engine = PolicyEngine.from_files(PolicyConfig(files=[policy]), emit_update=updates.append)
    engine.process(alert(), now=0.0)
    engine.process(alert(), now=1.0)
    engine.tick(now=10.0)
    assert len(updates) == 1
    assert engine.metrics.sample("policy_dedup_updates_total", dedup="same-action") == 1


def test_fingerprint_separator_in_value_cannot_collide() -> None:
    keys = ["container.id", "k8s.pod.name"]
    first = alert({"container.id": "a\x1fk8s.pod.name\x1eb", "k8s.pod.name": "c"})
    second = alert({"container.id": "a", "k8s.pod.name": "b\x1fk8s.pod.name\x1ec"})
    assert fingerprint(first, keys) != fingerprint(second, keys)


def test_fingerprint_accepts_lone_surrogate() -> None:
    assert len(fingerprint(alert({"proc.cmdline": "x\ud800"}), ["proc.cmdline"])) == 16


@given(containers=st.lists(st.integers(min_value=0, max_value=50), max_size=60))
def test_dedup_windows_never_exceed_max(containers: list[int]) -> None:
    state = DedupState(_rule(max_keys=5))
    for index, container in enumerate(containers):
        state.process(alert({"container.id": f"c{container}"}), float(index) / 10, [].append)
        assert len(state.groups) <= 5
