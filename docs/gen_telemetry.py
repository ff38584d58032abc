"""Write the metrics table of docs/telemetry.md from the router's Prometheus registry.

The table sits between ``<!-- metrics:start -->`` and ``<!-- metrics:end -->``; the log event table
above it is written by hand, and tests/test_telemetry_docs.py checks it against the code.

    python docs/gen_telemetry.py            # rewrite the table
    python docs/gen_telemetry.py --check    # exit 1 when the table is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from router.latency_histogram import LatencyHistogram
from router.metrics import Metrics

PAGE = Path(__file__).resolve().parent / "telemetry.md"
START = "<!-- metrics:start -->"
END = "<!-- metrics:end -->"
_SUFFIX = {"counter": "_total"}


def metrics_table() -> str:
    """Return the markdown table of every metric: name, type, labels and help text."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for collector in vars(Metrics()).values():
        if isinstance(collector, LatencyHistogram):
            labelnames = collector.labelnames
        elif isinstance(collector, MetricWrapperBase):
            # prometheus_client has no public accessor for a metric's label names.
            labelnames = collector._labelnames
        else:
            continue
        labels = ", ".join(f"`{name}`" for name in labelnames) or "none"
        for metric in collector.describe():
            name = metric.name + _SUFFIX.get(metric.type, "")
            rows.append(f"| `{name}` | {metric.type} | {labels} | {metric.documentation} |")
    return "\n".join(rows)


def render() -> str:
    """Return the page with its metrics table regenerated."""
    text = PAGE.read_text(encoding="utf-8")
    block = f"{START}\n{metrics_table()}\n{END}"
    updated, count = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if count != 1:
        raise ValueError(f"{PAGE}: expected one {START} ... {END} block, found {count}")
    return updated


def main(argv: list[str]) -> int:
    """Rewrite the table, or with ``--check`` report whether it is current."""
    updated = render()
    if "--check" in argv:
        if updated != PAGE.read_text(encoding="utf-8"):
            print(f"{PAGE} is stale: run python docs/gen_telemetry.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
