"""The router under test as its own process: ``python -m router run`` with a config written for the run."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from bench.common import PYTHON, start

# Every alert goes to a file output on /dev/null, so the numbers are the router's own cost and no
# output can become the bottleneck. Logging at warning keeps per-alert debug logs off.
NULL_OUTPUT_CONFIG = """\
ingest:
  http:
    listen: 127.0.0.1:{port}
outputs:
  devnull:
    type: file
    path: /dev/null
routes:
  - name: everything
    outputs: [devnull]
log:
  level: warning
"""


def write_config(text: str) -> Path:
    """Write a config to a temporary file that lives until the process exits."""
    handle = tempfile.NamedTemporaryFile("w", prefix="falco-router-bench-", suffix=".yaml", delete=False)  # noqa: SIM115
    with handle:
        handle.write(text)
    return Path(handle.name)


def loop_env(use_uvloop: bool) -> dict[str, str]:
    """Return the environment that makes the router run on uvloop or on the standard asyncio loop."""
    return {"FALCO_ROUTER_EVENT_LOOP": "uvloop" if use_uvloop else "asyncio"}


def start_router(port: int, *, use_uvloop: bool, config_text: str | None = None) -> subprocess.Popen[bytes]:
    """Start the router on 127.0.0.1:port and wait until it listens."""
    config = write_config((config_text or NULL_OUTPUT_CONFIG).format(port=port))
    return start([PYTHON, "-m", "router", "run", "--config", str(config)], env=loop_env(use_uvloop), port=port)


def start_reference(port: int, *, use_uvloop: bool) -> subprocess.Popen[bytes]:
    """Start the bare aiohttp reference server on 127.0.0.1:port and wait until it listens."""
    args = [PYTHON, "-m", "bench.reference_http", "--port", str(port)]
    if use_uvloop:
        args.append("--uvloop")
    return start(args, port=port)
