"""Prometheus metrics of one router process, kept in their own registry.

Label values are bounded: output and route names come from the config, reasons from fixed sets in the
code. Rule names, pod names and command lines never become labels.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric

from router.latency_histogram import LatencyHistogram

PREFIX = "falco_router"


class Tally:
    """Increments of one counter child, kept as a plain int until the registry is read.

    A prometheus_client counter takes a lock per increment, which on the per-alert path cost more than
    the work it counted. The registry adds the tally to the real counter before every read, so the
    exported series are the same.
    """

    __slots__ = ("_child", "count")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.count = 0

    def inc(self, amount: int = 1) -> None:
        """Count ``amount`` more."""
        self.count += amount

    def flush(self) -> None:
        """Add what was counted to the counter."""
        if self.count:
            count, self.count = self.count, 0
            self._child.inc(count)


class _TallyFlusher:
    """Registered first, so the registry flushes every tally before it collects the counters."""

    def __init__(self) -> None:
        self.tallies: list[Tally] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for tally in self.tallies:
            tally.flush()
        return iter(())


class Metrics:
    """Every metric the router exports; one instance per process (tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._flusher = _TallyFlusher()
        r.register(self._flusher)
        self.alerts_received = Counter(
            f"{PREFIX}_alerts_received", "Alerts accepted by an ingest.", ["transport"], registry=r
        )
        self.alerts_rejected = Counter(
            f"{PREFIX}_alerts_rejected",
            "Requests or alerts rejected by an ingest.",
            ["transport", "reason"],
            registry=r,
        )
        self.alerts_repaired = Counter(
            f"{PREFIX}_alerts_repaired", "Alerts accepted after a documented repair.", ["reason"], registry=r
        )
        self.priority_unknown = Counter(
            f"{PREFIX}_priority_unknown",
            "Alerts whose priority spelling is not a Falco priority (delivered, flagged).",
            registry=r,
        )

        self.alerts_routed = Counter(f"{PREFIX}_alerts_routed", "Alerts matched by a route.", ["route"], registry=r)
        self.alerts_unrouted = Counter(f"{PREFIX}_alerts_unrouted", "Alerts that matched no route.", registry=r)

        self.delivered = Counter(f"{PREFIX}_output_delivered", "Alerts delivered by an output.", ["output"], registry=r)
        self.retries = Counter(
            f"{PREFIX}_output_retries",
            "Delivery attempts that failed and will be retried.",
            ["output", "reason"],
            registry=r,
        )
        self.lost = Counter(
            f"{PREFIX}_output_lost",
            "Alerts an output gave up on (dead-lettered or dropped on overflow), by reason.",
            ["output", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_output_queue_depth", "Alerts waiting in an output queue.", ["output"], registry=r
        )
        self.oldest_age = Gauge(
            f"{PREFIX}_output_oldest_undelivered_seconds",
            "Age of the oldest alert waiting in an output queue.",
            ["output"],
            registry=r,
        )
        self.output_up = Gauge(
            f"{PREFIX}_output_up", "1 while an output delivers, 0 while its deliveries fail.", ["output"], registry=r
        )
        self.spool_bytes = Gauge(
            f"{PREFIX}_output_spool_bytes", "Bytes of alerts waiting in an output's spool.", ["output"], registry=r
        )
        self.breaker_state = Gauge(
            f"{PREFIX}_output_breaker_state",
            "1 for an output's current circuit breaker state (closed, open, half_open), 0 for the others.",
            ["output", "state"],
            registry=r,
        )
        self.ingest_connected = Gauge(
            f"{PREFIX}_ingest_connected", "1 while a streaming ingest (gRPC) is connected.", ["transport"], registry=r
        )
        self.ingest_reconnects = Counter(
            f"{PREFIX}_ingest_reconnects", "Reconnection attempts of a streaming ingest.", ["transport"], registry=r
        )
        self.delivery_latency = LatencyHistogram(
            f"{PREFIX}_output_delivery_seconds",
            "Time from ingest to successful delivery.",
            ["output"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )

        self.k8s_cache_pods = Gauge(
            f"{PREFIX}_k8s_cache_pods",
            "Pods in the Kubernetes cache, live or kept after deletion.",
            ["state"],
            registry=r,
        )
        self.k8s_watch_up = Gauge(
            f"{PREFIX}_k8s_watch_up",
            "1 while the watch of a resource is connected and current.",
            ["resource"],
            registry=r,
        )
        self.k8s_watch_restarts = Counter(
            f"{PREFIX}_k8s_watch_restarts",
            "Watch requests that ended, by reason (closed, expired, unavailable, unauthorized).",
            ["resource", "reason"],
            registry=r,
        )
        self.k8s_relists = Counter(
            f"{PREFIX}_k8s_relists", "Lists after the first one (after 410 Gone).", ["resource"], registry=r
        )
        self.k8s_lookups = Counter(
            f"{PREFIX}_k8s_lookups",
            "Pod lookups for alerts, by result (hit, deleted, stale, waited, not_found).",
            ["result"],
            registry=r,
        )
        self.k8s_owner_lookups = Counter(
            f"{PREFIX}_k8s_owner_lookups", "GET requests that resolve pod owners, by result.", ["result"], registry=r
        )
        self.rules_active = Gauge(
            f"{PREFIX}_falco_rules_active_info",
            "1 for the hash of the rules set Falco runs, as last confirmed by the router.",
            ["sha256"],
            registry=r,
        )
        self.rules_rollouts = Counter(
            f"{PREFIX}_falco_rules_rollouts",
            "Rules rollouts by result: reloaded, rejected, reload_failed, deploy_failed, not_signalled.",
            ["result"],
            registry=r,
        )
        self.rules_problems = Counter(
            f"{PREFIX}_falco_rules_problems", "Problems found in candidate rules sets.", ["severity"], registry=r
        )
        self._policy_metrics(r)

    def _policy_metrics(self, r: CollectorRegistry) -> None:
        # Labels are names from the policy files (bounded config) or fixed sets in the code.
        self.policy_suppressed = Counter(
            f"{PREFIX}_policy_suppressed", "Alerts matched by an allow-list entry.", ["entry"], registry=r
        )
        self.policy_allowlist_expired = Gauge(
            f"{PREFIX}_policy_allowlist_expired",
            "1 for each allow-list entry past its expiry date.",
            ["entry"],
            registry=r,
        )
        self.policy_held_back = Counter(
            f"{PREFIX}_policy_held_back",
            "Alerts the policy kept from an output, by reason.",
            ["output", "reason"],
            registry=r,
        )
        self.policy_dedup_folded = Counter(
            f"{PREFIX}_policy_dedup_folded", "Repeats folded into an open dedup window.", ["dedup"], registry=r
        )
        self.policy_dedup_updates = Counter(
            f"{PREFIX}_policy_dedup_updates",
            "Aggregate updates emitted when a dedup window closed.",
            ["dedup"],
            registry=r,
        )
        self.policy_dedup_open = Gauge(
            f"{PREFIX}_policy_dedup_open_windows", "Open dedup windows (keys held in memory).", ["dedup"], registry=r
        )
        self.policy_dedup_evicted = Counter(
            f"{PREFIX}_policy_dedup_evicted",
            "Dedup windows closed early because max_keys was reached.",
            ["dedup"],
            registry=r,
        )
        self.policy_internal = Counter(
            f"{PREFIX}_policy_internal_alerts",
            "Falco internal alerts, by outcome (passed, rate_limited).",
            ["outcome"],
            registry=r,
        )
        self.policy_incidents = Counter(
            f"{PREFIX}_policy_incidents", "Incidents raised by a correlation rule.", ["correlation"], registry=r
        )
        self.policy_correlation_keys = Gauge(
            f"{PREFIX}_policy_correlation_keys", "Keys tracked by a correlation rule.", ["correlation"], registry=r
        )
        self.policy_correlation_evicted = Counter(
            f"{PREFIX}_policy_correlation_evicted",
            "Correlation keys evicted because max_keys was reached.",
            ["correlation"],
            registry=r,
        )
        self.policy_reloads = Counter(
            f"{PREFIX}_policy_reloads", "Policy reloads, by result (ok, failed).", ["result"], registry=r
        )
        self.policy_injected_lost = Counter(
            f"{PREFIX}_policy_injected_lost",
            "Incidents lost because the pipeline inbox was full.",
            ["kind"],
            registry=r,
        )

    def tally(self, child: Counter) -> Tally:
        """Return a per-alert tally of a counter child (see ``Tally``)."""
        tally = Tally(child)
        self._flusher.tallies.append(tally)
        return tally

    def sample(self, name: str, **labels: str) -> float:
        """Return one sample's value (0 when absent), such as ``sample("output_delivered_total", output="siem")``."""
        return self.registry.get_sample_value(f"{PREFIX}_{name}", labels) or 0.0

    def sample_sum(self, name: str, **labels: str) -> float:
        """Return the sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == f"{PREFIX}_{name}" and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def render(self) -> bytes:
        """Return the metrics in the Prometheus text format."""
        return generate_latest(self.registry)
