"""``falco-router replay``: push recorded alerts through the same pipeline as live traffic."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from router.app import RouterApp
from router.config import RouterConfig
from router.event import InvalidAlert, loads, parse_alert
from router.logs import get_logger
from router.pipeline import Backpressure


@dataclass
class ReplaySummary:
    """Counts of the alerts a replay read, skipped, rejected and delivered."""

    read: int = 0
    skipped: int = 0
    rejected: list[str] = field(default_factory=list)
    delivered: dict[str, float] = field(default_factory=dict)
    lost: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Tell whether every alert was read and nothing was lost."""
        return not self.rejected and not any(self.lost.values())

    def describe(self) -> str:
        """Return a short report for people."""
        lines = [
            f"replay: {self.read} alerts read, {self.skipped} non-JSON lines skipped, {len(self.rejected)} rejected"
        ]
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
    try:
        with _open(path) as stream:
            for number, line in enumerate(stream, start=1):
                text = line.strip()
                if not text.startswith("{"):
                    summary.skipped += bool(text)
                    continue
                try:
                    event = parse_alert(loads(text), transport="replay")
                except (InvalidAlert, ValueError) as exc:
                    summary.rejected.append(f"line {number}: {exc}")
                    continue
                summary.read += 1
                try:
                    app.pipeline.submit([event])
                except Backpressure:
                    # Only then a coroutine: creating one per alert cost more than the submit itself.
                    await _submit(app, event)
        await app.pipeline.wait_idle()
    finally:
        await app.shutdown(grace_s=0)
    for name in app.outputs:
        summary.delivered[name] = app.metrics.sample("output_delivered_total", output=name)
        summary.lost[name] = app.metrics.sample_sum("output_lost_total", output=name)
    log.info("replay_finished", read=summary.read, rejected=len(summary.rejected), skipped=summary.skipped)
    return summary


async def _submit(app: RouterApp, event: object) -> None:
    while True:
        try:
            app.pipeline.submit([event])  # type: ignore[list-item]
            return
        except Backpressure:
            # The file is read faster than the outputs deliver; wait instead of dropping.
            await asyncio.sleep(0.001)


def _open(path: Path) -> IO[str]:
    if str(path) == "-":
        return sys.stdin
    return path.open(encoding="utf-8", errors="replace")
