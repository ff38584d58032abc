"""Benchmark 5: ``falco-router replay`` of a large file with no network output, pinned to one core.

The pure pipeline cost per alert is (time for N alerts - time for 1 alert) / N, which removes the
interpreter and config start-up. The reference reads the same file and parses each line with orjson,
the floor any Python replay pays before the router does its own work.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import CORPUS, PROJECT_ROOT, PYTHON, Options, Result, Skipped, median
from bench.routerproc import loop_env, null_output_config, write_config

# Reads the file as replay does (line by line, text) and parses each line; prints nothing.
REFERENCE_CODE = """
import sys, orjson
with open(sys.argv[1], encoding="utf-8", errors="replace") as stream:
    for line in stream:
        text = line.strip()
        if text.startswith("{"):
            orjson.loads(text)
"""


def make_file(alerts: int, directory: Path) -> Path:
    """Write ``alerts`` lines by cycling through the corpus alerts."""
    if not CORPUS.exists():
        raise Skipped(f"corpus not found at {CORPUS}")
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    path = directory / f"replay-{alerts}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, alerts, len(lines)):
            out.write("\n".join(lines[: min(len(lines), alerts - start)]) + "\n")
    return path


def _pin_to_one_core() -> None:
    # The target is per core: pin the child to the first CPU this process may use.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a child to completion; return its wall time and its CPU time (user + system), in seconds."""
    started = time.perf_counter()
    child = subprocess.Popen(
        args,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_pin_to_one_core,  # noqa: PLW1509 - the benchmark process starts no threads
    )
    assert child.stderr is not None
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{args!r} exited with code {child.returncode}:\n{stderr.decode(errors='replace')[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def run(options: Options) -> Result:
    """Time the router's replay against the parse-only reference, several rounds each."""
    title = f"falco-router replay of {options.replay_alerts:,} alerts, file output to /dev/null, 1 core"
    result = Result("replay", title)
    config = write_config(null_output_config(http_listen=None))
    env = loop_env(options.uvloop)
    with tempfile.TemporaryDirectory(prefix="falco-router-bench-") as directory:
        big = make_file(options.replay_alerts, Path(directory))
        one = make_file(1, Path(directory))
        router_args = [PYTHON, "-m", "router", "replay", "--config", str(config)]
        reference_args = [PYTHON, "-c", REFERENCE_CODE]
        cpu: dict[str, list[float]] = {"reference": [], "router": []}
        wall: dict[str, list[float]] = {"reference": [], "router": []}
        for _ in range(options.rounds):
            for side, args in (("reference", reference_args), ("router", router_args)):
                full_wall, full_cpu = _timed([*args, str(big)], env)
                startup_wall, startup_cpu = _timed([*args, str(one)], env)
                cpu[side].append((full_cpu - startup_cpu) / (options.replay_alerts - 1))
                wall[side].append((full_wall - startup_wall) / (options.replay_alerts - 1))
    result.rounds = {
        f"{side}_{kind}_us": [round(v * 1e6, 3) for v in values]
        for kind, table in (("cpu", cpu), ("wall", wall))
        for side, values in table.items()
    }
    # CPU time is the per-core cost: on a shared machine the wall time also counts waiting for a CPU.
    router_us = median(cpu["router"]) * 1e6
    reference_us = median(cpu["reference"]) * 1e6
    result.metrics = {
        "router_cpu_us_per_alert": round(router_us, 3),
        "router_alerts_per_cpu_s": round(1e6 / router_us),
        "router_wall_us_per_alert": round(median(wall["router"]) * 1e6, 3),
        "reference_cpu_us_per_alert": round(reference_us, 3),
        "reference_alerts_per_cpu_s": round(1e6 / reference_us),
        "router_cost_over_parse_us": round(router_us - reference_us, 3),
    }
    result.target(
        "replay alerts per CPU second (one core) >= 100,000",
        result.metrics["router_alerts_per_cpu_s"],
        100_000,
        at_least=True,
    )
    return result
