"""The policy engine: loads policy files, annotates each alert, and swaps the policy atomically on reload.

Order per alert: Falco internal alerts are classified and rate-limited per host. Every alert is then
tested against the allow-list. Alerts that are neither internal nor suppressed are folded by the first
dedup rule that applies. Every security alert except an incident feeds the correlation rules, the
suppressed ones too, because an accepted step can still be part of an attack chain.

The engine only annotates: ``router.routing.held_back`` turns the annotations into per-output
decisions. Closed dedup windows are emitted through ``emit_update`` and incidents through ``inject``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.config import ConfigError, Problem, parse_yaml_model
from router.config.policy import InternalConfig, PolicyConfig, PolicyFile
from router.event import Event
from router.health import Health
from router.logs import get_logger
from router.metrics import Metrics
from router.policy.allowlist import AllowList
from router.policy.correlation import CorrelationState
from router.policy.dedup import DedupState
from router.policy.index import Anchor, ByRule, anchor, sequence_anchor

EventSink = Callable[[Event], None]

_MAX_HOSTS = 10_000
"""Hosts tracked by the internal-alert rate limit; the one tracked longest is dropped beyond it."""


@dataclass(slots=True)
class Policy:
    """One loaded, compiled policy: what ``reload`` swaps in as a whole."""

    files: tuple[Path, ...]
    digest: str
    allow_list: AllowList
    dedup: list[DedupState]
    correlation: list[CorrelationState]
    internal: InternalConfig
    dedup_index: ByRule[DedupState]
    correlation_index: ByRule[CorrelationState]


def read_policy_files(paths: Sequence[Path]) -> tuple[PolicyFile, str]:
    """Read and merge policy files; return the merged file and a digest of their text.

    Raises ``ConfigError`` with every problem of every file (names used twice across files included).
    """
    problems: list[Problem] = []
    parsed: list[tuple[Path, PolicyFile]] = []
    digest = hashlib.sha256()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path="", message=f"cannot read the policy file: {exc}", file=str(path)))
            continue
        digest.update(str(path).encode() + b"\0" + text.encode() + b"\0")
        try:
            parsed.append((path, parse_yaml_model(text, str(path), PolicyFile)))
        except ConfigError as exc:
            problems.extend(exc.problems)
    merged = PolicyFile()
    if not problems:
        merged, merge_problems = _merge(parsed)
        problems.extend(merge_problems)
    if problems:
        raise ConfigError(problems)
    return merged, digest.hexdigest()[:16]


def _merge(parsed: list[tuple[Path, PolicyFile]]) -> tuple[PolicyFile, list[Problem]]:
    problems: list[Problem] = []
    sections: dict[str, list[Any]] = {"allow_list": [], "dedup": [], "correlation": []}
    owners: dict[tuple[str, str], Path] = {}
    internal: InternalConfig | None = None
    for path, policy in parsed:
        for section, items in sections.items():
            for item in getattr(policy, section):
                first = owners.setdefault((section, item.name), path)
                if first != path:
                    problems.append(
                        Problem(path=section, file=str(path), message=f"name {item.name!r} is also used in {first}")
                    )
                items.append(item)
        if policy.internal is not None:
            if internal is not None:
                message = "internal is set in more than one file; keep it in one"
                problems.append(Problem(path="internal", file=str(path), message=message))
            internal = policy.internal
    if problems:
        return PolicyFile(), problems
    merged = PolicyFile(
        allow_list=sections["allow_list"],
        dedup=sections["dedup"],
        correlation=sections["correlation"],
        internal=internal,
    )
    return merged, problems


class PolicyEngine:
    """Applies the active policy to alerts; ``reload`` replaces it in one step or not at all."""

    def __init__(
        self,
        config: PolicyConfig,
        metrics: Metrics | None = None,
        health: Health | None = None,
        *,
        clock: Callable[[], float] = time.time,
        emit_update: EventSink | None = None,
        inject: EventSink | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self.clock = clock
        self.emit_update: EventSink = emit_update or _nowhere
        self.inject: EventSink = inject or _nowhere
        self.log = get_logger("policy")
        self._hosts: dict[str, list[float]] = {}
        self._metric_children: dict[tuple[int, str], Any] = {}
        self.policy = self._build(PolicyFile(), "", None)

    @classmethod
    def from_files(cls, config: PolicyConfig, metrics: Metrics | None = None, **kwargs: Any) -> PolicyEngine:
        """Create an engine and load its files; raise ``ConfigError`` when any file is invalid."""
        engine = cls(config, metrics, **kwargs)
        engine.load()
        return engine

    def load(self) -> None:
        """Load the policy files and make them active; raise ``ConfigError`` when any file is invalid."""
        policy_file, digest = read_policy_files(self.config.files)
        self.install(policy_file, digest)

    # Loading -----------------------------------------------------------------------------------

    def reload(self) -> list[Problem]:
        """Load the policy files again; on any problem keep the active policy and return the problems."""
        try:
            policy_file, digest = read_policy_files(self.config.files)
        except ConfigError as exc:
            self.metrics.policy_reloads.labels("failed").inc()
            self.log.error(
                "policy_reload_failed",
                files=[str(p) for p in self.config.files],
                active_digest=self.policy.digest,
                problems=[str(p) for p in exc.problems],
            )
            self.health.set(
                "policy",
                "degraded",
                f"reload failed, previous policy still active: {exc.problems[0]}",
                digest=self.policy.digest,
                problems=[str(p) for p in exc.problems[:20]],
            )
            return exc.problems
        if digest != self.policy.digest:
            self.install(policy_file, digest)
        else:
            self._report_health()
        self.metrics.policy_reloads.labels("ok").inc()
        return []

    def install(self, policy_file: PolicyFile, digest: str) -> None:
        """Compile a validated policy and make it the active one (``reload`` calls this)."""
        old = self.policy
        new = self._build(policy_file, digest, old)
        # One assignment: an alert is processed entirely under the old or entirely under the new policy,
        # because the pipeline and the reload run on the same event loop.
        self.policy = new
        self.log.info(
            "policy_loaded",
            digest=digest,
            files=[str(p) for p in self.config.files],
            allow_list=len(new.allow_list.entries),
            dedup=len(new.dedup),
            correlation=len(new.correlation),
        )
        self._report_expired(new.allow_list.set_today(new.allow_list.today))
        self._report_health()

    def _build(self, policy_file: PolicyFile, digest: str, old: Policy | None) -> Policy:
        allow_list = AllowList.compile(policy_file.allow_list, self._today())
        # Labelled children are looked up once here: labels() costs microseconds on every alert.
        for entry in allow_list.entries:
            entry.counter = self._child(self.metrics.policy_suppressed, entry.name)

        dedup = []
        old_dedup = {state.rule.name: state for state in (old.dedup if old else ())}
        for rule in policy_file.dedup:
            previous = old_dedup.pop(rule.name, None)
            # Unchanged rules keep their open windows across a reload, so a reload does not re-page.
            dedup.append(previous if previous is not None and previous.rule == rule else DedupState(rule))
        for state in old_dedup.values():
            state.close_all(self._send_update)
        for state in dedup:
            state.folded = self._child(self.metrics.policy_dedup_folded, state.rule.name)

        correlation = []
        old_correlation = {state.rule.name: state for state in (old.correlation if old else ())}
        for correlation_rule in policy_file.correlation:
            previous_state = old_correlation.get(correlation_rule.name)
            same = previous_state is not None and previous_state.rule == correlation_rule
            correlation.append(previous_state if same and previous_state else CorrelationState(correlation_rule))
        return Policy(
            files=tuple(self.config.files),
            digest=digest,
            allow_list=allow_list,
            dedup=dedup,
            correlation=correlation,
            internal=policy_file.internal or InternalConfig(),
            dedup_index=ByRule([(s, anchor(s.rule.match) if s.rule.match is not None else None) for s in dedup]),
            correlation_index=ByRule([(c, _correlation_anchor(c)) for c in correlation]),
        )

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    # Per alert -----------------------------------------------------------------------------------

    def process(self, event: Event, now: float | None = None) -> Event:
        """Annotate one alert with the policy's decisions and return it."""
        policy = self.policy
        if now is None:
            now = self.clock()
        internal = event.is_internal
        if internal:
            event.annotations["internal"] = {"rate_limited": self._rate_limited(event, policy.internal, now)}
        suppressed = self._apply_allow_list(event, policy)
        if not internal:
            if not suppressed:
                self._fold(event, policy, now)
            if "incident" not in event.annotations:
                self._correlate(event, policy, now)
        event.invalidate_json()
        return event

    def _apply_allow_list(self, event: Event, policy: Policy) -> bool:
        entries = policy.allow_list.matching(event)
        if not entries:
            return False
        names = [entry.name for entry in entries]
        event.annotations["suppressed"] = {"entries": names}
        for entry in entries:
            entry.hits += 1
            entry.counter.inc()
        self.log.debug("alert_suppressed", alert_id=event.id, rule=event.rule, entries=names)
        return True

    def _fold(self, event: Event, policy: Policy, now: float) -> None:
        # The first dedup rule that applies folds the alert; the order of the policy files decides.
        for state in policy.dedup_index.candidates(event):
            if state.applies(event):
                annotation = state.process(event, now, self._send_update)
                event.annotations["dedup"] = annotation
                if annotation["role"] == "repeat":
                    state.folded.inc()
                return

    def _send_update(self, update: Event) -> None:
        self._child(self.metrics.policy_dedup_updates, update.annotations["dedup"]["rule"]).inc()
        self.emit_update(update)

    def _correlate(self, event: Event, policy: Policy, now: float) -> None:
        for correlation in policy.correlation_index.candidates(event):
            incident = correlation.process(event, now)
            if incident is None:
                continue
            self._child(self.metrics.policy_incidents, correlation.rule.name).inc()
            self.log.info(
                "incident_raised",
                correlation=correlation.rule.name,
                incident_id=incident.id,
                alert_ids=incident.annotations["incident"]["alert_ids"],
            )
            self.inject(incident)

    def _rate_limited(self, event: Event, internal: InternalConfig, now: float) -> bool:
        host = event.hostname or ""
        window = self._hosts.get(host)
        if window is None or now - window[0] >= internal.interval_s:
            if window is None and len(self._hosts) >= _MAX_HOSTS:
                del self._hosts[next(iter(self._hosts))]
            window = [now, 0.0]
            self._hosts[host] = window
        window[1] += 1
        limited = window[1] > internal.max_per_host
        self.metrics.policy_internal.labels("rate_limited" if limited else "passed").inc()
        return limited

    # Time ------------------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Close ended dedup windows, drop expired correlation state, and re-check expiry on a new day.

        ``now`` is the time windows are measured in (the clock by default; event time in a dry run).
        Expiry dates are always checked against the clock.
        """
        if now is None:
            now = self.clock()
        policy = self.policy
        for state in policy.dedup:
            state.expire(now, self._send_update)
            name = state.rule.name
            self._child(self.metrics.policy_dedup_open, name).set(len(state.groups))
            self._child(self.metrics.policy_dedup_evicted, name).inc(state.evicted)
            state.evicted = 0
        for correlation in policy.correlation:
            correlation.expire(now)
            name = correlation.rule.name
            self._child(self.metrics.policy_correlation_keys, name).set(len(correlation.tracks))
            self._child(self.metrics.policy_correlation_evicted, name).inc(correlation.evicted)
            correlation.evicted = 0
        today = self._today()
        if today != policy.allow_list.today:
            self._report_expired(policy.allow_list.set_today(today))
            self._report_health()

    def _child(self, metric: Any, label: str) -> Any:
        # labels() takes a lock and builds a tuple on every call, so each child is looked up once.
        # Labels are rule names from the policy files, so the cache stays as small as the policy.
        key = (id(metric), label)
        child = self._metric_children.get(key)
        if child is None:
            child = self._metric_children[key] = metric.labels(label)
        return child

    def flush(self) -> None:
        """Close every open dedup window now and emit its update (end of a replay)."""
        for state in self.policy.dedup:
            state.close_all(self._send_update)

    def _report_expired(self, expired: list[Any]) -> None:
        gauge = self.metrics.policy_allowlist_expired
        gauge.clear()
        for entry in expired:
            gauge.labels(entry.name).set(1)
            if entry.warned_on != self.policy.allow_list.today:
                entry.warned_on = self.policy.allow_list.today
                self.log.warning(
                    "allowlist_entry_expired",
                    entry=entry.name,
                    expires=str(entry.config.expires),
                    owner=entry.config.owner,
                    action="renew the expiry date or remove the entry",
                )

    def _report_health(self) -> None:
        allow_list = self.policy.allow_list
        expired = [e.name for e in allow_list.entries if e.expired(allow_list.today)]
        self.health.set(
            "policy",
            "ok",
            "",
            digest=self.policy.digest,
            files=[str(p) for p in self.config.files],
            allow_list_expired=expired,
        )

    # Background tasks ------------------------------------------------------------------------------

    async def run_ticker(self) -> None:
        """Call ``tick`` every ``tick_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            self.tick()

    async def watch_files(self) -> None:
        """Reload when a policy file's modification time or size changes, until cancelled."""
        seen = _stat_files(self.config.files)
        while True:
            await asyncio.sleep(self.config.watch_interval_s)
            current = _stat_files(self.config.files)
            if current != seen:
                seen = current
                self.log.info("policy_files_changed", files=[str(p) for p in self.config.files])
                self.reload()


def _stat_files(paths: Sequence[Path]) -> list[tuple[int, int] | None]:
    stats: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            stats.append(None)
        else:
            stats.append((stat.st_mtime_ns, stat.st_size))
    return stats


def _correlation_anchor(state: CorrelationState) -> Anchor | None:
    rule = state.rule
    if rule.steps is not None:
        return sequence_anchor(rule.steps)
    return anchor(rule.match) if rule.match is not None else None


def _nowhere(_event: Event) -> None:
    """Discard an event (an engine used without a pipeline, as in ``check``)."""


class PolicyStage:
    """The pipeline stage that runs the engine on each alert."""

    name = "policy"

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine

    def process(self, event: Event) -> Event:
        """Annotate one alert with the policy's decisions."""
        return self.engine.process(event)
