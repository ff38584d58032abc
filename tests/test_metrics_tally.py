"""Tallied counters read the same as prometheus_client's own, however the registry is read."""

from __future__ import annotations

from prometheus_client import generate_latest

from router.metrics import Metrics


def test_tally_is_flushed_before_every_kind_of_read() -> None:
    metrics = Metrics()
    tally = metrics.tally(metrics.alerts_routed.labels("all"))
    tally.inc()
    tally.inc(2)
    assert metrics.sample("alerts_routed_total", route="all") == 3
    tally.inc()
    assert b'falco_router_alerts_routed_total{route="all"} 4.0' in metrics.render()
    tally.inc(5)
    assert metrics.sample_sum("alerts_routed_total") == 9
    tally.inc()
    # A reader that goes to the registry directly, as a scrape through prometheus_client would.
    assert b'falco_router_alerts_routed_total{route="all"} 10.0' in generate_latest(metrics.registry)


def test_tally_adds_to_direct_increments() -> None:
    metrics = Metrics()
    child = metrics.delivered.labels("kafka")
    tally = metrics.tally(child)
    child.inc(2)
    tally.inc(3)
    assert metrics.sample("output_delivered_total", output="kafka") == 5
    assert metrics.sample("output_delivered_total", output="kafka") == 5  # flushing twice adds nothing
