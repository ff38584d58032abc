"""``falco-router replay``: push recorded alerts through the same pipeline as live traffic."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from router.app import RouterApp
from router.config import RouterConfig
from router.event import FLAG_UTF8_REPAIRED, Event, InvalidAlert, loads, parse_alert
from router.gc_tuning import tune_for_throughput
from router.logs import get_logger
from router.pipeline import Backpressure
from router.sources.decode import REPAIR_INVALID_UTF8

UTF8_BOM = b"\xef\xbb\xbf"
SUBMIT_BATCH = 256
"""Alerts read before they are handed to the pipeline together: one submit and one yield per batch."""


@dataclass
class ReplaySummary:
    """Counts of the alerts a replay read, skipped, rejected and delivered."""

    read: int = 0
    skipped: int = 0
    repaired: int = 0
    """Alerts read after replacing invalid UTF-8 (flagged utf8_repaired)."""
    rejected: list[str] = field(default_factory=list)
    delivered: dict[str, float] = field(default_factory=dict)
    lost: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Tell whether every alert was read and nothing was lost."""
        return not self.rejected and not any(self.lost.values())

    def describe(self) -> str:
        """Return a short report for people."""
        first = f"replay: {self.read} alerts read, {self.skipped} non-JSON lines skipped, {len(self.rejected)} rejected"
        if self.repaired:
            first += f", {self.repaired} repaired (invalid UTF-8)"
        lines = [first]
        lines += [f"  rejected: {reason}" for reason in self.rejected[:20]]
        for name in sorted(self.delivered):
            lines.append(f"  output {name}: {int(self.delivered[name])} delivered, {int(self.lost.get(name, 0))} lost")
        return "\n".join(lines)


async def replay_file(config: RouterConfig, path: Path, app: RouterApp | None = None) -> ReplaySummary:
    """Send every alert of a JSON-lines file through the pipeline and wait until all are delivered.

    Lines that do not start with ``{`` are skipped: Falco's log, which container runtimes mix into the
    alert stream, has start-up lines such as "Falco version: ...".
    """
    app = app or RouterApp(config)
    log = get_logger("replay")
    summary = ReplaySummary()
    await app.start(ingest=False)
    tune_for_throughput()
    try:
        batch: list[Event] = []
        with _open(path) as stream:
            for number, line in enumerate(stream, start=1):
                if number == 1 and line.startswith(UTF8_BOM):
                    line = line[len(UTF8_BOM) :]  # noqa: PLW2901 - a BOM that editors on Windows add
                text = line
                if not line.startswith(b"{"):  # the parser takes the trailing newline: no copy without it
                    text = line.strip()
                    if not text.startswith(b"{"):
                        summary.skipped += bool(text)
                        continue
                try:
                    document, repaired = _parse_line(text)
                    event = parse_alert(document, transport="replay")
                except (InvalidAlert, ValueError) as exc:
                    summary.rejected.append(f"line {number}: {exc}")
                    continue
                summary.read += 1
                if repaired:
                    event.flags.append(FLAG_UTF8_REPAIRED)
                    app.metrics.alerts_repaired.labels(REPAIR_INVALID_UTF8).inc()
                    summary.repaired += 1
                batch.append(event)
                if len(batch) >= SUBMIT_BATCH:
                    await _submit(app, batch)
                    batch = []
            await _submit(app, batch)
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=0)
    for name in app.outputs:
        summary.delivered[name] = app.metrics.sample("output_delivered_total", output=name)
        summary.lost[name] = app.metrics.sample_sum("output_lost_total", output=name)
    log.info("replay_finished", read=summary.read, rejected=len(summary.rejected), skipped=summary.skipped)
    return summary


async def _submit(app: RouterApp, batch: list[Event]) -> None:
    try:
        app.pipeline.submit(batch)
    except Backpressure:
        # The file is read faster than the outputs deliver: wait for room instead of dropping, an alert
        # at a time, since the inbox may be smaller than a batch.
        for event in batch:
            while True:
                try:
                    app.pipeline.submit([event])
                    break
                except Backpressure:
                    await asyncio.sleep(0.001)
    # Let the pipeline and the outputs run between batches, as they would between network reads.
    await asyncio.sleep(0)


def _parse_line(line: bytes) -> tuple[object, bool]:
    """Parse one line; invalid UTF-8 is replaced with U+FFFD and flagged, as the HTTP ingest does."""
    try:
        return loads(line), False
    except ValueError:
        # Lines are read as bytes, because decoding each one only to encode it again for the parser cost
        # about a microsecond per alert. Only a line the parser rejects pays for the repair.
        repaired = line.decode("utf-8", errors="replace")
        if repaired.encode() == line:
            raise
        return loads(repaired), True


def _open(path: Path) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    return path.open("rb")
