"""Config: closed models, every problem listed with file, line and key path, secrets never shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.config import ConfigError, config_warnings, load_config, parse_config, resolve_secrets

VALID = """
outputs:
  siem:
    type: kafka
    brokers: [127.0.0.1:9092]
    topic: falco
  soc:
    type: slack
    token: {env: TEST_SLACK_TOKEN}
    channel: C0123
  hook:
    type: webhook
    url: http://127.0.0.1:9/alerts
routes:
  - name: all-to-siem
    outputs: [siem]
  - name: urgent
    min_priority: warning
    outputs: [soc, hook]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "router.yaml")
    return [str(p) for p in caught.value.problems]


def test_embedded_default_routes_everything_to_stdout() -> None:
    config = load_config(None)
    assert config.ingest.http.listen == "127.0.0.1:2801"
    assert config.outputs["stdout"].type == "stdout"
    assert config.routes[0].outputs == ["stdout"]


def test_valid_config_loads() -> None:
    config = parse_config(VALID, "router.yaml")
    assert sorted(config.outputs) == ["hook", "siem", "soc"]


def test_kafka_defaults_are_safe() -> None:
    kafka = parse_config(VALID, "router.yaml").outputs["siem"]
    assert kafka.acks == "all"  # type: ignore[union-attr]
    assert kafka.enable_idempotence is True  # type: ignore[union-attr]


def test_every_problem_listed_with_line_and_path() -> None:
    text = VALID.replace("topic: falco", "topik: falco").replace("min_priority: warning", "min_priority: loud")
    text += "  - name: broken\n    outputs: [nowhere]\n"
    problems = problems_of(text)
    assert problems == [
        "router.yaml:3: outputs.siem.topic: required key is missing",
        "router.yaml:6: outputs.siem.topik: unknown key; check the spelling against the documented settings"
        " (found 'falco')",
        "router.yaml:18: routes.1.min_priority: unknown priority 'loud': expected one of emergency, alert, critical,"
        " error, warning, notice, informational, debug (found 'loud')",
        "router.yaml:21: routes.2.outputs: names 'nowhere', which is not an output; defined outputs: hook, siem, soc",
    ]


def test_literal_secret_rejected_and_not_echoed() -> None:
    problems = problems_of(VALID.replace("{env: TEST_SLACK_TOKEN}", "xoxb-0000-secret-value"))
    assert any("a secret must not be written in the config" in p for p in problems)
    assert not any("xoxb-0000-secret-value" in p for p in problems)


def test_missing_secret_reported_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SLACK_TOKEN", raising=False)
    problems = resolve_secrets(parse_config(VALID, "router.yaml"))
    assert [str(p) for p in problems] == [
        "outputs.soc.token: environment variable TEST_SLACK_TOKEN is not set or empty"
    ]


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("xoxb-from-file\n")
    config = parse_config(VALID.replace("{env: TEST_SLACK_TOKEN}", f"{{file: {secret}}}"), "router.yaml")
    assert config.outputs["soc"].token.reveal() == "xoxb-from-file"  # type: ignore[union-attr]


def test_duplicate_key_reported() -> None:
    problems = problems_of(VALID.replace("    topic: falco\n", "    topic: falco\n    topic: other\n"))
    assert any("outputs.siem.topic: key appears twice" in p for p in problems)


def test_invalid_yaml_reports_line() -> None:
    problems = problems_of("outputs:\n  a: [1, 2\nroutes: []\n")
    assert problems[0].startswith("router.yaml:3: <top level>: invalid YAML")


def test_idempotence_requires_acks_all() -> None:
    problems = problems_of(VALID.replace("topic: falco", "topic: falco\n    acks: '1'"))
    assert any("enable_idempotence requires acks: all" in p for p in problems)


def test_slack_needs_a_channel_with_a_token() -> None:
    problems = problems_of(VALID.replace("    channel: C0123\n", ""))
    assert any("token needs a channel" in p for p in problems)


def test_unknown_output_type_reported() -> None:
    problems = problems_of(VALID.replace("type: webhook", "type: pagerduty"))
    assert any("outputs.hook" in p and "pagerduty" in p for p in problems)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args], check=False, capture_output=True, text=True, env=env, timeout=60
    )


def test_check_command_accepts_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(VALID)
    result = run_cli("check", "--config", str(path), env={"TEST_SLACK_TOKEN": "xoxb-test", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "OK (3 outputs, 2 routes)" in result.stdout


def test_check_command_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(VALID.replace("topic: falco", "topik: falco").replace("{env: TEST_SLACK_TOKEN}", "xoxb-leak"))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert "3 problem(s) found" in result.stderr
    assert "xoxb-leak" not in result.stderr + result.stdout


def test_check_command_reports_missing_secret(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(VALID)
    result = run_cli("check", "--config", str(path), env={"PATH": ""})
    assert result.returncode == 1
    assert "environment variable TEST_SLACK_TOKEN is not set" in result.stderr
    assert run_cli("check", "--config", str(path), "--skip-secrets", env={"PATH": ""}).returncode == 0


def test_warns_when_no_route_takes_internal_alerts() -> None:
    warnings = config_warnings(parse_config(VALID, "router.yaml"))
    assert any("no route takes Falco's internal alerts" in w for w in warnings)


def test_warns_about_unused_output() -> None:
    config = parse_config(VALID.replace("outputs: [soc, hook]", "outputs: [soc]"), "router.yaml")
    assert "output hook is not used by any route, so it receives nothing" in config_warnings(config)


def test_embedded_default_has_no_warning() -> None:
    assert config_warnings(load_config(None)) == []


def test_readme_example_is_the_shipped_example() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- example:start -->\n```yaml\n", 1)[1].split("```\n<!-- example:end -->", 1)[0]
    assert block == (root / "examples" / "router.yaml").read_text(encoding="utf-8")


def test_shipped_example_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "examples" / "router.yaml")
    assert sorted(config.outputs) == ["oncall-webhook", "siem", "soc-slack"]
    assert config_warnings(config) == []


def test_duplicate_route_reported_with_line_beside_schema_problems() -> None:
    text = VALID.replace("topic: falco", "topik: falco") + "  - name: urgent\n    outputs: [siem]\n"
    problems = problems_of(text)
    assert (
        "router.yaml:20: routes.2.name: route name 'urgent' is used by another route; route names must be unique"
        in problems
    )
    assert any("outputs.siem.topik: unknown key" in p for p in problems)


def test_duplicate_route_alone_reported_with_line() -> None:
    problems = problems_of(VALID + "  - name: urgent\n    outputs: [siem]\n")
    assert problems == [
        "router.yaml:20: routes.2.name: route name 'urgent' is used by another route; route names must be unique"
    ]


def test_url_credentials_never_echoed() -> None:
    problems = problems_of(VALID.replace("http://127.0.0.1:9/alerts", "http://admin:P4ss@127.0.0.1:99999/x?token=abc"))
    text = "\n".join(problems)
    assert "P4ss" not in text
    assert "token=abc" not in text
    assert "http://***@127.0.0.1:99999/x?***" in text


def test_warns_about_credentials_in_url_and_headers() -> None:
    text = VALID.replace("http://127.0.0.1:9/alerts", "http://127.0.0.1:9/alerts?token=abc")
    text = text.replace("    url: http", "    headers: {Authorization: Bearer abc}\n    url: http")
    warnings = config_warnings(parse_config(text, "router.yaml"))
    assert any("outputs.hook.url carries a user name, password or query string" in w for w in warnings)
    assert "outputs.hook.headers.Authorization looks like a credential: use secret_headers instead" in warnings


def test_check_reports_missing_secret_with_schema_problems(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(VALID.replace("topic: falco", "topik: falco"))
    result = run_cli("check", "--config", str(path), env={"PATH": ""})
    assert result.returncode == 1
    assert "outputs.siem.topik: unknown key" in result.stderr
    assert (
        "router.yaml:9: outputs.soc.token: environment variable TEST_SLACK_TOKEN is not set or empty" in result.stderr
    )
