"""Run a real RouterApp in the test's event loop, listening on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from router.app import RouterApp
from router.config import parse_config
from router.outputs.base import Output
from tests.support.data import free_port


@asynccontextmanager
async def running_router(config_yaml: str, outputs: dict[str, Output] | None = None) -> AsyncIterator[RouterApp]:
    """Start a router from YAML (``{port}`` is replaced by a free port); stop it on exit."""
    config = parse_config(config_yaml.replace("{port}", str(free_port())), "test.yaml")
    app = RouterApp(config, overrides=dict(outputs or {}))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown(grace_s=5)


def base_url(app: RouterApp) -> str:
    """Return the URL of the app's HTTP ingest."""
    assert app.http is not None and app.http.port is not None
    return f"http://127.0.0.1:{app.http.port}"


ONE_OUTPUT = """
ingest:
  http:
    listen: 127.0.0.1:{port}
    max_body_bytes: 1048576
outputs:
  collect:
    type: stdout
routes:
  - name: everything
    internal: include  # Falco's own health alerts too
    outputs: [collect]
"""
