"""The engine: policy file problems, atomic reload, the file watcher, and Falco internal alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.app import RouterApp, StartupError
from router.config import ConfigError, parse_config
from router.config.policy import PolicyConfig
from router.event import parse_alert
from router.policy.engine import PolicyEngine, read_policy_files
from tests.policy.alerts import alert
from tests.policy.recording import Clock, RecordingOutput
from tests.support.data import cases

GOOD = """
allow_list:
  - name: shells
    match: "proc.name == sh"
    reason: demo
    owner: team-a
"""

BAD = """
allow_list:
  - name: shells
    match:
      all:
        - {field: proc.cmdline, regex: "("}
    reason: demo
    owner: team-a
"""


def test_bad_expression_reported_with_file_line_and_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as caught:
        read_policy_files([path])
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert problem.line == 4
    assert problem.path == "allow_list.0.match"
    assert "all.0.regex: invalid regular expression" in problem.message


def test_name_used_in_two_files_is_a_problem(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(GOOD)
    second.write_text(GOOD)
    with pytest.raises(ConfigError) as caught:
        read_policy_files([first, second])
    assert "'shells' is also used in" in caught.value.problems[0].message


def test_unknown_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allow_lists: []\n")
    with pytest.raises(ConfigError) as caught:
        read_policy_files([path])
    assert caught.value.problems[0].path == "allow_lists"


def _engine(tmp_path: Path, text: str) -> tuple[PolicyEngine, Path]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    engine = PolicyEngine.from_files(PolicyConfig(files=[path], watch_interval_s=0.01), clock=Clock())
    return engine, path


def test_reload_with_error_keeps_old_policy(tmp_path: Path) -> None:
    engine, path = _engine(tmp_path, GOOD)
    path.write_text(BAD)
    problems = engine.reload()
    assert problems != []
    assert "suppressed" in engine.process(alert()).annotations


def test_reload_error_shown_in_health(tmp_path: Path) -> None:
    engine, path = _engine(tmp_path, GOOD)
    path.write_text(BAD)
    engine.reload()
    health = engine.health.get("policy")
    assert health is not None
    assert health.status == "degraded"
    assert "reload failed" in health.reason


def test_reload_swaps_to_new_policy(tmp_path: Path) -> None:
    engine, path = _engine(tmp_path, GOOD)
    path.write_text(GOOD.replace("proc.name == sh", "proc.name == bash"))
    assert engine.reload() == []
    assert "suppressed" not in engine.process(alert()).annotations
    assert engine.metrics.sample("policy_reloads_total", result="ok") == 1


def test_reload_keeps_open_dedup_windows_of_unchanged_rules(tmp_path: Path) -> None:
    text = "dedup:\n  - name: d\n    window_s: 10\n"
    engine, path = _engine(tmp_path, text)
    engine.process(alert(), now=100.0)
    path.write_text(text + GOOD.replace("proc.name == sh", "proc.name == bash"))
    assert engine.reload() == []
    assert engine.process(alert(), now=101.0).annotations["dedup"]["role"] == "repeat"


async def test_watcher_reloads_changed_file(tmp_path: Path) -> None:
    engine, path = _engine(tmp_path, GOOD)
    old_digest = engine.policy.digest
    task = asyncio.create_task(engine.watch_files())
    try:
        await asyncio.sleep(0.05)
        path.write_text(GOOD.replace("proc.name == sh", "proc.name == zsh") + "\n")
        async with asyncio.timeout(5):
            while engine.policy.digest == old_digest:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "suppressed" not in engine.process(alert()).annotations


def test_internal_alerts_rate_limited_per_host(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path, "internal: {max_per_host: 2, interval_s: 60}\n")
    event = cases("C11")[0]["event"]
    limited = [
        engine.process(parse_alert(dict(event, hostname=host)), now=10.0).annotations["internal"]["rate_limited"]
        for host in ["a", "a", "a", "b"]
    ]
    assert limited == [False, False, True, False]


def test_internal_rate_limit_resets_after_interval(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path, "internal: {max_per_host: 1, interval_s: 60}\n")
    event = cases("C11")[0]["event"]
    engine.process(parse_alert(event), now=0.0)
    assert not engine.process(parse_alert(event), now=60.0).annotations["internal"]["rate_limited"]


async def test_internal_alert_goes_to_ops_route_only(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("{}\n")
    config = parse_config(
        f"""
outputs:
  siem: {{type: stdout}}
  ops: {{type: stdout}}
routes:
  - {{name: security, outputs: [siem]}}
  - {{name: ops, outputs: [ops], internal: only}}
policy: {{files: [{path}], watch: false}}
""",
        "t.yaml",
    )
    siem = RecordingOutput("siem", notifies=False)
    ops = RecordingOutput("ops", notifies=True)
    app = RouterApp(config, overrides={"siem": siem, "ops": ops})
    await app.start(ingest=False)
    try:
        app.pipeline.submit([parse_alert(cases("C11")[0]["event"]), alert()])
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=1)
    assert [e.rule for e in ops.received] == ["Falco internal: hot restart failure"]
    assert [e.rule for e in siem.received] == ["Terminal shell in container"]


async def test_app_start_fails_on_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    config = parse_config(
        f"outputs: {{siem: {{type: stdout}}}}\nroutes: [{{name: all, outputs: [siem]}}]\npolicy: {{files: [{path}]}}\n",
        "t.yaml",
    )
    app = RouterApp(config, overrides={"siem": RecordingOutput("siem", notifies=False)})
    with pytest.raises(StartupError, match=r"allow_list\.0\.match"):
        await app.start(ingest=False)
    await app.shutdown(grace_s=0)


async def test_shutdown_sends_open_dedup_updates(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("dedup:\n  - name: d\n    window_s: 600\n")
    config = parse_config(
        f"outputs: {{pager: {{type: stdout}}}}\nroutes: [{{name: all, outputs: [pager]}}]\n"
        f"policy: {{files: [{path}], watch: false}}\n",
        "t.yaml",
    )
    pager = RecordingOutput("pager", notifies=True)
    app = RouterApp(config, overrides={"pager": pager})
    await app.start(ingest=False)
    app.pipeline.submit([alert(), alert()])
    await app.pipeline.wait_idle()
    await app.shutdown(grace_s=1)
    roles = [e.annotations["dedup"]["role"] for e in pager.received]
    assert roles == ["first", "update"]
