"""Shared pieces of the benchmarks: the corpus, child processes, statistics and the result record."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FALCO_ROUTER_SHARED", PROJECT_ROOT.parent / "shared"))
CORPUS = SHARED / "corpus" / "falco_events.jsonl"
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
PYTHON = sys.executable


class Skipped(Exception):  # noqa: N818 - not an error: the report lists it as "skipped"
    """A benchmark cannot run here; the message names what is missing and how to get it."""


@dataclass
class Options:
    """Settings shared by every benchmark, from the command line."""

    rounds: int = 3
    duration_s: float = 3.0
    memory_minutes: float = 1.0
    replay_alerts: int = 1_000_000
    uvloop: bool = False


@dataclass
class Result:
    """Measurements of one benchmark: medians, ratios, target checks and the raw rounds."""

    name: str
    title: str
    metrics: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    rounds: dict[str, list[Any]] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    def target(self, text: str, value: float, limit: float, *, at_least: bool) -> None:
        """Record one target and whether the measured median meets it."""
        met = value >= limit if at_least else value <= limit
        self.targets.append({"target": text, "value": round(value, 4), "limit": limit, "met": met})


def corpus_documents() -> list[dict[str, Any]]:
    """Return the alerts of the shared corpus; raises ``Skipped`` when the corpus is not beside the project."""
    if not CORPUS.exists():
        raise Skipped(f"corpus not found at {CORPUS}: set FALCO_ROUTER_SHARED to the folder that contains corpus/")
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def corpus_bodies() -> list[bytes]:
    """Return each corpus alert as the compact JSON body Falco's http_output would POST."""
    return [json.dumps(doc, separators=(",", ":")).encode() for doc in corpus_documents()]


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port; raises if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


_STDERR_FILES: dict[int, IO[bytes]] = {}
"""The stderr file of each running child, by pid."""


def start(
    args: Sequence[str], *, env: dict[str, str] | None = None, port: int | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process (stdout to /dev/null) and, when ``port`` is given, wait until it listens.

    Its stderr goes to a temporary file, not a pipe: nobody reads a pipe while the benchmark runs, and a
    router that logs a lot (an alert_lost line per dropped alert under saturation) would block on it.
    """
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        list(args),
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
    )
    _STDERR_FILES[process.pid] = stderr_file
    if port is not None:
        try:
            wait_for_port(port, process)
        except Exception:
            stop(process)
            raise
    return process


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop a child with SIGTERM (SIGKILL after ``timeout_s``) and raise if it failed on its own."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    stderr = ""
    stderr_file = _STDERR_FILES.pop(process.pid, None)
    if stderr_file is not None:
        stderr_file.seek(0)
        stderr = stderr_file.read().decode(errors="replace")
        stderr_file.close()
    if process.returncode not in (0, -signal.SIGTERM) and "Traceback" in stderr:
        raise RuntimeError(f"{process.args!r} failed:\n{stderr[-2000:]}")


def run_json(args: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run a child to completion and return the JSON object it printed last on standard output."""
    done = subprocess.run(
        list(args),
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{args!r} exited with code {done.returncode}:\n{stderr}")
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError(f"{args!r} printed no result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def median(values: Sequence[float]) -> float:
    """Return the median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def rss_kib(pid: int) -> int:
    """Return the resident set size of a process in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def machine() -> dict[str, Any]:
    """Describe the machine: CPU count, CPU model, Python version and load at the time of the run."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def uvloop_available() -> bool:
    """Tell whether uvloop is installed in this environment."""
    return importlib.util.find_spec("uvloop") is not None


def module_available(name: str) -> bool:
    """Tell whether a router module (another part of the project) is present in this checkout."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
