"""The FALCO_ROUTER_EVENT_LOOP switch of ``falco-router run`` and ``replay``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.data import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "examples" / "sample_alerts.jsonl"
CONFIG = """\
ingest:
  http:
    enabled: false
outputs:
  devnull:
    type: file
    path: /dev/null
routes:
  - name: everything
    outputs: [devnull]
"""


def _replay(tmp_path: Path, loop: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "router", "replay", "--config", str(config), str(SAMPLE)],
        env={**os.environ, "FALCO_ROUTER_EVENT_LOOP": loop},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_event_loop_asyncio_replays(tmp_path: Path) -> None:
    done = _replay(tmp_path, "asyncio")
    assert done.returncode == 0, done.stderr
    assert "0 rejected" in done.stderr


def test_event_loop_auto_replays(tmp_path: Path) -> None:
    done = _replay(tmp_path, "auto")
    assert done.returncode == 0, done.stderr


def test_event_loop_uvloop_replays(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    done = _replay(tmp_path, "uvloop")
    assert done.returncode == 0, done.stderr


def test_event_loop_invalid_rejected(tmp_path: Path) -> None:
    done = _replay(tmp_path, "libuv")
    assert done.returncode == 1
    assert "FALCO_ROUTER_EVENT_LOOP='libuv' is invalid" in done.stderr
    assert "never awaited" not in done.stderr
