"""A Prometheus histogram that takes its observations a batch at a time.

The delivery loop observes the latency of every delivered alert. prometheus_client's ``Histogram`` takes
two locks and walks the bucket bounds per observation, which cost about a microsecond per alert, more than
the rest of the delivery bookkeeping. This one keeps plain counts per bucket, finds each bucket with
``bisect``, and hands cumulative counts to the registry only when it is scraped. Every update and scrape
happens on the event loop's thread, so it takes no lock.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, cast

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# The bound as prometheus_client's own histograms write it in the le label ("0.005", "1.0", "+Inf").
_format_bound: Final = cast(Callable[[float], str], floatToGoString)


def _created_series_enabled() -> bool:
    # prometheus_client keeps this switch private; it follows PROMETHEUS_DISABLE_CREATED_SERIES and
    # disable_created_metrics(), and the histogram must drop _created whenever the library's own do.
    return bool(getattr(prometheus_metrics, "_use_created", True))


class LatencyChild:
    """The counts of one label set."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.created = time.time()
        """When the label set was first used, exported as ``_created`` like prometheus_client's own."""
        self.counts = [0] * len(bounds)
        """Observations per bucket, not cumulative: counts[i] counts values above bounds[i-1], up to bounds[i]."""
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Add several observations at once."""
        counts, bounds, total = self.counts, self._bounds, 0.0
        for value in values:
            value = max(value, 0.0)  # noqa: PLW2901 - the wall clock stepped back between two readings
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        self.sum += total


class LatencyHistogram:
    """A labelled histogram, registered in ``registry`` like prometheus_client's own metrics."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = sorted(float(b) for b in buckets)
        if self._bounds[-1] != math.inf:
            self._bounds.append(math.inf)
        self._children: dict[tuple[str, ...], LatencyChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> LatencyChild:
        """Return the child of one label set, created on first use."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LatencyChild(self._bounds)
        return child

    def describe(self) -> list[Metric]:
        """Return the metric without samples, for the registry's name check."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        """Return the samples: cumulative buckets, count and sum per label set."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, child.counts, strict=True):
                cumulative += count
                buckets.append((_format_bound(bound), cumulative))
            family.add_metric(list(values), buckets, child.sum)
            if _created_series_enabled():
                labels = dict(zip(self.labelnames, values, strict=True))
                family.samples.append(Sample(f"{self.name}_created", labels, child.created))
        yield family
