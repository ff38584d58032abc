"""Measure the pod cache at 5,000 pods: memory of the cache and the time of one alert lookup.

Run: .venv/bin/python bench/bench_k8s_cache.py [pods]
Times are the best of 7 runs, because other processes on a shared machine only ever add time.
Memory is measured twice: tracemalloc (Python allocations of the cache and the parsed pods) and the
growth of the process RSS while the cache is filled. The pod documents are generated, not real: 10
labels, 3 annotations, 2 containers, a ReplicaSet owner each.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.config.kubernetes import KubernetesConfig
from router.enrich.k8s import KubernetesEnrichment
from router.event import parse_alert
from router.health import Health
from router.metrics import Metrics


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pod_document(index: int) -> dict[str, Any]:
    name = f"web-{index:05d}-7d9f8c6b5-x{index:05d}"
    return {
        "metadata": {
            "name": name,
            "namespace": f"ns-{index % 50}",
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "labels": {f"label-{k}": f"value-{k}-{index}" for k in range(10)},
            "annotations": {f"example.com/annotation-{k}": "x" * 40 for k in range(3)},
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"web-{index:05d}-7d9f8c6b5", "controller": True}],
        },
        "spec": {
            "nodeName": "node-a",
            "serviceAccountName": "default",
            "containers": [
                {"name": "app", "image": "registry.example/app:1.2.3"},
                {"name": "sidecar", "image": "registry.example/sidecar:4.5"},
            ],
        },
        "status": {
            "containerStatuses": [
                {"name": "app", "containerID": f"containerd://{index:012x}" + "a" * 52},
                {"name": "sidecar", "containerID": f"containerd://{index + 10_000_000:012x}" + "b" * 52},
            ]
        },
    }


def best_of(run: Callable[[], object], per_run: int, repeats: int = 7, loops: int = 20) -> float:
    """Return the time of one operation in µs: the best of ``repeats`` timings, as timeit advises."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            run()
        timings.append((time.perf_counter() - start) / (loops * per_run) * 1e6)
    return min(timings)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    config = KubernetesConfig(enabled=True, resolve_owners=False, annotations=["*"])
    enrichment = KubernetesEnrichment(config, Metrics(), Health())
    enrichment._up["pods"] = True
    documents = [pod_document(i) for i in range(count)]

    gc.collect()
    rss_before = rss_mib()
    tracemalloc.start()
    enrichment._pods_listed(documents)
    gc.collect()
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del documents
    gc.collect()
    rss_after = rss_mib()

    cache = enrichment.cache
    keys = [("container", f"{i:012x}") for i in range(0, count, max(1, count // 1000))]
    get_us = best_of(lambda: [cache.get(key) for key in keys], len(keys))

    alerts = [
        parse_alert(
            {
                "rule": "r",
                "priority": "Notice",
                "time": "2023-11-14T22:13:20Z",
                "output_fields": {"container.id": key[1]},
            }
        )
        for key in keys
    ]
    stage = enrichment.stage
    stage_us = best_of(lambda: [stage.process(event) for event in alerts], len(alerts))

    print(f"pods cached:                 {len(cache)}")
    print(f"cache memory (tracemalloc):  {traced / 2**20:.1f} MiB")
    print(f"process RSS growth:          {rss_after - rss_before:.1f} MiB")
    print(f"cache.get by container id:   {get_us:.2f} µs")
    print(f"stage.process (full enrich): {stage_us:.2f} µs")


if __name__ == "__main__":
    main()
