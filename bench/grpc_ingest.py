"""Benchmark 3: gRPC ingest of 200,000 alerts from a Falco stand-in, against a bare grpc.aio consumer.

Both sides read the same stream from a fresh stand-in process over a unix socket (Falco serves TCP
with mutual TLS only). The reference consumer times itself; the router is timed by polling its
delivered counter on /metrics. Needs ``router.sources.grpc`` and the generated Falco bindings in
``router.proto_gen``; without them the benchmark is skipped with that reason.
"""

from __future__ import annotations

import re
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import (
    PYTHON,
    Options,
    Result,
    Skipped,
    free_port,
    median,
    module_available,
    run_json,
    start,
    stop,
)
from bench.routerproc import null_output_config, start_router

ALERTS = 200_000
WARMUP_ALERTS = 1000
POLL_S = 0.02
COARSE_POLL_S = 0.25
"""Interval of the /metrics reads until about ``FINE_POLL_WINDOW_S`` before the last alert is expected."""
FINE_POLL_WINDOW_S = 1.0
TIMEOUT_S = 300.0

_DELIVERED = re.compile(rb'^falco_router_output_delivered_total\{output="devnull"\} (\S+)$', re.MULTILINE)


def _grpc_config(socket: Path) -> str:
    grpc = f"  grpc:\n    enabled: true\n    address: unix://{socket}\n    method: sub\n"
    return null_output_config(extra_ingest=grpc)


def _delivered(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        matched = _DELIVERED.search(response.read())
    return int(float(matched.group(1))) if matched else 0


def _wait_for_socket(path: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Falco stand-in did not create {path} within {timeout_s} s")
        time.sleep(0.05)


def _reference_round(socket: Path) -> float:
    standin = start([PYTHON, "-m", "bench.falco_grpc", "serve", "--socket", str(socket), "--alerts", str(ALERTS)])
    try:
        _wait_for_socket(socket)
        args = [PYTHON, "-m", "bench.falco_grpc", "consume", "--socket", str(socket), "--alerts", str(ALERTS)]
        rate: float = run_json(args, timeout_s=TIMEOUT_S)["rate"]
        return rate
    finally:
        stop(standin)
        socket.unlink(missing_ok=True)


def _router_round(socket: Path, options: Options) -> float:
    standin = start([PYTHON, "-m", "bench.falco_grpc", "serve", "--socket", str(socket), "--alerts", str(ALERTS)])
    try:
        _wait_for_socket(socket)
        port = free_port()
        router = start_router(port, use_uvloop=options.uvloop, config_text=_grpc_config(socket))
        try:
            return _time_router(port)
        finally:
            stop(router)
    finally:
        stop(standin)
        socket.unlink(missing_ok=True)


def _time_router(port: int) -> float:
    # Each /metrics read costs the router's event loop about 1 ms, the cost of several alerts, and the
    # reference is not polled at all. So the counter is read every COARSE_POLL_S, and every POLL_S only near the
    # end, where the interval bounds how late the last alert is seen.
    deadline = time.monotonic() + TIMEOUT_S
    first_count, first_at = 0, 0.0
    while time.monotonic() < deadline:
        count = _delivered(port)
        now = time.perf_counter()
        if not first_count and count >= WARMUP_ALERTS:
            first_count, first_at = count, now
        if count >= ALERTS:
            return (count - first_count) / (now - first_at)
        interval = POLL_S
        if first_count and count > first_count:
            seconds_left = (ALERTS - count) / ((count - first_count) / (now - first_at))
            if seconds_left > FINE_POLL_WINDOW_S:
                interval = COARSE_POLL_S
        time.sleep(interval)
    raise TimeoutError(f"the router delivered fewer than {ALERTS} alerts within {TIMEOUT_S} s")


def run(options: Options) -> Result:
    """Measure alerts/s of the router's gRPC ingest and of the bare consumer, alternating rounds."""
    missing = [name for name in ("router.sources.grpc", "router.proto_gen") if not module_available(name)]
    if missing:
        raise Skipped(f"needs {', '.join(missing)} (the gRPC ingest), which is not in this checkout yet")
    result = Result("grpc", f"gRPC ingest of {ALERTS:,} alerts from a Falco stand-in (unix socket)")
    rates: dict[str, list[float]] = {"reference": [], "router": []}
    with tempfile.TemporaryDirectory(prefix="falco-router-bench-") as directory:
        socket = Path(directory) / "falco.sock"
        for _ in range(options.rounds):
            rates["reference"].append(_reference_round(socket))
            rates["router"].append(_router_round(socket, options))
    result.rounds = {side: [round(r) for r in values] for side, values in rates.items()}
    result.metrics = {
        "reference_rate": round(median(rates["reference"])),
        "router_rate": round(median(rates["router"])),
    }
    result.metrics["rate_ratio"] = round(result.metrics["router_rate"] / result.metrics["reference_rate"], 4)
    result.notes.append(
        f"router rate read from /metrics every {COARSE_POLL_S * 1000:.0f} ms, every {POLL_S * 1000:.0f} ms in the"
        f" last {FINE_POLL_WINDOW_S:.0f} s, after {WARMUP_ALERTS} alerts"
    )
    ratio = result.metrics["rate_ratio"]
    result.target("router alerts/s >= 90% of the bare grpc.aio consumer", ratio, 0.9, at_least=True)
    return result
