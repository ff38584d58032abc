"""The router under test as its own process: ``python -m router run`` with a config written for the run."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import PYTHON, start

_config_dir: Path | None = None


def null_output_config(*, http_listen: str | None = "127.0.0.1:{port}", extra_ingest: str = "") -> str:
    """Return a router config that sends every alert, Falco's internal ones too, to a file on /dev/null.

    With /dev/null as the only output, no output can become the bottleneck, so the numbers are the
    router's own cost. ``http_listen`` None disables the HTTP ingest (replay). ``extra_ingest`` is YAML
    indented by four spaces under ``ingest:``, such as a grpc block. Logging at warning keeps the
    per-alert debug logs off.
    """
    http = f"    listen: {http_listen}\n" if http_listen is not None else "    enabled: false\n"
    return (
        "ingest:\n"
        "  http:\n"
        f"{http}"
        f"{extra_ingest}"
        "outputs:\n"
        "  devnull:\n"
        "    type: file\n"
        "    path: /dev/null\n"
        "routes:\n"
        "  - name: everything\n"
        "    internal: include\n"
        "    outputs: [devnull]\n"
        "log:\n"
        "  level: warning\n"
    )


def config_dir() -> Path:
    """Return the temporary folder of this run's config files; it is removed when the process exits."""
    global _config_dir  # noqa: PLW0603 - one folder per benchmark process, created on first use
    if _config_dir is None:
        _config_dir = Path(tempfile.mkdtemp(prefix="falco-router-bench-"))
        atexit.register(shutil.rmtree, _config_dir, ignore_errors=True)
    return _config_dir


def write_config(text: str) -> Path:
    """Write a config into ``config_dir()`` and return its path."""
    handle = tempfile.NamedTemporaryFile("w", dir=config_dir(), suffix=".yaml", delete=False)  # noqa: SIM115
    with handle:
        handle.write(text)
    return Path(handle.name)


def loop_env(use_uvloop: bool) -> dict[str, str]:
    """Return the environment that makes the router run on uvloop or on the standard asyncio loop."""
    return {"FALCO_ROUTER_EVENT_LOOP": "uvloop" if use_uvloop else "asyncio"}


def start_router(port: int, *, use_uvloop: bool, config_text: str | None = None) -> subprocess.Popen[bytes]:
    """Start the router on 127.0.0.1:port and wait until it listens.

    ``config_text`` may contain ``{port}``, which is replaced by ``port``; without it the router runs
    the null-output config.
    """
    config = write_config((config_text or null_output_config()).replace("{port}", str(port)))
    return start([PYTHON, "-m", "router", "run", "--config", str(config)], env=loop_env(use_uvloop), port=port)


def start_reference(port: int, *, use_uvloop: bool) -> subprocess.Popen[bytes]:
    """Start the bare aiohttp reference server on 127.0.0.1:port and wait until it listens."""
    args = [PYTHON, "-m", "bench.reference_http", "--port", str(port)]
    if use_uvloop:
        args.append("--uvloop")
    return start(args, port=port)
