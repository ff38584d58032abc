"""The batched latency histogram exports what prometheus_client's own Histogram exports."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from router.latency_histogram import LatencyHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _without_created_values(text: bytes) -> list[str]:
    # Each side stamps _created with its own clock, so only the series are compared, not the values.
    lines = text.decode().splitlines()
    return [line.rsplit(" ", 1)[0] if "_created{" in line else line for line in lines]


def test_exposition_matches_prometheus_histogram() -> None:
    rng = random.Random(7)
    # Values on the bounds too: a bucket counts values up to and including its bound.
    values = [rng.expovariate(20) for _ in range(2000)] + [0.001, 0.0025, 1.0, 60.0, 61.0, 0.0]
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LatencyHistogram("x_seconds", "Help.", ["output"], buckets=BUCKETS, registry=ours_registry)
    theirs = Histogram("x_seconds", "Help.", ["output"], buckets=BUCKETS, registry=theirs_registry)
    ours.labels("kafka").observe_many(values[:1000])
    for value in values[1000:]:
        ours.labels("kafka").observe(value)
    ours.labels("slack").observe(0.3)
    for value in values:
        theirs.labels("kafka").observe(value)
    theirs.labels("slack").observe(0.3)
    assert _without_created_values(generate_latest(ours_registry)) == _without_created_values(
        generate_latest(theirs_registry)
    )


def test_negative_latency_counts_as_zero() -> None:
    registry = CollectorRegistry()
    histogram = LatencyHistogram("y_seconds", "Help.", ["output"], buckets=(0.1,), registry=registry)
    histogram.labels("a").observe_many([-0.5, 0.05])
    assert registry.get_sample_value("y_seconds_bucket", {"output": "a", "le": "0.1"}) == 2
    assert registry.get_sample_value("y_seconds_sum", {"output": "a"}) == pytest.approx(0.05)


def test_wrong_label_count_is_refused() -> None:
    histogram = LatencyHistogram("z_seconds", "Help.", ["output"], buckets=(1,), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("a", "b")


def test_created_series_follows_prometheus_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import metrics as prometheus_metrics  # noqa: PLC0415 - the switch under test

    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    LatencyHistogram("x_seconds", "Help.", ["output"], buckets=BUCKETS, registry=ours_registry).labels("a").observe(1)
    Histogram("x_seconds", "Help.", ["output"], buckets=BUCKETS, registry=theirs_registry).labels("a").observe(1)
    assert b"_created" not in generate_latest(ours_registry)
    assert generate_latest(ours_registry) == generate_latest(theirs_registry)
