"""The router reloads its own config on SIGHUP and keeps the running one when the new file is invalid."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import yaml
from structlog.testing import capture_logs

from router.app import RouterApp
from router.config import load_config
from router.logs import configure_logging
from tests.support.data import free_port


def write_config(path: Path, routes: list[dict[str, object]], level: str = "debug") -> None:
    config = {
        "ingest": {"http": {"listen": f"127.0.0.1:{free_port()}"}},
        "outputs": {"ops": {"type": "file", "path": str(path.parent / "ops.jsonl")}},
        "routes": routes,
        "log": {"level": level},
    }
    path.write_text(yaml.safe_dump(config))


async def wait_until(predicate: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Wait for a condition; the limit only stops a hung test and is not what the test checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.02)


async def start_app(path: Path) -> RouterApp:
    app = RouterApp(load_config(path), config_path=path)
    await app.start(ingest=False)
    app.install_signal_handlers()
    return app


async def test_sighup_applies_new_routes(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "router.yaml"
    write_config(path, [{"name": "all", "outputs": ["ops"]}])
    app = await start_app(path)
    try:
        write_config(path, [{"name": "critical", "outputs": ["ops"], "min_priority": "critical"}], level="info")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: app.config_reloads == 1, "the config reload")

        assert [r.name for r in app.pipeline.router.routes] == ["critical"]
        assert app.config.log.level == "info"
    finally:
        await app.shutdown(grace_s=1)
        configure_logging("debug", "json")


async def test_sighup_keeps_config_when_new_one_is_invalid(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "router.yaml"
    write_config(path, [{"name": "all", "outputs": ["ops"]}])
    app = await start_app(path)
    try:
        write_config(path, [{"name": "all", "outputs": ["ops"], "min_priority": "urgent"}])
        path.write_text(path.read_text() + "bogus_key: 1\n")
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until(lambda: app.health.get("config") is not None, "the reload attempt")

        assert [r.name for r in app.pipeline.router.routes] == ["all"]
        assert app.health.get("config").status == "degraded"
        problems = [entry["problem"] for entry in logs if entry["event"] == "config_reload_problem"]
        assert any("bogus_key" in p for p in problems), problems
        assert any("unknown priority 'urgent'" in p for p in problems), problems
    finally:
        await app.shutdown(grace_s=1)


async def test_reload_with_new_output_needs_restart(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "router.yaml"
    write_config(path, [{"name": "all", "outputs": ["ops"]}])
    app = await start_app(path)
    try:
        config = yaml.safe_load(path.read_text())
        config["outputs"]["extra"] = {"type": "stdout"}
        config["routes"] = [{"name": "extra", "outputs": ["extra"]}]
        path.write_text(yaml.safe_dump(config))

        assert app.reload_config() is False
        assert [r.name for r in app.pipeline.router.routes] == ["all"]
        assert "restart the router" in app.health.get("config").details["problems"][0]
    finally:
        await app.shutdown(grace_s=1)


async def test_reload_logs_restart_for_changed_outputs(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "router.yaml"
    write_config(path, [{"name": "all", "outputs": ["ops"]}])
    app = await start_app(path)
    try:
        config = yaml.safe_load(path.read_text())
        config["outputs"]["ops"]["fsync"] = True
        config["routes"] = [{"name": "renamed", "outputs": ["ops"]}]
        path.write_text(yaml.safe_dump(config))

        with capture_logs() as logs:
            applied = app.reload_config()

        assert applied is True
        assert [r.name for r in app.pipeline.router.routes] == ["renamed"]
        assert app.config.outputs["ops"].fsync is False
        restart = [e["section"] for e in logs if e["event"] == "config_reload_restart_required"]
        assert restart == ["outputs"]
    finally:
        await app.shutdown(grace_s=1)
        configure_logging("debug", "json")
