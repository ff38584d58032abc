"""``falco-router replay --dry-run`` and the allow-list report of ``falco-router check``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.cli import main
from router.logs import configure_logging
from tests.support.data import CORPUS, cases

_CONFIG = """
outputs:
  siem: {type: stdout}
  pager: {type: webhook, url: "http://127.0.0.1:9/hook"}
routes:
  - {name: security, outputs: [siem, pager]}
  - {name: ops, outputs: [siem], internal: only}
policy:
  files: [%s]
"""

_POLICY = """
allow_list:
  - name: never-matches
    match: "proc.name == no-such-process"
    reason: test
    owner: team-a
  - name: expiring-soon
    match: "proc.name == sh"
    reason: test
    owner: team-b
    expires: %s
dedup:
  - name: same-action
    window_s: 10
    distinct: [proc.cmdline]
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # The commands configure logging onto the captured stderr, which pytest closes after the test.
    yield
    configure_logging("debug", "json")


def _write(tmp_path: Path, expires: dt.date) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_POLICY % expires.isoformat())
    config = tmp_path / "router.yaml"
    config.write_text(_CONFIG % policy)
    return config


def _c07_file(tmp_path: Path) -> Path:
    path = tmp_path / "c07.jsonl"
    path.write_text("".join(json.dumps(row["event"]) + "\n" for row in cases("C07")))
    return path


def test_dry_run_prints_dedup_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, dt.date(2000, 1, 1))
    assert main(["replay", str(_c07_file(tmp_path)), "--dry-run", "--config", str(config)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["kind"], d["dedup"]["role"]) for d in decisions] == [
        ("alert", "first"),
        ("alert", "repeat"),
        ("dedup_update", "update"),
    ]
    assert decisions[1]["held"] == {"pager": "dedup"}
    assert decisions[2]["outputs"] == ["pager"]


def test_dry_run_names_suppressing_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, dt.date(2999, 1, 1))
    main(["replay", str(_c07_file(tmp_path)), "--dry-run", "--config", str(config)])
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["suppressed_by"] == ["expiring-soon"]
    assert first["outputs"] == ["siem"]
    assert first["held"] == {"pager": "allow_list"}


def test_check_lists_entry_expiring_within_week(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soon = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)
    assert main(["check", "--config", str(_write(tmp_path, soon)), "--skip-secrets"]) == 0
    output = capsys.readouterr().out
    assert f"expiring-soon (team-b) expires on {soon}" in output
    assert "never-matches" not in output


def test_check_lists_entries_unmatched_in_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    later = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
    config = _write(tmp_path, later)
    replay = _c07_file(tmp_path)
    assert main(["check", "--config", str(config), "--skip-secrets", "--replay", str(replay)]) == 0
    output = capsys.readouterr().out
    assert "never-matches (team-a) matched no alert in the replay" in output
    assert "expiring-soon (team-b) matched no alert" not in output


def test_check_rejects_invalid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, dt.date(2999, 1, 1))
    (tmp_path / "policy.yaml").write_text("dedup:\n  - name: d\n    window_s: -1\n")
    assert main(["check", "--config", str(config), "--skip-secrets"]) == 1
    assert "dedup.0.window_s" in capsys.readouterr().err


def test_default_policy_file_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = Path(__file__).resolve().parents[2] / "rules" / "default-policy.yaml"
    config = tmp_path / "router.yaml"
    config.write_text(_CONFIG % policy)
    assert main(["replay", str(CORPUS / "falco_events.jsonl"), "--dry-run", "--config", str(config)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    internal = [d for d in decisions if d["rule"].startswith("Falco internal:")]
    assert internal != []
    assert all(d["routes"] == ["ops"] for d in internal)


_SEQUENCE = """
correlation:
  - name: shell-then-download
    kind: sequence
    key: [container.id]
    window_s: 300
    steps: ["rule == Terminal shell in container", "rule == Download tool"]
    incident: {rule: Shell then download, priority: critical}
"""


def test_dry_run_prints_incident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_SEQUENCE)
    config = tmp_path / "router.yaml"
    config.write_text(_CONFIG % policy)
    shell = cases("C07")[0]["event"]
    download = {**shell, "rule": "Download tool", "time": "2023-11-14T22:13:30.000000000Z"}
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(json.dumps(shell) + "\n" + json.dumps(download) + "\n")
    assert main(["replay", str(alerts), "--dry-run", "--config", str(config)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    incident = decisions[-1]
    assert incident["kind"] == "incident"
    assert incident["rule"] == "Shell then download"
    assert incident["incident"]["alert_ids"] == [d["alert_id"] for d in decisions[:2]]
    assert incident["outputs"] == ["siem", "pager"]


def test_dry_run_reads_line_after_byte_order_mark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, dt.date(2000, 1, 1))
    alerts = _c07_file(tmp_path)
    alerts.write_bytes(b"\xef\xbb\xbf" + alerts.read_bytes())
    assert main(["replay", str(alerts), "--dry-run", "--config", str(config)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["line"] for d in decisions if d["kind"] == "alert"] == [1, 2]
