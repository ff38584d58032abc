"""Benchmark 5b: the replay's cost per alert in CPU instructions, counted by valgrind, not timed.

Times on a shared machine move by 15 % or more from run to run, which hides a change of a few percent.
An instruction count does not depend on what else the machine runs, so this benchmark shows whether a
change to the pipeline made it cheaper. It runs the same replay and parse-only reference as the
``replay`` benchmark under ``valgrind --tool=callgrind`` (about fifty times slower, hence 20,000 alerts)
and reports (instructions for N alerts - instructions for 1 alert) / N. Instructions are not time:
cache misses and system calls cost more than their count, so the timed benchmark stays the one the
target is checked against.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import PROJECT_ROOT, PYTHON, Options, Result, Skipped
from bench.replay import REFERENCE_CODE, make_file
from bench.routerproc import null_output_config, write_config

ALERTS = 20_000
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _instructions(args: list[str], directory: Path) -> int:
    """Run a child under callgrind and return the instructions it executed."""
    out = directory / "callgrind.out"
    child = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same string hashes in every run
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(child.stderr)
    if child.returncode != 0 or found is None:
        raise RuntimeError(f"{args!r} under valgrind exited with code {child.returncode}:\n{child.stderr[-2000:]}")
    return int(found.group(1))


def run(options: Options) -> Result:  # the count does not vary, so options.rounds does not apply
    """Count the instructions per alert of the replay and of the parse-only reference."""
    result = Result("replay_instructions", f"falco-router replay of {ALERTS:,} alerts, instructions per alert")
    if shutil.which("valgrind") is None:
        raise Skipped("valgrind is not installed")
    config = write_config(null_output_config(http_listen=None))
    with tempfile.TemporaryDirectory(prefix="falco-router-bench-") as name:
        directory = Path(name)
        full_file, single_file = make_file(ALERTS, directory), make_file(1, directory)
        sides = {
            "router": [PYTHON, "-m", "router", "replay", "--config", str(config)],
            "reference": [PYTHON, "-c", REFERENCE_CODE],
        }
        per_alert = {}
        for side, args in sides.items():
            full = _instructions([*args, str(full_file)], directory)
            startup = _instructions([*args, str(single_file)], directory)
            per_alert[side] = (full - startup) / (ALERTS - 1)
    result.metrics = {
        "router_instructions_per_alert": round(per_alert["router"]),
        "reference_instructions_per_alert": round(per_alert["reference"]),
        "router_over_reference": round(per_alert["router"] / per_alert["reference"], 2),
    }
    result.notes.append("valgrind --tool=callgrind, PYTHONHASHSEED=0; start-up removed by a 1-alert run")
    return result
