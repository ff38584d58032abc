"""``falco-router replay --dry-run`` and the allow-list report of ``falco-router check``.

A dry run measures windows in event time (each alert's ``time``), so a recorded file gives the same
decisions however fast it is read, and delivers nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from router.config import RouterConfig
from router.config.policy import PolicyConfig
from router.event import Event, InvalidAlert, loads, parse_alert
from router.outputs import output_class
from router.policy.engine import PolicyEngine
from router.routing import Router


def notifying_outputs(config: RouterConfig) -> frozenset[str]:
    """Return the names of the outputs whose type notifies people (Slack, webhooks)."""
    return frozenset(name for name, output in config.outputs.items() if output_class(output.type).notifies)


@dataclass
class DryRunSummary:
    """Counts of a dry run."""

    read: int = 0
    rejected: list[str] = field(default_factory=list)
    incidents: int = 0
    updates: int = 0

    def describe(self) -> str:
        """Return a one-paragraph report for people."""
        lines = [
            f"dry run: {self.read} alerts read, {len(self.rejected)} rejected, "
            f"{self.incidents} incidents, {self.updates} dedup updates; nothing was delivered"
        ]
        lines += [f"  rejected: {reason}" for reason in self.rejected[:20]]
        return "\n".join(lines)


class DryRun:
    """Runs alerts through the policy and routing and writes one JSON decision per alert."""

    def __init__(self, config: RouterConfig, out: TextIO) -> None:
        self.out = out
        self.router = Router(config.routes)
        self.notifying = notifying_outputs(config)
        self.summary = DryRunSummary()
        self._pending: list[Event] = []
        self.engine = PolicyEngine.from_files(
            config.policy, emit_update=self._pending.append, inject=self._pending.append
        )

    def run(self, lines: Iterable[str]) -> DryRunSummary:
        """Decide every alert of a JSON-lines stream, then close the open dedup windows."""
        for number, event in self._alerts(lines):
            now = event.time_ns / 1e9
            self.engine.tick(now)
            self._write_pending()
            self.engine.process(event, now=now)
            self._write("alert", event, line=number)
            self._write_pending()
        self.engine.flush()
        self._write_pending()
        return self.summary

    def _alerts(self, lines: Iterable[str]) -> Iterator[tuple[int, Event]]:
        for number, line in enumerate(lines, start=1):
            # A byte order mark (U+FEFF) that editors on Windows put at the start of the file is not JSON.
            text = line.strip().lstrip("\ufeff") if number == 1 else line.strip()
            if not text.startswith("{"):
                continue
            try:
                event = parse_alert(loads(text), transport="replay")
            except (InvalidAlert, ValueError) as exc:
                self.summary.rejected.append(f"line {number}: {exc}")
                continue
            self.summary.read += 1
            yield number, event

    def _write_pending(self) -> None:
        # Incidents re-enter the policy (allow-list, dedup) as they would through the pipeline.
        while self._pending:
            event = self._pending.pop(0)
            if "incident" in event.annotations:
                self.summary.incidents += 1
                self.engine.process(event, now=event.time_ns / 1e9)
                self._write("incident", event)
            else:
                self.summary.updates += 1
                self._write("dedup_update", event)

    def _write(self, kind: str, event: Event, line: int | None = None) -> None:
        plan = self.router.plan(event, self.notifying)
        annotations = event.annotations
        decision: dict[str, Any] = {"kind": kind}
        if line is not None:
            decision["line"] = line
        decision.update(alert_id=event.id, rule=event.rule, priority=event.priority_name)
        if "suppressed" in annotations:
            decision["suppressed_by"] = annotations["suppressed"]["entries"]
        dedup = annotations.get("dedup")
        if dedup is not None:
            decision["dedup"] = {k: dedup[k] for k in ("rule", "key", "role", "count", "id") if k in dedup}
        if "incident" in annotations:
            decision["incident"] = annotations["incident"]
        if "internal" in annotations:
            decision["internal"] = annotations["internal"]
        decision.update(routes=plan.routes, outputs=plan.outputs, held=plan.held)
        self.out.write(json.dumps(decision, ensure_ascii=False, default=str) + "\n")


def allow_list_report(
    policy: PolicyConfig, replay_lines: Iterable[str] | None = None, within_days: int = 7
) -> list[str]:
    """Return report lines: entries expired or expiring within ``within_days``, and, after a replay,
    entries that matched no alert."""
    engine = PolicyEngine.from_files(policy)
    allow_list = engine.policy.allow_list
    report = []
    for entry in sorted(allow_list.expiring(within_days), key=lambda e: (e.config.expires, e.name)):
        expires = entry.config.expires
        assert expires is not None
        state = "expired on" if expires < allow_list.today else "expires on"
        report.append(f"allow-list entry {entry.name} ({entry.config.owner}) {state} {expires}: renew or remove it")
    if replay_lines is not None:
        for _, event in _parse(replay_lines):
            engine.process(event, now=event.time_ns / 1e9)
        for entry in allow_list.entries:
            if entry.hits == 0:
                report.append(f"allow-list entry {entry.name} ({entry.config.owner}) matched no alert in the replay")
    return report


def _parse(lines: Iterable[str]) -> Iterator[tuple[int, Event]]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text.startswith("{"):
            try:
                yield number, parse_alert(loads(text), transport="replay")
            except (InvalidAlert, ValueError):
                continue
