"""Benchmarks 1 and 2: HTTP ingest as Falco sends, against a bare aiohttp server in the same run.

Both servers stay up for the whole benchmark and the load generator alternates between them round by
round, so a change in machine load hits both sides alike and the ratio stays meaningful.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from bench.common import PYTHON, Options, Result, Skipped, free_port, median, run_json, stop, uvloop_available
from bench.routerproc import start_reference, start_router

# Offered loads (alerts/s) for the latency-against-load plot, one sequential connection as Falco uses.
SWEEP_RATES = (250, 500, 1000, 2000, 4000, 8000)


def _load(port: int, connections: int, duration_s: float, rate: float = 0.0) -> dict[str, Any]:
    args = [PYTHON, "-m", "bench.loadgen", "--port", str(port), "--connections", str(connections)]
    args += ["--duration", str(duration_s), "--rate", str(rate)]
    return run_json(args, timeout_s=duration_s + 120)


Starter = Callable[[int], subprocess.Popen[bytes]]


def _compare(
    result: Result, options: Options, connections: int, *, sweep: bool, sides: tuple[Starter, Starter] | None = None
) -> None:
    """Measure two servers in alternation: the reference first, the router second, unless ``sides`` gives two others."""
    start_first, start_second = sides or (
        lambda port: start_reference(port, use_uvloop=options.uvloop),
        lambda port: start_router(port, use_uvloop=options.uvloop),
    )
    ref_port, router_port = free_port(), free_port()
    reference = start_first(ref_port)
    router = start_second(router_port)
    try:
        rounds: dict[str, list[dict[str, Any]]] = {"reference": [], "router": []}
        for _ in range(options.rounds):
            rounds["reference"].append(_load(ref_port, connections, options.duration_s))
            rounds["router"].append(_load(router_port, connections, options.duration_s))
        if sweep:
            sweep_points: dict[str, list[dict[str, Any]]] = {"reference": [], "router": []}
            for rate in SWEEP_RATES:
                sweep_points["reference"].append(_load(ref_port, connections, options.duration_s, rate))
                sweep_points["router"].append(_load(router_port, connections, options.duration_s, rate))
            result.series["sweep"] = sweep_points
    finally:
        stop(router)
        stop(reference)

    result.rounds = rounds
    for side in ("reference", "router"):
        for key in ("rate", "p50_ms", "p99_ms", "p999_ms"):
            result.metrics[f"{side}_{key}"] = round(median([r[key] for r in rounds[side]]), 4)
        non_200 = sum(v for r in rounds[side] for k, v in r["statuses"].items() if k != "200")
        if non_200:
            result.notes.append(f"{side}: {non_200} answers other than 200")
    result.metrics["rate_ratio"] = round(result.metrics["router_rate"] / result.metrics["reference_rate"], 4)


def sequential(options: Options) -> Result:
    """Measure one keep-alive connection with sequential POSTs: the rate Falco's single output thread can reach."""
    result = Result("http_sequential", "HTTP ingest, 1 connection, sequential POSTs (as Falco sends)")
    _compare(result, options, connections=1, sweep=True)
    result.target("router alerts/s >= 80% of bare aiohttp", result.metrics["rate_ratio"], 0.8, at_least=True)
    result.target("router p99 response time < 2 ms", result.metrics["router_p99_ms"], 2.0, at_least=False)
    return result


def concurrent(options: Options) -> Result:
    """Measure eight keep-alive connections, each sequential: several Falco instances behind one Service."""
    result = Result("http_concurrent", "HTTP ingest, 8 connections, each sequential")
    _compare(result, options, connections=8, sweep=False)
    return result


def event_loops(options: Options) -> Result:
    """Compare the router on the standard asyncio loop ("reference" here) with the router on uvloop."""
    if not uvloop_available():
        raise Skipped("uvloop is not installed: run `make bench`, which installs the bench extra")
    result = Result("http_event_loop", "HTTP ingest, 1 connection: router on asyncio (reference) vs on uvloop (router)")
    sides: tuple[Starter, Starter] = (
        lambda port: start_router(port, use_uvloop=False),
        lambda port: start_router(port, use_uvloop=True),
    )
    _compare(result, options, connections=1, sweep=False, sides=sides)
    result.notes.append("rate_ratio above 1: the router responds faster on uvloop than on the asyncio loop")
    return result
