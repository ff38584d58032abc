"""The rules rollout against a stand-in Falco process: real files, real SIGHUPs, real HTTP ingest.

Every signal the router sends goes to a pid read from a pid file or /proc. Each test runs its stand-in
under a random process name and checks that the pid is its own child, so no other process can match.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from router.app import RouterApp
from router.config import RouterConfig
from router.rules.files import RulesSet, read_rules_dir
from router.rules.rollout import RULE_REJECTED, RULE_RELOAD_FAILED
from tests.support.data import CORPUS, PROJECT_ROOT, cases, free_port

VALID = [
    "rules_k3s_multipass.yaml",
    "rules_lab_usrlocalbin.yaml",
    "rules_miner_blog.yaml",
    "rules_k8s_outbound_traffic.yaml",
]
REJECT_MARKER = "fake-falco: reject"


async def wait_until(predicate: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Wait for a condition; the limit only stops a hung test and is not what the test checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.02)


@dataclass
class StandIn:
    """A running tests/support/fake_falco.py."""

    process: subprocess.Popen[bytes]
    pid_file: Path
    reload_log: Path
    name: str

    def records(self) -> list[dict[str, Any]]:
        if not self.reload_log.exists():
            return []
        return [json.loads(line) for line in self.reload_log.read_text().splitlines()]

    def signalled(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] != "start"]


@dataclass
class Setup:
    tmp: Path
    source: Path
    target: Path
    name: str = field(default_factory=lambda: f"fk{secrets.token_hex(3)}")
    port: int = field(default_factory=free_port)
    standins: list[StandIn] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.tmp / "falco.pid"

    def start_falco(self, *extra: str, name: str | None = None) -> StandIn:
        reject_alert = self.tmp / "c11.json"
        reject_alert.write_text(json.dumps(cases("C11")[0]["event"]))
        reload_log = self.tmp / "reloads.jsonl"
        command = [
            sys.executable, "-m", "tests.support.fake_falco",
            "--rules-dir", str(self.target), "--pid-file", str(self.pid_file), "--reload-log", str(reload_log),
            "--name", name or self.name, "--reject-marker", REJECT_MARKER, "--reject-alert", str(reject_alert),
            "--ingest-url", f"http://127.0.0.1:{self.port}/", *extra,
        ]  # fmt: skip
        self.pid_file.unlink(missing_ok=True)
        process = subprocess.Popen(command, cwd=PROJECT_ROOT)
        standin = StandIn(process, self.pid_file, reload_log, name or self.name)
        self.standins.append(standin)
        return standin

    def config(self, **rules: Any) -> RouterConfig:
        settings: dict[str, Any] = {
            "enabled": True,
            "source_dir": str(self.source),
            "target_dir": str(self.target),
            "pid_file": str(self.pid_file),
            "scan_proc": False,
            "process_name": self.name,
            "debounce_s": 0.2,
            "poll_interval_s": 0.02,
            "confirm_window_s": 1.0,
            "falco_validate": False,
        }
        settings.update(rules)
        return RouterConfig.model_validate(
            {
                "ingest": {"http": {"listen": f"127.0.0.1:{self.port}"}},
                "outputs": {
                    "ops": {"type": "file", "path": str(self.tmp / "ops.jsonl")},
                    "main": {"type": "file", "path": str(self.tmp / "main.jsonl")},
                },
                "routes": [
                    {"name": "ops", "outputs": ["ops"], "sources": ["internal", "falco_router"], "internal": "include"},
                    {"name": "main", "outputs": ["main"], "sources": ["syscall"]},
                ],
                "falco_rules": settings,
            }
        )

    def ops_alerts(self) -> list[dict[str, Any]]:
        path = self.tmp / "ops.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def started(standin: StandIn) -> None:
    """Wait until the stand-in wrote its pid file, and check that the pid is our own child."""
    await wait_until(lambda: standin.pid_file.exists() and standin.pid_file.read_text().strip() != "", "pid file")
    assert int(standin.pid_file.read_text()) == standin.process.pid


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    source = tmp_path / "source"
    target = tmp_path / "rules.d"
    source.mkdir()
    target.mkdir()
    result = Setup(tmp_path, source, target)
    yield result
    for standin in result.standins:
        if standin.process.poll() is None:
            standin.process.terminate()
        standin.process.wait(timeout=10)


@pytest.fixture
async def run_app() -> AsyncIterator[Callable[[RouterConfig], Any]]:
    apps: list[RouterApp] = []

    async def start(config: RouterConfig) -> RouterApp:
        app = RouterApp(config)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.shutdown(grace_s=5)


def copy_corpus(folder: Path, names: list[str]) -> None:
    for name in names:
        shutil.copy(CORPUS / name, folder / name)


def rollouts(app: RouterApp, result: str) -> float:
    return app.metrics.sample("falco_rules_rollouts_total", result=result)


def active_hash(app: RouterApp) -> str | None:
    for metric in app.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "falco_router_falco_rules_active_info" and sample.value == 1:
                return sample.labels["sha256"]
    return None


async def test_valid_rollout_sends_one_sighup(setup, run_app):  # type: ignore[no-untyped-def]
    falco = setup.start_falco()
    await started(falco)
    copy_corpus(setup.source, VALID)
    app = await run_app(setup.config())

    await wait_until(lambda: rollouts(app, "reloaded") == 1, "one confirmed reload")

    expected = read_rules_dir(setup.source)
    assert len(falco.signalled()) == 1
    assert falco.signalled()[0]["files"] == sorted(VALID)
    assert read_rules_dir(setup.target) == expected
    assert active_hash(app) == expected.sha256
    assert app.health.to_dict()["components"]["falco_rules"]["active_sha256"] == expected.sha256


async def test_reload_confirmed_by_falco_metrics_hash(setup, run_app):  # type: ignore[no-untyped-def]
    metrics_port = free_port()
    falco = setup.start_falco("--metrics-port", str(metrics_port))
    await started(falco)
    copy_corpus(setup.source, VALID[:2])
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    app = await run_app(setup.config(falco_metrics_url=url, confirm_window_s=30))

    await wait_until(lambda: rollouts(app, "reloaded") == 1, "a reload confirmed by the hash change")

    assert [r["event"] for r in falco.signalled()] == ["reload"]


async def test_ignored_sighup_fails_the_reload(setup, run_app):  # type: ignore[no-untyped-def]
    metrics_port = free_port()
    copy_corpus(setup.target, ["rules_lab_usrlocalbin.yaml"])
    old = read_rules_dir(setup.target)
    falco = setup.start_falco("--metrics-port", str(metrics_port), "--ignore-sighup")
    await started(falco)
    copy_corpus(setup.source, VALID[:2])
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    app = await run_app(setup.config(falco_metrics_url=url))

    await wait_until(lambda: rollouts(app, "reload_failed") == 1, "the reload to be marked failed")

    assert "did not change" in app.health.get("falco_rules").reason
    assert read_rules_dir(setup.target) == old
    assert [r["event"] for r in falco.signalled()] == ["ignored"]


BAD_PRIORITY = "- rule: r\n  desc: d\n  condition: proc.name = x\n  output: o\n  priority: urgent\n"
APPEND_AND_OVERRIDE = (
    "- list: l\n  items: [a]\n- list: l\n  items: [b]\n  append: true\n  override:\n    items: append\n"
)
INVALID = {
    "append_enabled": (
        (CORPUS / "rules_invalid_append_enabled.yaml").read_text(),
        1,
        "must have condition or exceptions",
    ),
    "yaml_syntax": ("- rule: a\n  desc: [x\n- rule: b\n", 3, "invalid YAML"),
    "unknown_key": ("- list: l\n  items: [a]\n  itemz: [b]\n", 3, "unknown key 'itemz'"),
    "bad_priority": (BAD_PRIORITY, 5, "unknown priority"),
    "append_and_override": (APPEND_AND_OVERRIDE, 5, "both append and override"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_rules_rejected_without_sighup(setup, run_app, case):  # type: ignore[no-untyped-def]
    text, line, reason = INVALID[case]
    copy_corpus(setup.target, ["rules_lab_usrlocalbin.yaml"])
    old = read_rules_dir(setup.target)
    falco = setup.start_falco()
    await started(falco)
    copy_corpus(setup.source, ["rules_lab_usrlocalbin.yaml"])
    (setup.source / "zz_custom.yaml").write_text(text)
    app = await run_app(setup.config())

    await wait_until(lambda: rollouts(app, "rejected") == 1, "the candidate to be rejected")
    await wait_until(lambda: len(setup.ops_alerts()) == 1, "the router alert on the ops route")

    problems = app.health.get("falco_rules").details["problems"]
    assert any(p.startswith(f"zz_custom.yaml:{line}: ") and reason in p for p in problems), problems
    assert falco.signalled() == []
    assert read_rules_dir(setup.target) == old
    assert active_hash(app) == old.sha256
    alert = setup.ops_alerts()[0]
    assert alert["rule"] == RULE_REJECTED
    assert alert["priority"] == "Error"
    assert alert["source"] == "falco_router"


async def test_hot_restart_failure_rolls_back(setup, run_app):  # type: ignore[no-untyped-def]
    copy_corpus(setup.target, ["rules_lab_usrlocalbin.yaml"])
    old = read_rules_dir(setup.target)
    falco = setup.start_falco()
    await started(falco)
    copy_corpus(setup.source, ["rules_lab_usrlocalbin.yaml"])
    (setup.source / "custom.yaml").write_text(f"# {REJECT_MARKER}\n" + (CORPUS / "rules_miner_blog.yaml").read_text())
    bad = read_rules_dir(setup.source)
    app = await run_app(setup.config(confirm_window_s=30))

    await wait_until(lambda: rollouts(app, "reload_failed") == 1, "the reload to be marked failed")
    await wait_until(lambda: len(setup.ops_alerts()) == 2, "both alerts on the ops route")
    polls = app.rules.polls
    await wait_until(lambda: app.rules.polls >= polls + 20, "twenty more polls of the unchanged source")

    assert [r["event"] for r in falco.signalled()] == ["rejected"]
    assert read_rules_dir(setup.target) == old
    assert active_hash(app) == old.sha256
    assert bad.sha256 in app.rules.failed_hashes
    rules = sorted(a["rule"] for a in setup.ops_alerts())
    assert rules == sorted(["Falco internal: hot restart failure", RULE_RELOAD_FAILED])
    assert app.health.get("falco_rules").details["last_result"] == "reload_failed"


async def test_rejected_set_retried_only_after_change(setup, run_app):  # type: ignore[no-untyped-def]
    falco = setup.start_falco()
    await started(falco)
    (setup.source / "custom.yaml").write_text(
        f"# {REJECT_MARKER}\n" + (CORPUS / "rules_lab_usrlocalbin.yaml").read_text()
    )
    app = await run_app(setup.config())
    await wait_until(lambda: rollouts(app, "reload_failed") == 1, "the first reload to fail")

    copy_corpus(setup.source, ["rules_lab_usrlocalbin.yaml"])
    (setup.source / "custom.yaml").unlink()
    await wait_until(lambda: rollouts(app, "reloaded") == 1, "the fixed set to be reloaded")

    assert [r["event"] for r in falco.signalled()] == ["rejected", "reload"]


async def test_files_written_apart_give_one_reload(setup, run_app):  # type: ignore[no-untyped-def]
    falco = setup.start_falco()
    await started(falco)
    app = await run_app(setup.config(debounce_s=1.5))
    await wait_until(lambda: app.rules.polls > 0, "the first poll")

    for name in VALID:
        copy_corpus(setup.source, [name])
        await asyncio.sleep(0.5)
    await wait_until(lambda: rollouts(app, "reloaded") == 1, "the reload")

    assert len(falco.signalled()) == 1
    assert falco.signalled()[0]["files"] == sorted(VALID)


async def test_falco_not_running_is_reported(setup, run_app):  # type: ignore[no-untyped-def]
    copy_corpus(setup.source, VALID[:1])
    app = await run_app(setup.config())

    await wait_until(lambda: rollouts(app, "not_signalled") == 1, "the rollout to report no Falco")

    component = app.health.get("falco_rules")
    assert component.status == "degraded"
    assert f"pid file {setup.pid_file} does not exist" in component.reason
    assert read_rules_dir(setup.target) == read_rules_dir(setup.source)


async def test_stale_pid_file_of_dead_process(setup, run_app):  # type: ignore[no-untyped-def]
    falco = setup.start_falco()
    await started(falco)
    falco.process.terminate()
    falco.process.wait(timeout=10)
    copy_corpus(setup.source, VALID[:1])
    app = await run_app(setup.config())

    await wait_until(lambda: rollouts(app, "not_signalled") == 1, "the rollout to report a stale pid file")

    assert f"process {falco.process.pid} is not running" in app.health.get("falco_rules").reason


async def test_stale_pid_file_of_other_process(setup, run_app):  # type: ignore[no-untyped-def]
    other = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        setup.pid_file.write_text(f"{other.pid}\n")
        copy_corpus(setup.source, VALID[:1])
        app = await run_app(setup.config())

        await wait_until(lambda: rollouts(app, "not_signalled") == 1, "the rollout to report a stale pid file")

        assert f"process {other.pid} is 'sleep', not '{setup.name}'" in app.health.get("falco_rules").reason
        assert other.returncode is None
    finally:
        other.terminate()
        await other.wait()


async def test_proc_scan_finds_falco_without_pid_file(setup, run_app):  # type: ignore[no-untyped-def]
    falco = setup.start_falco()
    await started(falco)
    copy_corpus(setup.source, VALID[:1])
    app = await run_app(setup.config(pid_file=None, scan_proc=True))

    await wait_until(lambda: rollouts(app, "reloaded") == 1, "a reload through the /proc scan")

    assert len(falco.signalled()) == 1


def swap_configmap(folder: Path, stamp: str, files: dict[str, bytes]) -> None:
    """Publish ``files`` the way the kubelet updates a mounted ConfigMap: new folder, then swap ..data."""
    data = folder / f"..{stamp}"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    link = folder / "..data_tmp"
    link.symlink_to(data.name)
    os.replace(link, folder / "..data")
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


async def test_configmap_symlink_swap_detected(setup, run_app):  # type: ignore[no-untyped-def]
    falco = setup.start_falco()
    await started(falco)
    first = {"custom.yaml": (CORPUS / "rules_lab_usrlocalbin.yaml").read_bytes()}
    swap_configmap(setup.source, "2026_01_02_03_04_05.000000001", first)
    app = await run_app(setup.config())
    await wait_until(lambda: rollouts(app, "reloaded") == 1, "the first ConfigMap version")

    second = {"custom.yaml": (CORPUS / "rules_miner_blog.yaml").read_bytes()}
    swap_configmap(setup.source, "2026_01_02_03_09_05.000000002", second)
    await wait_until(lambda: rollouts(app, "reloaded") == 2, "the second ConfigMap version")

    assert read_rules_dir(setup.target) == RulesSet(second)
    assert sorted(p.name for p in setup.target.iterdir()) == ["custom.yaml"]
    assert len(falco.signalled()) == 2


async def test_revert_after_unsignalled_deploy(setup, run_app):  # type: ignore[no-untyped-def]
    copy_corpus(setup.target, ["rules_lab_usrlocalbin.yaml"])
    old = read_rules_dir(setup.target)
    copy_corpus(setup.source, ["rules_miner_blog.yaml"])
    app = await run_app(setup.config())
    await wait_until(lambda: rollouts(app, "not_signalled") == 1, "the first deploy without Falco")

    (setup.source / "rules_miner_blog.yaml").unlink()
    copy_corpus(setup.source, ["rules_lab_usrlocalbin.yaml"])
    await wait_until(lambda: rollouts(app, "not_signalled") == 2, "the old set to be deployed again")

    assert read_rules_dir(setup.target) == old


async def test_unexpected_hot_restart_failure_changes_nothing(setup, run_app):  # type: ignore[no-untyped-def]
    copy_corpus(setup.target, ["rules_lab_usrlocalbin.yaml"])
    old = read_rules_dir(setup.target)
    app = await run_app(setup.config())
    await wait_until(lambda: app.rules.polls > 0, "the first poll")

    request = json.dumps(cases("C11")[0]["event"]).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(request)}\r\nConnection: close\r\n\r\n".encode()
        + request
    )
    await writer.drain()
    status = await reader.readline()
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: len(setup.ops_alerts()) == 1, "the internal alert on the ops route")

    assert status.split()[1] == b"200"
    assert setup.ops_alerts()[0]["rule"] == "Falco internal: hot restart failure"
    assert active_hash(app) == old.sha256
    assert app.rules.failed_hashes == set()
