"""Routes compiled once at load: which outputs an alert goes to, and which of them the policy holds back.

The policy stage decides and annotates; routing applies the decision per output, because suppression
and dedup folding apply to notifying outputs (Slack, webhooks) only, while Kafka and files keep the
full trail. The annotations it reads are described in docs/policy.md.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from router.config.routes import RouteConfig
from router.event import Event
from router.policy.match import Matcher, compile_match
from router.priority import Priority, parse_priority

_WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its conditions prepared for fast matching."""

    name: str
    outputs: tuple[str, ...]
    min_priority: Priority | None
    rule_names: frozenset[str] | None
    rule_pattern: re.Pattern[str] | None
    sources: frozenset[str] | None
    tags: frozenset[str] | None
    match: Matcher | None = None
    internal: str = "exclude"
    suppressed: str = "mark"

    @classmethod
    def compile(cls, config: RouteConfig) -> CompiledRoute:
        """Prepare one route from its config."""
        names = None
        pattern = None
        if config.rules is not None:
            names = frozenset(r for r in config.rules if not _WILDCARD.search(r))
            globs = [fnmatch.translate(r) for r in config.rules if _WILDCARD.search(r)]
            pattern = re.compile("|".join(globs)) if globs else None
        return cls(
            name=config.name,
            outputs=tuple(config.outputs),
            min_priority=parse_priority(config.min_priority) if config.min_priority else None,
            rule_names=names,
            rule_pattern=pattern,
            sources=frozenset(config.sources) if config.sources is not None else None,
            tags=frozenset(config.tags) if config.tags is not None else None,
            match=compile_match(config.match) if config.match is not None else None,
            internal=config.internal,
            suppressed=config.suppressed,
        )

    def matches(self, event: Event) -> bool:
        """Tell whether the alert meets every condition of the route."""
        if event.is_internal:
            if self.internal == "exclude":
                return False
        elif self.internal == "only":
            return False
        # An unknown priority passes any minimum: a misspelt priority must not hide an alert.
        if self.min_priority is not None and event.priority is not None and event.priority < self.min_priority:
            return False
        if (
            self.rule_names is not None
            and event.rule not in self.rule_names
            and (self.rule_pattern is None or not self.rule_pattern.fullmatch(event.rule))
        ):
            return False
        if self.sources is not None and event.source not in self.sources:
            return False
        if self.tags is not None and (event.tags is None or self.tags.isdisjoint(event.tags)):
            return False
        return self.match is None or self.match(event)


@dataclass(slots=True)
class Plan:
    """Where one alert goes: the outputs it is sent to, the routes it matched, and the outputs held back."""

    outputs: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    """Output name to the reason it does not get the alert: allow_list, dedup, dedup_update, internal_rate_limit."""


# Route selections kept per distinct (rule, priority, source, tags); cleared when full, which bounds memory
# whatever rules arrive. A node's alerts come from a few dozen rules, so nearly every alert is a hit.
_SELECTION_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Selection:
    """The routes an alert matches, and the plan of an alert without policy annotations."""

    marks: dict[str, bool]
    """Each output of the matching routes, in route order, with whether a route marks suppressed alerts."""
    plain: Plan
    """The plan when nothing is held back; shared, so read only."""


class Router:
    """Selects the outputs for an alert from every route it matches."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = [CompiledRoute.compile(r) for r in routes]
        # Without match expressions a route reads only the rule, priority, source and tags of an alert, so
        # its selection can be kept by those four. Walking the routes cost more than the rest of dispatch.
        self._cacheable = all(route.match is None for route in self.routes)
        self._selections: dict[tuple[object, ...], _Selection] = {}

    def select(self, event: Event) -> tuple[list[str], list[str]]:
        """Return (outputs, names of matching routes); each output appears once, in route order."""
        plain = self._select(event).plain
        return list(plain.outputs), list(plain.routes)

    def plan(self, event: Event, notifying: Collection[str]) -> Plan:
        """Return where the alert goes once the policy annotations are applied per output.

        The plan may be shared between alerts: callers read it and must not change it.
        """
        if not self._cacheable:
            selection = self._select(event)
        else:
            tags = event.tags
            key = (event.rule, event.priority_raw, event.source, tuple(tags) if tags is not None else None)
            cached = self._selections.get(key)
            if cached is None:
                cached = self._select(event)
                if len(self._selections) >= _SELECTION_CACHE_MAX:
                    self._selections.clear()
                self._selections[key] = cached
            selection = cached
        if not event.annotations:
            return selection.plain  # nothing is held back without annotations
        plan = Plan(routes=selection.plain.routes)
        for output, mark in selection.marks.items():
            reason = held_back(event, notifies=output in notifying, mark_suppressed=mark)
            if reason is None:
                plan.outputs.append(output)
            else:
                plan.held[output] = reason
        return plan

    def _select(self, event: Event) -> _Selection:
        routes: list[str] = []
        marks: dict[str, bool] = {}
        for route in self.routes:
            if not route.matches(event):
                continue
            routes.append(route.name)
            for output in route.outputs:
                marks[output] = marks.get(output, False) or route.suppressed == "mark"
        return _Selection(marks, Plan(outputs=list(marks), routes=routes))


def held_back(event: Event, *, notifies: bool, mark_suppressed: bool) -> str | None:
    """Return why the policy annotations keep the alert from one output, or None when it goes there."""
    annotations = event.annotations
    if not annotations:
        return None
    if "suppressed" in annotations and (notifies or not mark_suppressed):
        return "allow_list"
    dedup = annotations.get("dedup")
    if dedup is not None:
        role = dedup.get("role")
        if notifies and role == "repeat":
            return "dedup"
        if not notifies and role == "update":
            # Non-notifying outputs already received every raw alert of the group.
            return "dedup_update"
    internal = annotations.get("internal")
    if notifies and internal is not None and internal.get("rate_limited"):
        return "internal_rate_limit"
    return None
