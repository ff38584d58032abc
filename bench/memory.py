"""Benchmark 6: resident memory of the router at start and under 2,000 alerts/s for N minutes.

The bare aiohttp server takes the same load in the same run, so the router's own share is visible.
"Growth" compares the median RSS of the last quarter of the run with that of the second quarter (the
first quarter is warm-up: allocator arenas and caches fill there).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import PYTHON, Options, Result, free_port, median, module_available, rss_kib, start, stop
from bench.e2e import PODS, wait_for_cache, wait_for_file
from bench.kube_standin import KUBECONFIG_NAME
from bench.routerproc import null_output_config, start_reference, start_router

RATE = 2000
SAMPLE_EVERY_S = 2.0
# Two connections: at 2,000/s one sequential connection leaves 0.5 ms per response, which a loaded
# shared machine cannot always give, and the point here is memory, not response time.
CONNECTIONS = 2
REFERENCE_MINUTES = 1.0


def _watch(server: subprocess.Popen[bytes], port: int, minutes: float) -> dict[str, Any]:
    duration_s = minutes * 60
    at_start = rss_kib(server.pid)
    load = start(
        [
            *(PYTHON, "-m", "bench.loadgen", "--port", str(port), "--connections", str(CONNECTIONS)),
            *("--duration", str(duration_s), "--rate", str(RATE), "--warmup", "0"),
        ]
    )
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    while load.poll() is None:
        samples.append((round(time.monotonic() - started, 1), rss_kib(server.pid)))
        time.sleep(SAMPLE_EVERY_S)
    stop(load)
    values = [kib for _, kib in samples]
    quarter = max(1, len(values) // 4)
    second_quarter = median(values[quarter : 2 * quarter] or values)
    last_quarter = median(values[-quarter:])
    return {
        "start_mib": at_start / 1024,
        "peak_mib": max(values) / 1024,
        "end_mib": values[-1] / 1024,
        "growth_mib": (last_quarter - second_quarter) / 1024,
        "samples": samples,
    }


def _kubernetes_config(kubeconfig: Path) -> str:
    # Owner lookups are off, as in the end-to-end benchmark: the stand-in serves no ReplicaSets.
    section = {"kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig), "resolve_owners": False}}
    return yaml.safe_dump(section, sort_keys=False)


def run(options: Options) -> Result:
    """Watch the RSS of the reference, then of the router, under the same fixed load."""
    result = Result("memory", f"RSS at start and under {RATE:,} alerts/s for {options.memory_minutes:g} min")
    with_pods = module_available("router.enrich.k8s")
    if not with_pods:
        result.notes.append("router.enrich.k8s is not in this checkout: measured without the 5,000 cached pods")
    ref_port, router_port = free_port(), free_port()
    reference = start_reference(ref_port, use_uvloop=options.uvloop)
    try:
        # The reference only gives the baseline RSS of aiohttp under this load; a minute shows it.
        ref = _watch(reference, ref_port, min(options.memory_minutes, REFERENCE_MINUTES))
    finally:
        stop(reference)
    with tempfile.TemporaryDirectory(prefix="falco-router-bench-") as directory:
        kube = None
        config = null_output_config()
        if with_pods:
            kube = start([PYTHON, "-m", "bench.kube_standin", "--directory", directory, "--pods", str(PODS)])
            wait_for_file(Path(directory) / KUBECONFIG_NAME, kube)
            config += _kubernetes_config(Path(directory) / KUBECONFIG_NAME)
            result.notes.append(
                f"router measured with {PODS:,} pods in its Kubernetes cache (start RSS after the list)"
            )
        try:
            router = start_router(router_port, use_uvloop=options.uvloop, config_text=config)
            try:
                if with_pods:
                    wait_for_cache(router_port)
                own = _watch(router, router_port, options.memory_minutes)
            finally:
                stop(router)
        finally:
            if kube is not None:
                stop(kube)
    result.series = {"reference_rss_kib": ref.pop("samples"), "router_rss_kib": own.pop("samples")}
    result.metrics = {f"router_{k}": round(v, 1) for k, v in own.items()}
    result.metrics.update({f"reference_{k}": round(v, 1) for k, v in ref.items()})
    result.target("router peak RSS < 96 MiB", result.metrics["router_peak_mib"], 96, at_least=False)
    result.target("router RSS growth over the run < 2 MiB", result.metrics["router_growth_mib"], 2, at_least=False)
    return result
